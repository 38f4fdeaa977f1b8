"""Seeded RoPE training augmentations, and what 2 gloo ranks agree on (crop resolution) or not (RoPE draws)."""

from __future__ import annotations

import itertools

import pytest
import torch

from dinov2.train.meta_archs import build_meta_arch
from dinov2.train.rope_seeding import seed_rope_augmentations
from tests.dist_helpers import run_distributed
from tests.train.gram_tiny import HIGH_RES, dataset_opt, v3_cfg


def _tables(model, iteration: int | None, rank: int = 0) -> list[torch.Tensor]:
    """The student's RoPE sin tables of two consecutive calls (two blocks), after seeding for ``iteration``."""
    rope = model.student.backbone.rope_embed
    if iteration is not None:
        seed_rope_augmentations(model.student, 0, rank, iteration)
    return [rope(H=3, W=4)[0] for _ in range(2)]


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return build_meta_arch(v3_cfg(tmp_path_factory.mktemp("rope")))


def test_rope_draws_are_seeded_by_rank_and_step(model):
    model.train()
    first = _tables(model, 5)
    assert all(torch.equal(a, b) for a, b in zip(_tables(model, 5), first))  # same seed, rank and step
    assert not torch.equal(first[0], first[1])  # each block draws its own augmentation
    assert not torch.equal(_tables(model, 6)[0], first[0])  # another step
    assert not torch.equal(_tables(model, 5, rank=1)[0], first[0])  # another rank


def test_no_rope_augmentation_in_eval_mode(model):
    model.eval()
    plain = model.student.backbone.rope_embed
    reference = _tables(model, None)
    for iteration in (0, 7):
        assert all(torch.equal(a, reference[0]) for a in _tables(model, iteration))
    assert not model.teacher.backbone.rope_embed.training  # the teacher never draws
    model.train()
    assert plain.training and not model.teacher.backbone.rope_embed.training


def _rank_view(rank: int, world_size: int, output_dir: str) -> dict:
    """Per iteration: this rank's global crop size and first pixel; its student RoPE table after begin_iteration."""
    from pathlib import Path

    from dinov2 import distributed
    from dinov2.train.train import build_data_loader

    distributed.enable(overwrite=True)
    root = Path(output_dir)
    cfg = v3_cfg(root / "run", f"train.dataset_path={dataset_opt(root)}", extra=HIGH_RES)
    batches = list(itertools.islice(build_data_loader(cfg, 0), 6))
    model = build_meta_arch(cfg).train()
    model.begin_iteration(3)
    return {
        "sizes": [b["collated_global_crops"].shape[-1] for b in batches],
        "pixels": [b["collated_global_crops"][0, 0, 0, 0].item() for b in batches],
        "rope": model.student.backbone.rope_embed(H=2, W=2)[0],
    }


@pytest.mark.slow
def test_two_ranks_share_the_resolution_but_not_the_rope_draws(tmp_path):
    from dinov2.data.loaders import make_dataset

    make_dataset(dataset_str=dataset_opt(tmp_path))  # the images are generated once here, read by both ranks
    views = run_distributed(_rank_view, 2, str(tmp_path))
    assert views[0]["sizes"] == views[1]["sizes"] and set(views[0]["sizes"]) == {16, 24}
    assert views[0]["pixels"] != views[1]["pixels"]  # each rank its own shard of the images
    assert not torch.equal(views[0]["rope"], views[1]["rope"])
