"""Gram anchoring: the refresh schedule, the loss weight schedule, the teacher resize, a step's gradients, resume."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from dinov2.train.gram import GramSchedule, resize_patch_tokens
from dinov2.train.meta_archs import build_meta_arch
from dinov2.train.ssl_meta_arch import Batch
from dinov2.utils.schedules import schedule_from_spec
from tests.conftest import preserved_logging
from tests.train.gram_tiny import HIGH_RES, checkpoint_tensors, high_res_cfg, train, v3_cfg
from tests.train.test_train_loop import StopAfter

REPO_ROOT = Path(__file__).resolve().parents[2]
STAGE2 = GramSchedule(
    it_load_ema_teacher=-1, rep_update=True, update_frequency=10_000, it_first_update=1_010_000, max_updates=3
)


def _refreshes(schedule: GramSchedule, stop: int, step: int = 1) -> list[int]:
    return [j for j in range(0, stop, step) if schedule.refreshes_at(j)]


def test_stage2_schedule_refreshes_three_times_after_1m():
    # Every candidate is a multiple of the frequency: scanning those covers all 1,040,000 iterations.
    assert _refreshes(STAGE2, 1_040_001, step=10_000) == [1_010_000, 1_020_000, 1_030_000]  # after 1,009,999 ...
    assert [STAGE2.updates_before(j) for j in (1_010_000, 1_015_000, 1_030_001, 2_000_000)] == [0, 1, 3, 3]
    no_refresh = GramSchedule(rep_update=False, update_frequency=10_000, it_first_update=0)
    assert _refreshes(no_refresh, 100_001, step=10_000) == [] and no_refresh.updates_before(100_000) == 0


@pytest.mark.parametrize("first, frequency, max_updates", [(0, 3, None), (5, 3, 4), (7, 1, 2), (1, 4, 0)])
def test_updates_before_counts_the_refreshes_of_every_earlier_iteration(first, frequency, max_updates):
    schedule = GramSchedule(update_frequency=frequency, it_first_update=first, max_updates=max_updates)
    done = 0
    for j in range(60):
        assert schedule.updates_before(j) == done, j
        done += schedule.refreshes_at(j)
    assert max_updates is None or done == max_updates
    assert not schedule.refreshes_at(0)  # the release refreshes after a step, never before the first one


def test_loss_weight_schedule_of_the_gram_anchor_config():
    spec = {"start": 0, "peak": 0, "end": 2.0, "warmup_epochs": 1000, "cosine_epochs": 1}
    schedule = schedule_from_spec(spec, 1000, 1_200_000)
    value = [schedule[t] for t in (0, 999_999, 1_000_000, 1_000_500, 1_000_999)]
    assert value[:3] == [0.0, 0.0, 0.0]
    # The release's half cosine is cos(linspace(0, pi, n)): it reaches the end value at the cosine's last step.
    assert value[3] == pytest.approx(2.0 - (math.cos(math.pi * 500 / 999) + 1)) and value[4] == 2.0
    assert schedule[1_001_000] == 2.0
    ramp = {"start": 0, "peak": 0, "end": 1.25e-5, "warmup_epochs": 0, "cosine_epochs": 10}  # high-res lr
    ramp_schedule = schedule_from_spec(ramp, 1000, 30_000)
    assert ramp_schedule[0] == 0.0 and ramp_schedule[10_000] == 1.25e-5


@pytest.mark.parametrize("side, grid", [(12, 8), (18, 12), (8, 8)])
def test_teacher_patch_map_resized_to_the_student_grid(side, grid):
    tokens = torch.randn(3, side * side, 5, generator=torch.Generator().manual_seed(side))
    out = resize_patch_tokens(tokens, (grid, grid), "bicubic", False)
    maps = tokens.reshape(3, side, side, 5).permute(0, 3, 1, 2)
    expected = F.interpolate(maps, size=(grid, grid), mode="bicubic", align_corners=False)
    torch.testing.assert_close(out, expected.permute(0, 2, 3, 1).reshape(3, grid * grid, 5), rtol=0, atol=0)
    with pytest.raises(ValueError, match="not a square grid"):
        resize_patch_tokens(torch.randn(1, 12, 5), (2, 2), "bicubic", False)


@pytest.mark.parametrize(
    "gram, message",
    [
        ({"tokens_used": "masked", "img_level": True}, "gram.img_level=false"),
        ({"ema_teacher": True, "rep_update": True}, "gram.rep_update"),
        ({"ckpt": None, "it_load_ema_teacher": -1}, "gram.ckpt"),
    ],
)
def test_inconsistent_gram_keys_are_refused(tmp_path, gram, message):
    extra = {
        "crops": {"gram_teacher_crops_size": None if gram.get("ema_teacher") else 24},
        "gram": {"use_loss": True, "it_load_ema_teacher": 0, **gram},
    }
    with pytest.raises(ValueError, match=message):
        build_meta_arch(v3_cfg(tmp_path, extra=extra))


def _gram_batch(n_images: int = 3, size: int = 16, gram_size: int = 24) -> Batch:
    g = torch.Generator().manual_seed(0)
    masks = torch.rand(2 * n_images, (size // 4) ** 2, generator=g) < 0.3
    masks[0] = False  # one unmasked image, as the collate makes
    indices = masks.flatten().nonzero().flatten()
    weights = (1.0 / masks.sum(-1, keepdim=True).clamp(min=1).float()).expand_as(masks)[masks]
    return Batch(
        global_crops=torch.randn(2 * n_images, 3, size, size, generator=g),
        local_crops=torch.randn(2 * n_images, 3, 8, 8, generator=g),
        masks=masks,
        mask_indices=indices,
        masks_weight=weights,
        n_masked_patches=torch.tensor([indices.numel()]),
        gram_teacher_crops=torch.randn(2 * n_images, 3, gram_size, gram_size, generator=g),
    )


def _student_grads(model) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in model.student.backbone.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("img_level", [True, False])
def test_gram_step_gradients_equal_an_independent_computation(tmp_path, img_level):
    extra = {
        "crops": {"gram_teacher_crops_size": 24},
        "gram": {"use_loss": True, "it_load_ema_teacher": 0, "img_level": img_level},
    }
    # Sinkhorn-Knopp targets are stateless (softmax centring would move its centre between the passes); float64
    # makes the other terms' gradients cancel exactly when the Gram term's share is taken out.
    opts = ["student.drop_path_rate=0.0", "train.centering=sinkhorn_knopp"]
    torch.manual_seed(0)
    model = build_meta_arch(v3_cfg(tmp_path, *opts, extra=extra)).double().train()
    with torch.no_grad():  # a Gram teacher other than the student
        for p in model.gram_teacher.parameters():
            p.add_(0.05 * torch.randn_like(p))
    batch = _gram_batch()
    for field in ("global_crops", "local_crops", "gram_teacher_crops"):
        setattr(batch, field, getattr(batch, field).double())

    def step(weight: float) -> tuple[dict, dict]:
        model.zero_grad(set_to_none=True)
        model.begin_iteration(5)  # the same RoPE draws in every pass
        model.gram.weight = weight
        return model.forward_backward(batch, teacher_temp=0.05), _student_grads(model)

    losses, with_gram = step(2.0)
    _, without_gram = step(0.0)

    # Independently: the student's masked global crops and the Gram teacher's resized patch map, Gram by hand.
    model.zero_grad(set_to_none=True)
    model.begin_iteration(5)
    student = model.student.backbone(batch.global_crops, masks=batch.masks, is_training=True)["x_norm_patchtokens"]
    with torch.no_grad():
        teacher = model.gram_teacher.backbone(batch.gram_teacher_crops, is_training=True)["x_norm_patchtokens"]
        maps = teacher.reshape(6, 6, 6, -1).permute(0, 3, 1, 2)
        teacher = F.interpolate(maps, size=(4, 4), mode="bicubic", align_corners=False).flatten(2).transpose(1, 2)
    s, t = F.normalize(student.float(), dim=-1), F.normalize(teacher.float(), dim=-1)  # GramLoss works in fp32
    if not img_level:
        s, t = s.flatten(0, 1), t.flatten(0, 1)
    gram_loss = ((s @ s.transpose(-1, -2) - t @ t.transpose(-1, -2)) ** 2).mean()
    (2.0 * gram_loss).backward()
    by_hand = _student_grads(model)

    assert losses["gram_loss"].item() == pytest.approx(gram_loss.item(), rel=1e-6)
    assert set(by_hand) <= set(with_gram) and len(by_hand) > 10
    for name, grad in by_hand.items():
        torch.testing.assert_close(with_gram[name] - without_gram[name], grad, rtol=1e-4, atol=1e-7)  # fp32 Gram


def test_gram_teacher_loaded_then_refreshed_on_schedule(tmp_path):
    model = build_meta_arch(v3_cfg(tmp_path, extra=HIGH_RES))  # load at 2, refreshes at 4 and 6
    ema, gram = model.teacher.backbone, model.gram_teacher.backbone

    def shift_ema(value: float) -> None:
        with torch.no_grad():
            for p in ema.parameters():
                p.fill_(value)

    seen = []
    for iteration in range(9):
        shift_ema(float(iteration))
        model.begin_iteration(iteration)
        seen.append(next(gram.parameters()).flatten()[0].item())
    # 0, 1: the initial copy; 2: loaded; 3: kept; 4, 6: refreshed; 8: max_updates reached
    initial = seen[0]
    assert seen == [initial, initial, 2.0, 2.0, 4.0, 4.0, 6.0, 6.0, 6.0]
    assert not any(p.requires_grad for p in gram.parameters()) and "gram_teacher" in model.teacher_side


def test_gram_teacher_from_a_teacher_export(tmp_path):
    path = tmp_path / "teacher_checkpoint.pth"
    gram = {**HIGH_RES["gram"], "it_load_ema_teacher": -1, "ckpt": str(path)}
    cfg = v3_cfg(tmp_path, extra={**HIGH_RES, "gram": gram})
    source = build_meta_arch(cfg)
    with torch.no_grad():
        for p in source.teacher.parameters():
            p.mul_(-1)
    torch.save({"teacher": source.teacher.state_dict()}, path)
    from dinov2.train.gram import load_gram_teacher_weights

    model = build_meta_arch(cfg)
    load_gram_teacher_weights(model, str(path))
    for key, value in source.teacher.backbone.state_dict().items():
        assert torch.equal(model.gram_teacher.backbone.state_dict()[key], value), key


@pytest.fixture(scope="module")
def high_res_run(tmp_path_factory):
    """An uninterrupted Gram-anchored two-resolution run of 8 iterations."""
    root = tmp_path_factory.mktemp("gram")
    cfg = high_res_cfg(root / "straight", root)
    with preserved_logging():
        history = train(cfg)
    return root, cfg, history


def test_resumed_gram_high_res_run_is_exact(high_res_run):
    root, cfg, history = high_res_run
    assert {"gram_loss"} <= set(history[0][1]) and all(math.isfinite(v) for _, h in history for v in h.values())
    resumed_cfg = high_res_cfg(root / "resumed", root)
    with preserved_logging():
        with pytest.raises(KeyboardInterrupt):
            train(resumed_cfg, history=StopAfter(6))  # crash after iteration 5 (checkpoint of iteration 3 kept)
        rest = train(resumed_cfg)
    assert [i for i, _ in rest] == [4, 5, 6, 7]
    assert [h for _, h in rest] == [h for _, h in history[4:]]  # losses bit-identical
    straight = checkpoint_tensors(cfg, root / "straight", 7)
    resumed = checkpoint_tensors(cfg, root / "resumed", 7)
    assert any(k.startswith("gram_teacher.") for k in straight)
    for key, value in straight.items():
        assert torch.equal(resumed[key], value), key


@pytest.mark.slow
def test_sigkilled_gram_high_res_run_restarts_to_the_same_teacher(high_res_run):
    root, cfg, _ = high_res_run
    out = root / "killed"
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "tests.train.gram_kill_entry", str(root), str(out)], env=env)
    try:
        deadline = time.time() + 120
        while not (out / "model_0000003").is_dir():
            assert proc.poll() is None and time.time() < deadline, "the run ended before its first checkpoint"
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)  # mid-run: iterations 4-7 each sleep 1 s after the checkpoint
        assert proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        proc.kill()
    assert not (out / "model_0000007").exists()
    with preserved_logging():
        rest = train(high_res_cfg(out, root))
    assert rest[0][0] == 4
    straight, restarted = checkpoint_tensors(cfg, root / "straight", 7), checkpoint_tensors(cfg, out, 7)
    for key, value in straight.items():
        assert torch.equal(restarted[key], value), key


@pytest.mark.parametrize("tokens_used", ["masked", "unmasked"])
def test_masked_or_unmasked_tokens_and_stats(tmp_path, tokens_used):
    extra = {"crops": {"gram_teacher_crops_size": 24}}
    gram = {"use_loss": True, "it_load_ema_teacher": 0, "tokens_used": tokens_used, "compute_stats": True}
    model = build_meta_arch(v3_cfg(tmp_path, extra={**extra, "gram": gram}))
    batch = _gram_batch()
    g = torch.Generator().manual_seed(1)
    student, teacher = torch.randn(6, 16, 8, generator=g), torch.randn(6, 16, 8, generator=g)
    terms = model.gram.loss_terms(student, teacher, batch)

    def batch_level(rows: torch.Tensor) -> torch.Tensor:
        s, t = F.normalize(student.flatten(0, 1)[rows], dim=-1), F.normalize(teacher.flatten(0, 1)[rows], dim=-1)
        return ((s @ s.T - t @ t.T) ** 2).mean()

    masked = batch.masks.flatten()
    expected = batch_level(masked if tokens_used == "masked" else ~masked)
    torch.testing.assert_close(terms["gram_loss"], expected)
    torch.testing.assert_close(terms["stats_gram_loss_masked"], batch_level(masked))
    torch.testing.assert_close(terms["stats_gram_loss_unmasked"], batch_level(~masked))
