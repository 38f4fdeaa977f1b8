"""The training step's parts against an independent computation of SPEC.md §3 (tiny model, CPU, fp32)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from dinov2.train.ssl_meta_arch import Batch, SSLMetaArch
from dinov2.train.train import build_optimizer, train_step
from dinov2.utils.schedules import build_schedulers
from tests.train.tiny import collate, random_samples, tiny_cfg

TEACHER_TEMP = 0.05
B = 4


def _cross_entropy(student_logits: torch.Tensor, teacher_probs: torch.Tensor) -> torch.Tensor:
    """Mean over rows of ``-sum_k q log_softmax(s / 0.1)``."""
    return -(teacher_probs * F.log_softmax(student_logits / 0.1, dim=-1)).sum(-1).mean()


def _sinkhorn(logits: torch.Tensor, temp: float, n_iterations: int = 3) -> torch.Tensor:
    """Sinkhorn-Knopp as written in SPEC.md §2, in float64."""
    q = torch.exp(logits.double() / temp).t()  # [K, n]
    n_prototypes, n_samples = q.shape
    q /= q.sum()
    for _ in range(n_iterations):
        q /= q.sum(dim=1, keepdim=True) * n_prototypes
        q /= q.sum(dim=0, keepdim=True) * n_samples
    return (q * n_samples).t().float()


def _koleo(x: torch.Tensor) -> torch.Tensor:
    """KoLeo with the released PairwiseDistance quirk (eps added to the difference)."""
    x = F.normalize(x.float(), eps=1e-8, dim=-1)
    sims = x @ x.t()
    sims.fill_diagonal_(-1)
    neighbours = x[sims.argmax(dim=1)]
    return -torch.log((x - neighbours + 1e-8).norm(dim=-1) + 1e-8).mean()


def _targets(model: SSLMetaArch, logits: torch.Tensor, centering: str) -> torch.Tensor:
    if centering == "centering":  # the centre starts at 0
        return F.softmax(logits / TEACHER_TEMP, dim=-1)
    return _sinkhorn(logits, TEACHER_TEMP)


def _expected_terms(model: SSLMetaArch, batch: Batch, centering: str, separate_head: bool) -> dict[str, torch.Tensor]:
    teacher, student = model.teacher, model.student
    n_local = batch.n_local_crops
    with torch.no_grad():
        out = teacher.backbone(batch.global_crops, is_training=True)
        cls = out["x_norm_clstoken"]
        swapped = torch.cat((cls[B:], cls[:B]))  # crop 1's teacher output is crop 0's target and vice versa
        masked = out["x_norm_patchtokens"].flatten(0, 1)[batch.mask_indices]
        q_dino = _targets(model, teacher.dino_head(swapped), centering)  # [2B, K]
        q_ibot = _targets(model, (teacher.ibot_head if separate_head else teacher.dino_head)(masked), centering)

    s_global = student.backbone(batch.global_crops, masks=batch.masks, is_training=True)
    s_global_logits = student.dino_head(s_global["x_norm_clstoken"])
    s_masked = s_global["x_norm_patchtokens"].flatten(0, 1)[batch.mask_indices]
    s_masked_logits = (student.ibot_head if separate_head else student.dino_head)(s_masked)
    n_terms = 2 + max(2 * n_local, 1)
    terms = {"dino_global_crops_loss": _cross_entropy(s_global_logits, q_dino) * 2 / n_terms}
    if n_local:
        s_local_logits = student.dino_head(student.backbone(batch.local_crops, is_training=True)["x_norm_clstoken"])
        terms["dino_local_crops_loss"] = (
            sum(
                _cross_entropy(s_chunk, q_chunk)
                for s_chunk in s_local_logits.chunk(n_local)
                for q_chunk in q_dino.chunk(2)
            )
            / n_terms
        )
    koleo = 0.1 * sum(_koleo(c) for c in s_global["x_norm_clstoken"].chunk(2))
    terms["koleo_loss"] = koleo / 2
    per_token = -(q_ibot * F.log_softmax(s_masked_logits / 0.1, dim=-1)).sum(-1)
    ibot = (per_token * batch.masks_weight).sum() / (2 * B)
    terms["ibot_loss"] = ibot / 2
    terms["total"] = terms["dino_global_crops_loss"] + terms.get("dino_local_crops_loss", 0) + koleo + ibot
    return terms


def _model_and_batch(tmp_path, *opts: str, n_local: int = 2, seed: int = 0):
    cfg = tiny_cfg(tmp_path, f"crops.local_crops_number={n_local}", *opts)
    torch.manual_seed(seed)
    model = SSLMetaArch(cfg)
    model.train()
    batch = Batch.from_collated(collate(random_samples(B, n_local, seed=seed + 1), cfg, mask_probability=0.75), "cpu")
    assert batch.mask_indices.numel() > 0
    return model, batch


@pytest.mark.parametrize("separate_head", [False, True])
@pytest.mark.parametrize("centering", ["centering", "sinkhorn_knopp"])
def test_loss_terms_equal_independent_computation(tmp_path, centering, separate_head):
    model, batch = _model_and_batch(tmp_path, f"train.centering={centering}", f"ibot.separate_head={separate_head}")
    assert ("ibot_head" in model.student) == separate_head
    expected = _expected_terms(model, batch, centering, separate_head)
    targets = model.teacher_targets(batch, TEACHER_TEMP)
    outputs = model.student_outputs(batch)
    loss_dict, total = model.loss_terms(outputs, targets, batch)
    assert set(loss_dict) == set(expected) - {"total"}
    for name, value in loss_dict.items():
        torch.testing.assert_close(value, expected[name], rtol=1e-5, atol=1e-6, msg=name)
    torch.testing.assert_close(total, expected["total"], rtol=1e-5, atol=1e-6)


def test_teacher_targets_swap_the_global_crops(tmp_path):
    model, batch = _model_and_batch(tmp_path)
    targets = model.teacher_targets(batch, TEACHER_TEMP)
    with torch.no_grad():
        cls = model.teacher.backbone(batch.global_crops, is_training=True)["x_norm_clstoken"]
        probs = F.softmax(model.teacher.dino_head(cls) / TEACHER_TEMP, dim=-1)  # [2B, K], crop-major
    torch.testing.assert_close(targets.dino[0], probs[B:], rtol=1e-5, atol=1e-7)  # student crop 0 <- teacher crop 1
    torch.testing.assert_close(targets.dino[1], probs[:B], rtol=1e-5, atol=1e-7)


def test_zero_local_crops(tmp_path):
    model, batch = _model_and_batch(tmp_path, n_local=0)
    assert batch.local_crops.shape == (0, 3, 8, 8)
    expected = _expected_terms(model, batch, "centering", separate_head=False)
    loss_dict = model.forward_backward(batch, TEACHER_TEMP)
    assert "dino_local_crops_loss" not in loss_dict
    for name, value in loss_dict.items():
        torch.testing.assert_close(value, expected[name].detach(), rtol=1e-5, atol=1e-6, msg=name)


def test_forward_backward_gradients_reach_only_the_student(tmp_path):
    model, batch = _model_and_batch(tmp_path)
    expected = _expected_terms(model, batch, "centering", separate_head=False)
    expected_grads = torch.autograd.grad(expected["total"], list(model.student.parameters()), allow_unused=True)
    model.forward_backward(batch, TEACHER_TEMP)
    assert all(p.grad is None and not p.requires_grad for p in model.teacher.parameters())
    for (name, p), g in zip(model.student.named_parameters(), expected_grads):
        if g is None:
            assert p.grad is None or not p.grad.any(), name
        else:
            torch.testing.assert_close(p.grad, g, rtol=1e-4, atol=1e-6, msg=name)


def test_teacher_starts_as_the_student_and_stays_in_eval_mode(tmp_path):
    model, _ = _model_and_batch(tmp_path)
    for (name, s), t in zip(model.student.state_dict().items(), model.teacher.state_dict().values()):
        assert torch.equal(s, t), name
    model.train()
    assert model.student.training and not any(m.training for m in model.teacher.modules())


def test_update_teacher_is_the_ema(tmp_path):
    model, _ = _model_and_batch(tmp_path)
    with torch.no_grad():
        for p in model.student.parameters():
            p.add_(torch.randn_like(p))
    before_t = [p.clone() for p in model.teacher.parameters()]
    student = [p.clone() for p in model.student.parameters()]
    model.update_teacher(0.9)
    for t0, s, t1 in zip(before_t, student, model.teacher.parameters()):
        torch.testing.assert_close(t1, 0.9 * t0 + 0.1 * s, rtol=0, atol=1e-6)


def _step(model, batch, cfg, iteration, clip=None):
    if clip is not None:
        cfg.optim.clip_grad = clip
    optimizer = build_optimizer(cfg, model.get_params_groups())
    train_step(cfg, model, optimizer, batch, build_schedulers(cfg), iteration)
    return optimizer


def test_gradients_are_clipped_per_student_submodule(tmp_path):
    model, batch = _model_and_batch(tmp_path)
    model.forward_backward(batch, TEACHER_TEMP)
    norms = {k: torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in m.parameters() if p.grad is not None]))
             for k, m in model.student.items()}  # fmt: skip
    clip = 0.5 * float(min(norms.values()))
    model.zero_grad(set_to_none=True)
    _step(model, batch, model.cfg, iteration=5, clip=clip)
    for key, module in model.student.items():
        norm = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in module.parameters() if p.grad is not None]))
        torch.testing.assert_close(norm, torch.tensor(clip), rtol=1e-4, atol=0, msg=key)  # each clipped alone


def test_last_layer_lr_is_zero_during_the_freeze(tmp_path):
    model, batch = _model_and_batch(tmp_path)
    schedules = build_schedulers(model.cfg)
    frozen_iteration = 2  # inside freeze_last_layer_epochs (1 epoch = 4 iterations), lr already > 0
    assert schedules.last_layer_lr[frozen_iteration] == 0 and schedules.lr[frozen_iteration] > 0
    last_layer = [p.clone() for p in model.student.dino_head.last_layer.parameters()]
    mlp = [p.clone() for p in model.student.dino_head.mlp.parameters()]
    _step(model, batch, model.cfg, iteration=frozen_iteration)
    for before, after in zip(last_layer, model.student.dino_head.last_layer.parameters()):
        assert torch.equal(before, after)
    assert any(not torch.equal(b, a) for b, a in zip(mlp, model.student.dino_head.mlp.parameters()))
    # after the freeze the last layer trains
    _step(model, batch, model.cfg, iteration=5)
    assert any(not torch.equal(b, a) for b, a in zip(last_layer, model.student.dino_head.last_layer.parameters()))


def test_non_finite_loss_names_the_iteration_and_term(tmp_path):
    model, batch = _model_and_batch(tmp_path)
    with torch.no_grad():
        model.student.backbone.cls_token.fill_(float("nan"))
    with pytest.raises(FloatingPointError, match=r"iteration 3: .*dino_global_crops_loss=nan"):
        _step(model, batch, model.cfg, iteration=3)


def test_bf16_autocast_step_on_cpu(tmp_path):
    bf16 = "{sharding_strategy: NO_SHARD, mixed_precision: {param_dtype: bf16, reduce_dtype: fp32, buffer_dtype: fp32}}"
    model32, batch = _model_and_batch(tmp_path)
    model16, _ = _model_and_batch(tmp_path, f"compute_precision.student.backbone={bf16}")
    assert model16.autocast_dtype == torch.bfloat16 and model32.autocast_dtype is None
    losses32 = model32.forward_backward(batch, TEACHER_TEMP)
    losses16 = model16.forward_backward(batch, TEACHER_TEMP)
    for name in losses32:
        assert losses16[name].dtype == torch.float32
        torch.testing.assert_close(losses16[name], losses32[name], rtol=5e-2, atol=5e-2, msg=name)
    assert all(p.dtype == torch.float32 for p in model16.parameters())  # autocast: fp32 master weights


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", ["bf16", "fp16"])
def test_mixed_precision_steps_on_cuda(tmp_path, dtype):
    policy = f"{{sharding_strategy: NO_SHARD, mixed_precision: {{param_dtype: {dtype}, reduce_dtype: fp32, "
    policy += "buffer_dtype: fp32}}"
    model, batch = _model_and_batch(tmp_path, f"compute_precision.student.backbone={policy}",
                                    "compute_precision.grad_scaler=true")  # fmt: skip
    from dinov2.train.precision import make_grad_scaler

    model.prepare_for_distributed_training("cuda")
    model.fp16_scaler = make_grad_scaler(model.cfg, "cuda")
    assert (model.fp16_scaler is not None) == (dtype == "fp16")
    batch = Batch.from_collated(
        {
            "collated_global_crops": batch.global_crops,
            "collated_local_crops": batch.local_crops,
            "collated_masks": batch.masks,
            "mask_indices_list": batch.mask_indices,
            "masks_weight": batch.masks_weight,
            "n_masked_patches": batch.n_masked_patches,
        },
        "cuda",
    )
    before = [p.clone() for p in model.student.parameters()]
    optimizer = build_optimizer(model.cfg, model.get_params_groups())
    # fp16: the scaler starts at 2**16 and skips the steps whose scaled gradients overflow, halving its scale
    # each time, until one fits (the released behaviour); bf16 steps at once.
    for iteration in range(5, 25):
        losses, _ = train_step(model.cfg, model, optimizer, batch, build_schedulers(model.cfg), iteration)
        assert all(torch.isfinite(torch.tensor(v)) for v in losses.values())
        if any(not torch.equal(b, a) for b, a in zip(before, model.student.parameters())):
            break
    assert any(not torch.equal(b, a) for b, a in zip(before, model.student.parameters()))
    if dtype == "bf16":
        assert iteration == 5
    else:
        assert model.fp16_scaler.get_scale() == 2.0 ** (16 - (iteration - 5))  # one halving per skipped step
