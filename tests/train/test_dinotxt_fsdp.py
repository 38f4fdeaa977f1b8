"""dino.txt training on 2 gloo ranks: FSDP2 (``train.fsdp=true``) against the unsharded run, exact resume of a
sharded run, a sharded checkpoint resumed unsharded, the gathered export, SHARD_GRAD_OP with
activation checkpointing, a bf16 compute policy.

Tolerance as the SSL trainer's FSDP test (tests/train/test_distributed_training.py): float32 reductions in another
order (FSDP's reduce-scatter against one all-reduce), rel 1e-5 / abs 1e-6 on losses, 1e-5 on weights after AdamW.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from dinov2 import distributed
from dinov2.hub.dinotxt import load_dinotxt
from dinov2.models.weights import read_checkpoint
from dinov2.text import tokenizer as tok
from dinov2.train.dinotxt import do_train
from tests.dist_helpers import run_distributed
from tests.text.helpers import tiny_hub_backbone
from tests.train.test_dinotxt import _config, make_caption_data

pytestmark = [
    pytest.mark.skipif(tok.find_vocab() is None, reason="no CLIP BPE vocabulary (pip install open_clip_torch)"),
    pytest.mark.skipif(
        tuple(int(v) for v in torch.__version__.split(".")[:2]) < (2, 7),
        reason="FSDP2 on CPU/gloo needs torch >= 2.7 (gloo lacks the average reduction FSDP uses before)",
    ),
]

FSDP, NO_EVAL = "train.fsdp=true", "eval.dataset=''"


def _runs(rank: int, world_size: int, root: str) -> dict:
    root = Path(root)
    data, out = root / "data", {}

    def train(name, *opts, stop_after=None):  # checkpoints only where a run stops
        cfg = _config(data, root / name, "checkpoint_period=100", *opts)
        return do_train(cfg, stop_after=stop_after)

    with tiny_hub_backbone():
        out["plain"] = train("plain", NO_EVAL)
        out["fsdp"] = train("fsdp", FSDP)
        out["first"] = train("resumed", FSDP, NO_EVAL, stop_after=1)["losses"]
        if rank == 0:
            shutil.copytree(root / "resumed", root / "cross")
        distributed.barrier()
        out["resumed"] = train("resumed", FSDP, NO_EVAL)
        out["cross"] = train("cross", NO_EVAL)  # the sharded checkpoint resumed unsharded
        out["bf16"] = train("bf16", FSDP, NO_EVAL, "train.param_dtype=bf16")
        out["grad_op"] = train(
            "grad_op", FSDP, NO_EVAL, "train.sharding_strategy=SHARD_GRAD_OP", "train.checkpointing=true"
        )
    return out


@pytest.mark.slow
def test_fsdp_equals_unsharded_and_resumes_exactly(tmp_path):
    make_caption_data(tmp_path / "data")
    ranks = run_distributed(_runs, 2, str(tmp_path))
    for rank, runs in enumerate(ranks):
        plain, fsdp = runs["plain"]["losses"], runs["fsdp"]["losses"]
        assert len(plain) == 4 and fsdp == pytest.approx(plain, rel=1e-5, abs=1e-6), rank
        assert runs["grad_op"]["losses"] == pytest.approx(plain, rel=1e-5, abs=1e-6), rank
        assert runs["first"] + runs["resumed"]["losses"] == fsdp, rank  # stop + resume, sharded: bit for bit
        assert runs["cross"]["losses"] == pytest.approx(plain[2:], rel=1e-5, abs=1e-6), rank
    want = read_checkpoint(ranks[0]["plain"]["export"])["model"]
    for name in ("fsdp", "resumed", "cross", "grad_op"):
        got = read_checkpoint(ranks[0][name]["export"])["model"]
        assert got.keys() == want.keys(), name
        for key, value in want.items():
            assert not got[key].__class__.__name__ == "DTensor", key
            torch.testing.assert_close(got[key], value, rtol=1e-5, atol=1e-5, msg=f"{name}: {key}")
    assert ranks[0]["fsdp"]["zeroshot"] == ranks[1]["fsdp"]["zeroshot"]  # evaluated on the sharded model
    for runs in ranks:  # bf16 compute, fp32 master weights: the first step's loss as fp32's to bf16's precision
        assert runs["bf16"]["losses"][0] == pytest.approx(runs["plain"]["losses"][0], rel=5e-2)
    bf16 = read_checkpoint(ranks[0]["bf16"]["export"])["model"]
    assert all(value.dtype == torch.float32 for value in bf16.values() if value.is_floating_point())
    with tiny_hub_backbone():
        load_dinotxt(ranks[0]["fsdp"]["export"])  # strict: every key, full shapes
