"""SSLMetaArch trained by 2 gloo processes with FSDP2 equals 1 process on the same global batch.

Each rank gets half of every global batch. Two terms are, as in the release, not functions of the global batch and
are set aside here: KoLeo (turned off) searches nearest neighbours within each rank's local batch, and the iBOT
softmax centre averages per-rank token means (ranks with different numbers of masked tokens weigh equally), so the
test uses Sinkhorn-Knopp targets, which are computed over all ranks' samples. Tolerance: float32
reductions in another order: rtol 1e-5 / atol 1e-6 on losses and gradient norms (which catch summed instead of
averaged gradients, a scale AdamW would otherwise hide), and rtol 1e-5 / atol 1e-5 on weights after 3 steps: the key
part of ``qkv.bias`` has a mathematically zero gradient (softmax ignores a constant added to every logit of a row),
so AdamW turns float noise of ~1e-9 into updates of ~1e-6 there.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
from torch.distributed.fsdp import FSDPModule

from dinov2.train.checkpointing import Checkpointer
from dinov2.train.precision import make_grad_scaler
from dinov2.train.ssl_meta_arch import SSLMetaArch
from dinov2.train.train import build_optimizer, train_step
from dinov2.utils.schedules import build_schedulers
from tests.dist_helpers import run_distributed
from tests.train.tiny import batch_for_images, collate, random_samples, tiny_cfg

pytestmark = pytest.mark.skipif(
    tuple(int(v) for v in torch.__version__.split(".")[:2]) < (2, 7),
    reason="FSDP2 on CPU/gloo needs torch >= 2.7 (gloo lacks the average reduction FSDP uses before)",
)

N_STEPS, N_IMAGES, FIRST_ITERATION = 3, 4, 4
STRATEGIES = ("NO_SHARD", "SHARD_GRAD_OP", "FULL_SHARD")


def _cfg(tmp_dir: str, strategy: str, world_size: int):
    # Same global batch, hence the same learning rate after the sqrt_wrt_1024 scaling rule.
    opts = [
        "dino.koleo_loss_weight=0",
        "train.centering=sinkhorn_knopp",
        f"train.batch_size_per_gpu={N_IMAGES // world_size}",
    ]
    for role in ("student", "teacher"):
        for module in ("backbone", "dino_head", "ibot_head"):
            opts.append(f"compute_precision.{role}.{module}.sharding_strategy={strategy}")
    return tiny_cfg(tmp_dir, *opts)


def _train(cfg, images: slice, *, single_process: bool = False, device: str = "cpu") -> tuple[list[dict], dict]:
    torch.manual_seed(0)
    model = SSLMetaArch(cfg)
    model.prepare_for_distributed_training(device, single_process=single_process)
    if single_process:  # wrapped, and computing in the FSDP policy rather than under autocast
        assert isinstance(model.student.backbone, FSDPModule) and model.autocast_dtype is None
    model.fp16_scaler = make_grad_scaler(cfg, device)
    model.train()
    optimizer = build_optimizer(cfg, model.get_params_groups())
    schedules = build_schedulers(cfg)
    losses = []
    for step in range(N_STEPS):
        full = collate(random_samples(N_IMAGES, 2, seed=100 + step), cfg, seed=step, mask_probability=0.75)
        batch = batch_for_images(full, images)
        batch = batch.to(device)
        step_losses, grad_norms = train_step(cfg, model, optimizer, batch, schedules, FIRST_ITERATION + step)
        losses.append({**step_losses, **{f"{k}_grad_norm": v for k, v in grad_norms.items()}})
    state = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    return losses, state


def _two_ranks(rank: int, world_size: int, tmp_dir: str) -> dict:
    half = N_IMAGES // world_size
    images = slice(rank * half, (rank + 1) * half)
    return {strategy: _train(_cfg(tmp_dir, strategy, world_size), images) for strategy in STRATEGIES}


def test_sharded_training_equals_one_process(tmp_path):
    results = run_distributed(_two_ranks, 2, str(tmp_path))
    reference_losses, reference_state = _train(_cfg(str(tmp_path), "NO_SHARD", 1), slice(0, N_IMAGES))
    for strategy in STRATEGIES:
        for rank in range(2):
            losses, _ = results[rank][strategy]
            for step, (got, expected) in enumerate(zip(losses, reference_losses)):
                assert got.keys() == expected.keys()
                assert got == pytest.approx(expected, rel=1e-5, abs=1e-6), (strategy, step)
        _, state = results[0][strategy]
        assert state.keys() == reference_state.keys()
        for name, value in reference_state.items():
            torch.testing.assert_close(state[name], value, rtol=1e-5, atol=1e-5, msg=f"{strategy}: {name}")


def _one_process_sharded(rank: int, world_size: int, tmp_dir: str, policy: str, device: str):
    cfg = _cfg(tmp_dir, "FULL_SHARD", 1)
    cfg.compute_precision.grad_scaler = True
    for role in ("student", "teacher"):
        for module in ("backbone", "dino_head", "ibot_head"):
            cfg.compute_precision[role][module].mixed_precision.param_dtype = policy
    return _train(cfg, slice(0, N_IMAGES), single_process=True, device=device)


def test_one_process_sharded_equals_unsharded(tmp_path):
    """``single_process=True`` wraps with FSDP2 on a one-process group (the release's one-GPU set-up)."""
    [(losses, state)] = run_distributed(_one_process_sharded, 1, str(tmp_path), "fp32", "cpu")
    reference_losses, reference_state = _train(_cfg(str(tmp_path), "NO_SHARD", 1), slice(0, N_IMAGES))
    for step, (got, expected) in enumerate(zip(losses, reference_losses)):
        assert got == pytest.approx(expected, rel=1e-5, abs=1e-6), step
    for name, value in reference_state.items():
        torch.testing.assert_close(state[name], value, rtol=1e-5, atol=1e-5, msg=name)


def _check_mixed_precision_run(tmp_path, policy: str, device: str, backend: str):
    [(losses, state)] = run_distributed(_one_process_sharded, 1, str(tmp_path), policy, device, backend=backend)
    [(reference, _)] = run_distributed(_one_process_sharded, 1, str(tmp_path), "fp32", device, backend=backend)
    # loss terms are finite; a gradient norm is inf on an fp16 step whose scaled gradients overflowed (the scaler
    # skips that step and halves its scale, as released)
    assert all(math.isfinite(v) for step in losses for k, v in step.items() if not k.endswith("_grad_norm"))
    # the FSDP policy computes in low precision but keeps fp32 master weights
    assert all(value.dtype == torch.float32 for value in state.values() if value.is_floating_point())
    for name in ("dino_local_crops_loss", "dino_global_crops_loss", "ibot_loss"):  # first step: same weights
        assert losses[0][name] == pytest.approx(reference[0][name], rel=5e-2, abs=5e-2), name


def test_bf16_fsdp_policy_on_cpu(tmp_path):
    _check_mixed_precision_run(tmp_path, "bf16", "cpu", "gloo")


@pytest.mark.cuda
@pytest.mark.parametrize("policy", ["bf16", "fp16"])  # fp16 runs with the gradient scaler
def test_sharded_mixed_precision_steps_on_cuda(tmp_path, policy):
    _check_mixed_precision_run(tmp_path, policy, "cuda", "nccl")


def _train_two_ranks_then_stop(rank: int, world_size: int, output_dir: str) -> None:
    from tests.train.test_train_loop import StopAfter, _run

    try:
        opts = ("train.batch_size_per_gpu=2", "evaluation.eval_period_iterations=4", *_FULL_SHARD)
        _run(Path(output_dir), *opts, history=StopAfter(4))
    except KeyboardInterrupt:
        pass


_FULL_SHARD = [
    f"compute_precision.{role}.{module}.sharding_strategy=FULL_SHARD"
    for role in ("student", "teacher")
    for module in ("backbone", "dino_head", "ibot_head")
]


def test_checkpoint_saved_by_two_processes_resumes_on_one(tmp_path):
    from tests.train.test_train_loop import _run

    out = tmp_path / "run"
    run_distributed(_train_two_ranks_then_stop, 2, str(out))
    assert sorted(p.name for p in out.glob("model_*")) == ["model_0000003"]

    cfg = tiny_cfg(out)
    model = SSLMetaArch(cfg)
    loaded = Checkpointer(out).load_latest({"model": model})
    assert loaded.iteration == 3 and loaded.world_size == 2 and not loaded.rng_restored
    exported = torch.load(out / "eval" / "training_3" / "teacher_checkpoint.pth", weights_only=True)["teacher"]
    for name, value in model.teacher.state_dict().items():
        assert torch.equal(value, exported[name]), name  # the 2-process teacher, gathered, bit for bit

    history = _run(out, "train.batch_size_per_gpu=4")
    assert [it for it, _ in history] == [4, 5, 6, 7]
    assert all(math.isfinite(v) for _, losses in history for v in losses.values())
