"""Parallelism applied from outside (dinov2/train/parallelize.py), the meta-architecture registry, the precision
policy and the centring strategies: the wrapped step computes what the plain step computes."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from dinov2.loss.teacher_centering import CENTERINGS, SinkhornKnoppCentering, SoftmaxCentering, build_centering
from dinov2.train.meta_archs import META_ARCHITECTURES, build_meta_arch, register_meta_arch
from dinov2.train.parallelize import parallelize
from dinov2.train.precision import PrecisionPolicy
from dinov2.train.ssl_meta_arch import Batch, SSLMetaArch
from tests.train.tiny import collate, random_samples, tiny_cfg

B = 4


def _step(tmp_path, *opts: str, n_steps: int = 1, device: str = "cpu"):
    """Build, parallelize (one process: no sharding) and run ``n_steps`` forward/backward on a fixed batch."""
    cfg = tiny_cfg(tmp_path, "train.centering=sinkhorn_knopp", *opts)
    torch.manual_seed(0)
    model = build_meta_arch(cfg)
    assert not parallelize(model, cfg, device)  # no process group: nothing is sharded
    model.train()
    batch = Batch.from_collated(collate(random_samples(B, 2, seed=1), cfg, mask_probability=0.75), device)
    losses = [model.forward_backward(batch, teacher_temp=0.05) for _ in range(n_steps)]
    grads = [p.grad.clone() for p in model.student.parameters()]
    return model, losses, grads


def test_activation_checkpointing_gives_the_same_losses_and_gradients(tmp_path):
    plain, plain_losses, plain_grads = _step(tmp_path / "a")
    ckpt, ckpt_losses, ckpt_grads = _step(tmp_path / "b", "train.checkpointing=true")
    blocks = ckpt.student.backbone.blocks
    assert all(type(b).__name__ == "CheckpointWrapper" for b in blocks)
    assert all(type(b).__name__ != "CheckpointWrapper" for b in ckpt.teacher.backbone.blocks)  # no backward there
    assert ckpt.student.state_dict().keys() == plain.student.state_dict().keys()  # keys unchanged
    for a, b in zip(plain_losses, ckpt_losses):
        assert a.keys() == b.keys()
        for k in a:
            assert torch.equal(a[k], b[k]), k  # recomputation repeats the same float operations
    assert len(plain_grads) == len(ckpt_grads)
    for a, b in zip(plain_grads, ckpt_grads):
        assert torch.equal(a, b)


@pytest.mark.slow
def test_compile_gives_the_same_losses_and_gradients_within_float_tolerance(tmp_path):
    torch._dynamo.reset()
    _, plain_losses, plain_grads = _step(tmp_path / "a", n_steps=2)
    compiled, losses, grads = _step(tmp_path / "b", "train.compile=true", "train.checkpointing=true", n_steps=2)
    unit = compiled.student.backbone.blocks[0]
    assert "forward" in vars(unit)  # the compiled forward sits on the instance; the module tree is unchanged
    for a, b in zip(plain_losses, losses):
        for k in a:
            torch.testing.assert_close(b[k], a[k], rtol=1e-4, atol=1e-5)
    for a, b in zip(plain_grads, grads):
        torch.testing.assert_close(b, a, rtol=1e-3, atol=1e-5)
    torch._dynamo.reset()


def test_meta_architecture_registry(tmp_path):
    cfg = tiny_cfg(tmp_path)
    assert cfg.MODEL.META_ARCHITECTURE == "SSLMetaArch"
    assert type(build_meta_arch(cfg)) is SSLMetaArch

    class Custom(SSLMetaArch):
        pass

    register_meta_arch("TestCustomMetaArch", Custom)
    try:
        assert type(build_meta_arch(tiny_cfg(tmp_path, "MODEL.META_ARCHITECTURE=TestCustomMetaArch"))) is Custom
        with pytest.raises(ValueError, match="already registered"):
            register_meta_arch("TestCustomMetaArch", SSLMetaArch)
    finally:
        META_ARCHITECTURES.pop("TestCustomMetaArch")
    with pytest.raises(ValueError, match=r"MODEL.META_ARCHITECTURE='Nope'.*SSLMetaArch"):
        build_meta_arch(tiny_cfg(tmp_path, "MODEL.META_ARCHITECTURE=Nope"))


def test_a_different_frozen_teacher_plugs_in_through_build_teacher(tmp_path):
    """The teacher hook: a subclass builds its own teacher (here a differently initialised copy)."""

    class OwnTeacher(SSLMetaArch):
        def build_teacher(self, cfg, teacher_backbone):
            teacher = super().build_teacher(cfg, teacher_backbone)
            for p in teacher.parameters():
                nn.init.normal_(p, std=0.02)
            return teacher

    model = OwnTeacher(tiny_cfg(tmp_path))
    assert all(not p.requires_grad for p in model.teacher.parameters())
    assert not torch.equal(model.teacher.backbone.pos_embed, model.student.backbone.pos_embed)


def test_after_optimizer_step_is_the_teacher_ema(tmp_path):
    model = SSLMetaArch(tiny_cfg(tmp_path))
    with torch.no_grad():
        for p in model.student.parameters():
            p.add_(1.0)
    teacher0 = [p.clone() for p in model.teacher.parameters()]
    model.after_optimizer_step(momentum=0.75)
    for t0, t, s in zip(teacher0, model.teacher.parameters(), model.student.parameters()):
        torch.testing.assert_close(t, 0.75 * t0 + 0.25 * s, rtol=0, atol=1e-6)


def test_centering_is_a_strategy_resolved_once(tmp_path):
    assert list(CENTERINGS) == ["centering", "sinkhorn_knopp"]
    assert isinstance(SSLMetaArch(tiny_cfg(tmp_path)).centering, SoftmaxCentering)
    model = SSLMetaArch(tiny_cfg(tmp_path, "train.centering=sinkhorn_knopp"))
    assert isinstance(model.centering, SinkhornKnoppCentering)
    with pytest.raises(ValueError, match="train.centering must be one of"):
        build_centering("sinkhorn", model.dino_loss, model.ibot_patch_loss)


def test_precision_policy_from_the_config(tmp_path):
    fp32 = PrecisionPolicy.from_config(tiny_cfg(tmp_path), "cpu")
    assert fp32.compute_dtype == torch.float32 and fp32.autocast_dtype is None and fp32.grad_scaler is None
    bf16 = [f"compute_precision.student.backbone.mixed_precision.param_dtype={d}" for d in ("bf16",)]
    policy = PrecisionPolicy.from_config(tiny_cfg(tmp_path, *bf16), "cpu")
    assert policy.autocast_dtype == torch.bfloat16 and policy.grad_scaler is None
    assert PrecisionPolicy.from_config(tiny_cfg(tmp_path, *bf16), "cpu", sharded=True).autocast_dtype is None
    fp16 = ["compute_precision.student.backbone.mixed_precision.param_dtype=fp16", "compute_precision.grad_scaler=true"]
    assert PrecisionPolicy.from_config(tiny_cfg(tmp_path, *fp16), "cpu").grad_scaler is not None
    with policy.autocast("cpu"):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.bfloat16
    # evaluation follows the teacher's param_dtype
    assert PrecisionPolicy.for_eval(tiny_cfg(tmp_path)).autocast_dtype is None


def _two_ranks_with_checkpointing(rank: int, world_size: int, tmp_dir: str):
    from tests.train.test_distributed_training import N_IMAGES, _cfg, _train

    cfg = _cfg(tmp_dir, "FULL_SHARD", world_size)
    cfg.train.checkpointing = True
    half = N_IMAGES // world_size
    return _train(cfg, slice(rank * half, (rank + 1) * half))


@pytest.mark.skipif(
    tuple(int(v) for v in torch.__version__.split(".")[:2]) < (2, 7), reason="FSDP2 on CPU/gloo needs torch >= 2.7"
)
def test_activation_checkpointing_then_sharding_equals_one_plain_process(tmp_path):
    """The ordered wrapping (checkpoint wrapper inside each FSDP block unit) on 2 gloo processes."""
    from tests.dist_helpers import run_distributed
    from tests.train.test_distributed_training import N_IMAGES, _cfg, _train

    results = run_distributed(_two_ranks_with_checkpointing, 2, str(tmp_path))
    reference_losses, reference_state = _train(_cfg(str(tmp_path), "NO_SHARD", 1), slice(0, N_IMAGES))
    for rank in range(2):
        losses, _ = results[rank]
        for step, (got, expected) in enumerate(zip(losses, reference_losses)):
            assert got == pytest.approx(expected, rel=1e-5, abs=1e-6), (rank, step)
    _, state = results[0]  # the full state dict is gathered on rank 0
    assert state.keys() == reference_state.keys()  # no wrapper names in the checkpointed keys
    for name, value in reference_state.items():
        torch.testing.assert_close(state[name], value, rtol=1e-5, atol=1e-5, msg=name)


@pytest.mark.parametrize(
    "device, fused",
    [("cpu", None), ("cpu", True), ("cpu", False), pytest.param("cuda", None, marks=pytest.mark.cuda)],
)
def test_adamw_fused_or_foreach_take_the_same_step(tmp_path, device, fused):
    """``optim.adamw_fused``: the fused kernel (auto: on when every parameter is on a GPU) and the foreach path
    compute the same update from the same gradients."""
    from dinov2.train.train import build_optimizer

    model, _, _ = _step(tmp_path, device=device)  # one backward: every student parameter has a gradient
    groups = model.get_params_groups()

    def one_step(setting):
        cfg = tiny_cfg(tmp_path, f"optim.adamw_fused={'null' if setting is None else setting}")
        clones = {}  # the same parameters and gradients for every setting
        for group in groups:
            for p in group["params"]:
                clones[p] = p.detach().clone().requires_grad_(True)
                clones[p].grad = p.grad.clone()
        optimizer = build_optimizer(cfg, [{**g, "params": [clones[p] for p in g["params"]]} for g in groups])
        expect_fused = setting is True or (setting is None and device == "cuda")
        group = optimizer.param_groups[0]
        assert bool(group.get("fused")) is expect_fused and bool(group.get("foreach")) is not expect_fused
        for g in optimizer.param_groups:
            g["lr"], g["weight_decay"] = 1e-3, 0.04
        optimizer.step()
        return [c.detach().cpu() for c in clones.values()]

    reference = one_step(False)
    for a, b in zip(reference, one_step(fused)):
        torch.testing.assert_close(b, a, rtol=1e-6, atol=1e-7)


@pytest.mark.cuda
def test_compile_on_cuda_matches_the_plain_step(tmp_path):
    """Compiled blocks with activation checkpointing on the GPU: same losses and gradients as the plain step."""
    torch.backends.cuda.matmul.allow_tf32 = False  # compare float32 arithmetic, not TF32
    torch._dynamo.reset()
    _, plain_losses, plain_grads = _step(tmp_path / "a", n_steps=2, device="cuda")
    _, losses, grads = _step(tmp_path / "b", "train.compile=true", "train.checkpointing=true", n_steps=2, device="cuda")
    for a, b in zip(plain_losses, losses):
        for k in a:
            torch.testing.assert_close(b[k], a[k], rtol=1e-4, atol=1e-5)
    for a, b in zip(plain_grads, grads):
        torch.testing.assert_close(b, a, rtol=1e-3, atol=1e-5)
    torch._dynamo.reset()
