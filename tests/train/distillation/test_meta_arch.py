"""The distillation step against independent computations (tiny models, CPU, fp32): frozen teacher, targets, loss
terms for both ``ibot_tokens`` modes, unmasked student, exact EMA, and the anchor to the validated SSL step."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from dinov2.models import build_model_from_cfg
from dinov2.train.checkpointing import export_teacher
from dinov2.train.distillation import DistillationMetaArch
from dinov2.train.distillation.teacher_weights import read_teacher_weights
from dinov2.train.meta_archs import build_meta_arch
from dinov2.train.pretrained import load_student_pretrained_weights
from dinov2.train.ssl_meta_arch import Batch, SSLMetaArch
from dinov2.train.train import build_optimizer, train_step
from dinov2.utils.schedules import build_schedulers
from tests.train.distillation.tiny_distill import SK, distill_cfg, teacher_run
from tests.train.test_ssl_meta_arch import _cross_entropy, _koleo, _sinkhorn
from tests.train.tiny import N_TOKENS, collate, random_samples, tiny_cfg

TEACHER_TEMP = 0.05
B = 4


def _batch(cfg, seed: int = 1, n_local: int = 2) -> Batch:
    batch = Batch.from_collated(collate(random_samples(B, n_local, seed=seed), cfg, mask_probability=0.75), "cpu")
    assert 0 < batch.mask_indices.numel() < 2 * B * N_TOKENS
    return batch


def _model(tmp_path, *opts: str, teacher_opts=()) -> tuple[DistillationMetaArch, Batch]:
    teacher_config, teacher_file, _ = teacher_run(tmp_path, *teacher_opts)
    cfg = distill_cfg(tmp_path / "student", teacher_config, teacher_file, *opts)
    torch.manual_seed(0)
    model = build_meta_arch(cfg)
    assert type(model) is DistillationMetaArch
    model.train()
    return model, _batch(cfg)


def _ibot_positions(batch: Batch, tokens: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(flat token indices, per-token weights) of the iBOT term, written out for both modes."""
    if tokens == "all":
        n = batch.masks.numel()
        return torch.arange(n), torch.full((n,), 1.0 / N_TOKENS)
    return batch.mask_indices, batch.masks_weight


def _expected(model: DistillationMetaArch, batch: Batch, tokens: str) -> dict[str, torch.Tensor]:
    """Every term from the definitions: frozen teacher -> heads -> Sinkhorn-Knopp, unmasked student."""
    teacher, student = model.teacher, model.student
    indices, weights = _ibot_positions(batch, tokens)
    ibot_head = teacher.ibot_head if "ibot_head" in teacher else teacher.dino_head
    with torch.no_grad():
        out = teacher.backbone(batch.global_crops, is_training=True)
        cls = out["x_norm_clstoken"]
        q_dino = _sinkhorn(teacher.dino_head(torch.cat((cls[B:], cls[:B]))), TEACHER_TEMP)  # swapped crops
        q_ibot = _sinkhorn(ibot_head(out["x_norm_patchtokens"].flatten(0, 1)[indices]), TEACHER_TEMP)
    s_global = student.backbone(batch.global_crops, is_training=True)  # no masks
    s_local = student.backbone(batch.local_crops, is_training=True)
    s_ibot_head = student.ibot_head if "ibot_head" in student else student.dino_head
    s_patches = s_ibot_head(s_global["x_norm_patchtokens"].flatten(0, 1)[indices])
    n_terms = 2 + 2 * 2
    global_logits = student.dino_head(s_global["x_norm_clstoken"])
    local_logits = student.dino_head(s_local["x_norm_clstoken"])
    terms = {
        "dino_global_crops_loss": _cross_entropy(global_logits, q_dino) * 2 / n_terms,
        "dino_local_crops_loss": sum(_cross_entropy(s, q) for s in local_logits.chunk(2) for q in q_dino.chunk(2))
        / n_terms,
        "koleo_loss": 0.1 * sum(_koleo(c) for c in s_global["x_norm_clstoken"].chunk(2)) / 2,
    }
    per_token = -(q_ibot * F.log_softmax(s_patches / 0.1, dim=-1)).sum(-1)
    terms["ibot_loss"] = (per_token * weights).sum() / (2 * B) / 2
    if tokens == "all":  # the same thing as the mean over every token of every global crop
        torch.testing.assert_close(terms["ibot_loss"], per_token.mean() / 2, rtol=1e-5, atol=1e-7)
    return terms


