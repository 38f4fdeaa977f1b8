"""Two gloo ranks holding half the batch each reproduce the single-process result on the full batch."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from dinov2.loss import DINOLoss, KoLeoLoss, KoLeoLossDistributed, iBOTPatchLoss
from tests.dist_helpers import run_distributed

K = 32
TEACHER_TEMP = 0.07


def _data():
    g = torch.Generator().manual_seed(0)
    return {
        "dino_steps": [torch.randn(8, K, generator=g) for _ in range(3)],  # [2n, K] per step
        "ibot_tokens": torch.randn(12, K, generator=g),  # [M, K]
        "ibot_split": [5, 7],  # masked tokens per rank (unequal)
        "koleo": torch.randn(8, 6, generator=g),  # [global_B, D]: 4 rows per rank
    }


KOLEO_CASES = ((1, None), (2, None), (1, 4))  # (topk, loss_group_size): the global batch, or one group per rank


def _koleo_run(features: torch.Tensor, rank: int, world_size: int) -> dict:
    """Each case's loss on this rank and the gradient of its backward on this rank's rows."""
    local = features.shape[0] // world_size
    out = {}
    for topk, size in KOLEO_CASES:
        x = features[rank * local : (rank + 1) * local].clone().requires_grad_(True)
        loss = KoLeoLossDistributed(topk, size)(x)
        loss.backward()
        out[f"{topk}_{size}"] = {"loss": loss.detach(), "grad": x.grad}
    return out


def _koleo_reference(features: torch.Tensor, world_size: int, topk: int, size: int | None) -> tuple:
    """Per-rank losses and d(sum of them)/d(features), written from the definition: each rank's rows, their
    ``topk`` nearest other rows (inner product of normalised rows) in their group, ``-mean log(dist + eps)``."""
    x = features.clone().requires_grad_(True)
    unit = F.normalize(x, dim=-1)
    total, local = x.shape[0], x.shape[0] // world_size
    size = size or total
    losses = []
    for rank in range(world_size):
        logs = []
        for i in range(rank * local, (rank + 1) * local):
            start = i // size * size
            candidates = [j for j in range(start, start + size) if j != i]
            scores = torch.stack([unit[i] @ unit[j] for j in candidates]).detach()
            for k in scores.topk(topk).indices.tolist():
                distance = torch.linalg.vector_norm(unit[i] - unit[candidates[k]] + 1e-8)
                logs.append(torch.log(distance + 1e-8))
        losses.append(-torch.stack(logs).mean())
    torch.stack(losses).sum().backward()
    return torch.stack(losses).detach(), x.grad


def _centring_run(loss_fn, batches):
    """Three trainer steps: targets with the current centre, then the deferred update; returns targets, centres."""
    targets, centres = [], []
    for batch in batches:
        targets.append(loss_fn.softmax_center_teacher(batch, TEACHER_TEMP))
        loss_fn.update_center(batch)
        centres.append(loss_fn.state_dict()["center"].clone())  # flushes the pending update
    return targets, centres


def _to_numpy(tree):
    """Tensors cross the result queue as shared-memory handles that die with the worker: send numpy copies."""
    if isinstance(tree, dict):
        return {key: _to_numpy(value) for key, value in tree.items()}
    if isinstance(tree, list):
        return [_to_numpy(value) for value in tree]
    return tree.numpy().copy()


def _from_numpy(tree):
    if isinstance(tree, dict):
        return {key: _from_numpy(value) for key, value in tree.items()}
    if isinstance(tree, list):
        return [_from_numpy(value) for value in tree]
    return torch.from_numpy(tree)


def _worker(rank, world_size, data):
    half = data["dino_steps"][0].shape[0] // world_size
    rows = slice(rank * half, (rank + 1) * half)
    dino_targets, dino_centres = _centring_run(DINOLoss(K), [b[rows] for b in data["dino_steps"]])
    deferred = DINOLoss(K)
    deferred.update_center(data["dino_steps"][0][rows])
    deferred.apply_center_update()

    dino_sinkhorn = DINOLoss(K).sinkhorn_knopp_teacher(data["dino_steps"][0][rows], TEACHER_TEMP)

    split = data["ibot_split"]
    start = sum(split[:rank])
    tokens = data["ibot_tokens"][start : start + split[rank]]  # [M_rank, K]
    n_masked = torch.tensor([split[rank]])
    ibot_sinkhorn = iBOTPatchLoss(K).sinkhorn_knopp_teacher(tokens, TEACHER_TEMP, n_masked)

    # iBOT centre: rank 0 has no masked token this step, rank 1 has them all.
    ibot = iBOTPatchLoss(K)
    ibot.update_center(data["ibot_tokens"][: 0 if rank == 0 else None].unsqueeze(0))
    ibot.apply_center_update()
    results = {
        "dino_targets": dino_targets,
        "dino_centres": dino_centres,
        "deferred_centre": deferred.center,
        "dino_sinkhorn": dino_sinkhorn,
        "ibot_sinkhorn": ibot_sinkhorn,
        "n_masked_after": n_masked,
        "ibot_centre": ibot.center,
        "koleo": _koleo_run(data["koleo"], rank, world_size),
    }
    return _to_numpy(results)


def test_two_ranks_match_single_process():
    data = _data()
    ranks = [_from_numpy(r) for r in run_distributed(_worker, 2, data)]

    targets, centres = _centring_run(DINOLoss(K), data["dino_steps"])
    for step in range(3):
        torch.testing.assert_close(torch.cat([r["dino_targets"][step] for r in ranks]), targets[step])
        for r in ranks:  # the deferred all-reduced update leaves the same centre on every rank
            torch.testing.assert_close(r["dino_centres"][step], centres[step])
    assert torch.equal(ranks[0]["deferred_centre"], ranks[1]["deferred_centre"])

    single = DINOLoss(K).sinkhorn_knopp_teacher(data["dino_steps"][0], TEACHER_TEMP)
    torch.testing.assert_close(torch.cat([r["dino_sinkhorn"] for r in ranks]), single)

    single = iBOTPatchLoss(K).sinkhorn_knopp_teacher(data["ibot_tokens"], TEACHER_TEMP, torch.tensor([12]))
    torch.testing.assert_close(torch.cat([r["ibot_sinkhorn"] for r in ranks]), single)
    assert [r["n_masked_after"].item() for r in ranks] == data["ibot_split"]  # caller's tensor not reduced in place

    ibot = iBOTPatchLoss(K)
    ibot.update_center(data["ibot_tokens"].unsqueeze(0))
    ibot.apply_center_update()
    for r in ranks:  # the empty rank contributes nothing (no NaN, no dilution)
        torch.testing.assert_close(r["ibot_centre"], ibot.center)

    # DINOv3's distributed KoLeo: neighbours searched across ranks, gradients sent back to the rows' owners
    for topk, size in KOLEO_CASES:
        losses, grad = _koleo_reference(data["koleo"], 2, topk, size)
        got = [r["koleo"][f"{topk}_{size}"] for r in ranks]
        torch.testing.assert_close(torch.stack([g["loss"] for g in got]), losses)
        torch.testing.assert_close(torch.cat([g["grad"] for g in got]), grad)


def test_distributed_koleo_on_one_process_is_koleo():
    x = torch.randn(6, 5, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(KoLeoLossDistributed()(x), KoLeoLoss()(x), rtol=0, atol=0)
    with pytest.raises(ValueError, match="multiple of the per-process batch"):
        KoLeoLossDistributed(loss_group_size=4)(x)