@pytest.mark.parametrize("tokens", ["masked", "all"])
@pytest.mark.parametrize("teacher_separate_head", [True, False])
def test_terms_equal_independent_computation(tmp_path, tokens, teacher_separate_head):
    head = f"ibot.separate_head={teacher_separate_head}"  # the student's iBOT prototypes must be the teacher's
    model, batch = _model(tmp_path, f"distillation.ibot_tokens={tokens}", head, teacher_opts=[head])
    expected = _expected(model, batch, tokens)
    step_batch = model.ibot_batch(batch)
    targets = model.teacher_targets(step_batch, TEACHER_TEMP)
    loss_dict, total = model.loss_terms(model.student_outputs(step_batch), targets, step_batch)
    assert set(loss_dict) == set(expected)
    for name, value in loss_dict.items():
        torch.testing.assert_close(value, expected[name], rtol=1e-5, atol=1e-6, msg=name)
    full = sum(expected.values()) + expected["koleo_loss"] + expected["ibot_loss"]  # KoLeo and iBOT display / 2
    torch.testing.assert_close(total, full, rtol=1e-5, atol=1e-6)


def test_teacher_targets_equal_independent_computation(tmp_path):
    model, batch = _model(tmp_path, "ibot.separate_head=true", teacher_opts=["ibot.separate_head=true"])
    targets = model.teacher_targets(batch, TEACHER_TEMP)
    with torch.no_grad():
        out = model.teacher.backbone(batch.global_crops, is_training=True)
        logits = model.teacher.dino_head(out["x_norm_clstoken"])  # [2B, K], crop-major
        patches = model.teacher.ibot_head(out["x_norm_patchtokens"].flatten(0, 1)[batch.mask_indices])
    swapped = torch.cat((logits[B:], logits[:B]))
    torch.testing.assert_close(targets.dino.flatten(0, 1), _sinkhorn(swapped, TEACHER_TEMP), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(targets.ibot, _sinkhorn(patches, TEACHER_TEMP), rtol=1e-5, atol=1e-6)
    assert targets.dino.shape == (2, B, 64) and targets.ibot.shape == (batch.mask_indices.numel(), 48)


@pytest.mark.parametrize("mask_student", [False, True])
def test_student_unmasked_and_mask_token_without_gradient(tmp_path, mask_student):
    model, batch = _model(tmp_path, f"distillation.mask_student={mask_student}")
    outputs = model.student_outputs(batch)
    direct = model.student.backbone(batch.global_crops, masks=batch.masks if mask_student else None, is_training=True)
    torch.testing.assert_close(outputs.global_cls, direct["x_norm_clstoken"], rtol=1e-5, atol=1e-6)
    model.forward_backward(batch, TEACHER_TEMP)
    grad = model.student.backbone.mask_token.grad
    if mask_student:
        assert grad is not None and grad.abs().sum() > 0  # the SSL behaviour, for ablations
    else:
        assert grad is None or not grad.any()


def _step(model, cfg, batch, iteration: int, optimizer=None):
    optimizer = optimizer or build_optimizer(cfg, model.get_params_groups())
    train_step(cfg, model, optimizer, batch, build_schedulers(cfg), iteration)
    return optimizer


def test_teacher_is_bit_frozen_over_steps(tmp_path):
    model, batch = _model(tmp_path, "ibot.separate_head=true", teacher_opts=["ibot.separate_head=true"])
    cfg = model.cfg
    optimizer = None
    for iteration in range(5, 8):
        optimizer = _step(model, cfg, _batch(cfg, seed=iteration), iteration, optimizer)
    on_disk = read_teacher_weights(cfg.distillation.checkpoint_path)
    state = model.teacher.state_dict()
    assert state.keys() == on_disk.keys()
    assert all(torch.equal(state[k], on_disk[k]) for k in state)
    assert all(not p.requires_grad and p.grad is None for p in model.teacher.parameters())
    optimized = {id(p) for group in optimizer.param_groups for p in group["params"]}
    assert not optimized & {id(p) for p in [*model.teacher.parameters(), *model.model_ema.parameters()]}
    assert optimized == {id(p) for p in model.student.parameters() if p.requires_grad}
    assert id(model.student.backbone.mask_token) not in optimized  # unmasked: never used, frozen
    model.train()
    frozen = [*model.teacher.modules(), *model.model_ema.modules()]
    assert model.student.training and not any(m.training for m in frozen)


def test_student_ema_is_exact(tmp_path):
    model, batch = _model(tmp_path)
    for (name, s), e in zip(model.student.state_dict().items(), model.model_ema.state_dict().values()):
        assert torch.equal(s, e), name  # starts as the student's copy
    ema_before = [p.clone() for p in model.model_ema.parameters()]
    teacher_before = {k: v.clone() for k, v in model.teacher.state_dict().items()}
    _step(model, model.cfg, batch, iteration=5)
    m = build_schedulers(model.cfg).momentum[5]
    assert 0 < m < 1
    for e0, s1, e1 in zip(ema_before, model.student.parameters(), model.model_ema.parameters()):
        assert torch.equal(e1, e0.mul(m).add_(s1.detach(), alpha=1 - m))  # ema = m * ema + (1 - m) * student
        torch.testing.assert_close(e1, m * e0 + (1 - m) * s1.detach(), rtol=0, atol=1e-6)
    assert any(not torch.equal(e0, e1) for e0, e1 in zip(ema_before, model.model_ema.parameters()))
    assert all(torch.equal(v, teacher_before[k]) for k, v in model.teacher.state_dict().items())


@pytest.mark.parametrize("separate_head", [True, False])
def test_anchor_equals_the_validated_ssl_step(tmp_path, separate_head):
    """A copy of an SSL teacher, the student masked and iBOT on the masked tokens: the distillation step *is*
    the SSL step (losses and student gradients) on the same batch."""
    ssl_cfg = tiny_cfg(tmp_path / "ssl", SK, f"ibot.separate_head={separate_head}")
    torch.manual_seed(0)
    ssl = SSLMetaArch(ssl_cfg)
    with torch.no_grad():
        for p in ssl.teacher.parameters():  # a teacher distinct from the student
            p.add_(0.05 * torch.randn_like(p))
    OmegaConf.save(ssl_cfg, tmp_path / "ssl_config.yaml")
    export = export_teacher(tmp_path / "teacher_checkpoint.pth", ssl.teacher)
    opts = ["distillation.mask_student=true", "distillation.ibot_tokens=masked", f"ibot.separate_head={separate_head}"]
    model = build_meta_arch(distill_cfg(tmp_path / "distill", tmp_path / "ssl_config.yaml", export, *opts))
    model.student.load_state_dict(ssl.student.state_dict())
    ssl.train(), model.train()
    batch = _batch(ssl_cfg)
    expected = ssl.forward_backward(batch, TEACHER_TEMP)
    losses = model.forward_backward(batch, TEACHER_TEMP)
    assert losses.keys() == expected.keys()
    for name in losses:
        torch.testing.assert_close(losses[name], expected[name], rtol=1e-6, atol=0, msg=name)
    for (name, p), q in zip(model.student.named_parameters(), ssl.student.parameters()):
        assert (p.grad is None) == (q.grad is None), name
        if p.grad is not None:
            torch.testing.assert_close(p.grad, q.grad, rtol=1e-6, atol=1e-9, msg=name)


def test_bf16_autocast_is_close_to_fp32(tmp_path):
    bf16 = "{sharding_strategy: NO_SHARD, mixed_precision: {param_dtype: bf16, reduce_dtype: fp32, buffer_dtype: fp32}}"
    model32, batch = _model(tmp_path)
    model16, _ = _model(tmp_path, f"compute_precision.student.backbone={bf16}")
    assert model16.autocast_dtype == torch.bfloat16
    losses32 = model32.forward_backward(batch, TEACHER_TEMP)
    losses16 = model16.forward_backward(batch, TEACHER_TEMP)
    for name in losses32:
        torch.testing.assert_close(losses16[name], losses32[name], rtol=2e-2, atol=2e-2, msg=name)


def test_student_pretrained_weights_initialise_the_student_and_its_ema(tmp_path):
    model, _ = _model(tmp_path)
    torch.manual_seed(5)
    source, _ = build_model_from_cfg(model.cfg, only_teacher=True)
    torch.save(source.state_dict(), tmp_path / "student_init.pth")
    teacher_before = {k: v.clone() for k, v in model.teacher.state_dict().items()}
    load_student_pretrained_weights(model, str(tmp_path / "student_init.pth"))
    for backbone in (model.student.backbone, model.model_ema.backbone):
        assert all(torch.equal(backbone.state_dict()[k], v) for k, v in source.state_dict().items())
    assert all(torch.equal(v, teacher_before[k]) for k, v in model.teacher.state_dict().items())
