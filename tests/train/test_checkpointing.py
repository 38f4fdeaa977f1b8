"""Checkpointer: exact round trip and resume, keep-last-N, killed writer, corruption, resharding 2 -> 1.

Tolerances: a round trip in one process restores bytes, so weights, optimizer state, RNG draws and
the continued training are compared exactly. Loading a 2-process checkpoint in 1 process restores
the same bytes too; the step after it differs from the 2-process step only by the reduction order
(rtol 1e-5 / atol 2e-6 as in tests/distributed/test_sharding.py).
"""

from __future__ import annotations

import logging
import random
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from torch import nn

from dinov2.distributed.sharding import shard_model
from dinov2.train.checkpointing import Checkpointer, export_teacher
from tests.conftest import REPO_ROOT
from tests.dist_helpers import run_distributed
from tests.distributed import tiny_models as tm


def _setup(seed: int = 0):
    student, teacher = tm.build(seed=seed)
    model = nn.ModuleDict({"student": student, "teacher": teacher})
    model.register_buffer("center", torch.zeros(1, tm.OUT_DIM))  # like the DINO loss centre
    optimizer = tm.make_optimizer(student)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10)
    return model, optimizer, scaler


def _state(model, optimizer, scaler, position: int = 0):
    return {"model": model, "optimizer": optimizer, "scaler": scaler, "sampler_position": position, "cfg": "abc"}


def _train(model, optimizer, batches, rank=0, world=1):
    return tm.train(model["student"], model["teacher"], batches, rank, world, optimizer=optimizer)["losses"]


def _draws():
    return (random.random(), float(np.random.rand()), torch.rand(3).tolist())


def _assert_same_model(a: nn.Module, b: nn.Module):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key


def test_round_trip_restores_everything_and_resumes_exactly(tmp_path):
    model, optimizer, scaler = _setup()
    batches = tm.global_batches(4)
    _train(model, optimizer, batches[:2])
    model.center.fill_(0.5)
    scaler.scale(torch.ones(()))  # initialises the scale lazily
    scaler.update(1234.0)
    ckpt = Checkpointer(tmp_path)
    ckpt.save(2, _state(model, optimizer, scaler, position=77))
    expected_draws = _draws()
    expected_losses = _train(model, optimizer, batches[2:])

    model2, optimizer2, scaler2 = _setup(seed=5)
    torch.manual_seed(99)
    loaded = ckpt.load_latest(_state(model2, optimizer2, scaler2))
    assert (loaded.iteration, loaded.world_size, loaded.rng_restored) == (2, 1, True)
    assert loaded.extra == {"sampler_position": 77, "cfg": "abc"}
    assert scaler2.get_scale() == 1234.0 and torch.equal(model2.center, torch.full((1, tm.OUT_DIM), 0.5))
    assert _draws() == expected_draws
    assert _train(model2, optimizer2, batches[2:]) == expected_losses  # exact resume
    _assert_same_model(model, model2)


def test_keeps_the_last_three(tmp_path):
    model, optimizer, scaler = _setup()
    ckpt = Checkpointer(tmp_path, keep=3)
    for iteration in range(1, 6):
        ckpt.save(iteration, _state(model, optimizer, scaler))
    assert [p.name for p in ckpt.list_checkpoints()] == ["model_0000005", "model_0000004", "model_0000003"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model_0000003", "model_0000004", "model_0000005"]


def test_process_killed_while_writing_leaves_previous_checkpoint(tmp_path):
    script = textwrap.dedent(
        f"""
        import os, sys
        sys.path.insert(0, {str(REPO_ROOT)!r})
        from tests.train.test_checkpointing import _setup, _state
        import dinov2.train.checkpointing as c
        model, optimizer, scaler = _setup()
        ckpt = c.Checkpointer({str(tmp_path)!r})
        ckpt.save(1, _state(model, optimizer, scaler, position=1))
        c.os.rename = lambda *args: os._exit(3)  # die after writing, before the folder is renamed
        ckpt.save(2, _state(model, optimizer, scaler, position=2))
        """
    )
    process = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert process.returncode == 3, process.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt_tmp_0000002", "model_0000001"]

    model, optimizer, scaler = _setup(seed=3)
    ckpt = Checkpointer(tmp_path)
    loaded = ckpt.load_latest(_state(model, optimizer, scaler))
    assert (loaded.iteration, loaded.extra["sampler_position"]) == (1, 1)
    _assert_same_model(model, _setup()[0])
    ckpt.save(2, _state(model, optimizer, scaler))  # the next save replaces the leftover
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model_0000001", "model_0000002"]


@pytest.mark.parametrize("verify", [True, False])
def test_corrupted_latest_is_reported_and_previous_used(tmp_path, caplog, verify):
    model, optimizer, scaler = _setup()
    ckpt = Checkpointer(tmp_path, verify=verify)
    ckpt.save(1, _state(model, optimizer, scaler, position=1))
    saved = {k: v.clone() for k, v in model.state_dict().items()}
    _train(model, optimizer, tm.global_batches(1))
    ckpt.save(2, _state(model, optimizer, scaler, position=2))
    shard = next((tmp_path / "model_0000002").glob("*.distcp"))
    data = shard.read_bytes()
    # verify=True must catch a flipped byte; without checksums a truncated file must still fail to load
    shard.write_bytes(data[:100] + bytes([data[100] ^ 0xFF]) + data[101:] if verify else data[: len(data) // 2])

    fresh, fresh_optimizer, fresh_scaler = _setup(seed=4)
    with caplog.at_level(logging.WARNING, logger="dinov2"):
        loaded = ckpt.load_latest(_state(fresh, fresh_optimizer, fresh_scaler))
    assert loaded.iteration == 1
    warning = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warning) == 1 and str(tmp_path / "model_0000002") in warning[0]
    for key, value in saved.items():
        assert torch.equal(fresh.state_dict()[key], value), key


def test_incomplete_and_unloadable_checkpoints(tmp_path):
    model, optimizer, scaler = _setup()
    ckpt = Checkpointer(tmp_path)
    assert ckpt.load_latest(_state(model, optimizer, scaler)) is None
    ckpt.save(1, _state(model, optimizer, scaler))
    (tmp_path / "model_0000009").mkdir()  # no completion marker: not a checkpoint
    assert ckpt.list_checkpoints() == [tmp_path / "model_0000001"]
    (tmp_path / "model_0000001" / "extra.pt").write_bytes(b"garbage")
    with pytest.raises(RuntimeError, match="(?s)no checkpoint could be loaded.*--no-resume"):
        ckpt.load_latest(_state(model, optimizer, scaler))
    with pytest.raises(TypeError, match="weights_only"):
        ckpt.save(2, {"model": model, "bad": object()})


def test_export_teacher_single_process(tmp_path):
    model, _, _ = _setup()
    path = export_teacher(tmp_path / "eval" / "training_9" / "teacher_checkpoint.pth", model["teacher"])
    exported = torch.load(path, weights_only=True)
    assert list(exported) == ["teacher"]
    _assert_same_model(model["teacher"], _load_into(tm.build(seed=7)[1], exported["teacher"]))


def _load_into(module, state_dict):
    module.load_state_dict(state_dict)
    return module


def _sharded_save_then_resume(rank: int, world: int, directory: str) -> dict:
    """Train 2 steps FULL_SHARD, checkpoint, train 1 more; then a fresh sharded model resumes."""
    batches = tm.global_batches(3)

    def sharded_setup(seed):
        model, _, scaler = _setup(seed)
        shard_model(
            {"student": model["student"], "teacher": model["teacher"]}, tm.precision_cfg("FULL_SHARD"), device="cpu"
        )
        return model, tm.make_optimizer(model["student"]), scaler

    model, optimizer, scaler = sharded_setup(0)
    _train(model, optimizer, batches[:2], rank, world)
    ckpt = Checkpointer(directory)
    ckpt.save(2, _state(model, optimizer, scaler, position=16))
    saved = {"student": tm.full_state(model["student"]), "teacher": tm.full_state(model["teacher"])}
    continued = _train(model, optimizer, batches[2:], rank, world)
    export_teacher(f"{directory}/teacher_checkpoint.pth", model["teacher"])

    model2, optimizer2, scaler2 = sharded_setup(1)
    loaded = ckpt.load_latest(_state(model2, optimizer2, scaler2))
    resumed = _train(model2, optimizer2, batches[2:], rank, world)
    return {
        "saved": saved,
        "continued": continued,
        "resumed": resumed,
        "rng_restored": loaded.rng_restored,
        "final_teacher": tm.full_state(model["teacher"]),
        "final_student": tm.full_state(model["student"]),
    }


@tm.requires_cpu_fsdp
def test_saved_by_two_processes_resumed_by_one(tmp_path):
    results = run_distributed(_sharded_save_then_resume, 2, str(tmp_path))
    rank0 = results[0]
    assert rank0["resumed"] == rank0["continued"] and all(r["rng_restored"] for r in results)  # exact, 2 -> 2

    model, optimizer, scaler = _setup(seed=3)
    loaded = Checkpointer(tmp_path).load_latest(_state(model, optimizer, scaler))
    assert (loaded.iteration, loaded.world_size, loaded.rng_restored) == (2, 2, False)
    for role in ("student", "teacher"):
        for key, value in tm.full_state(model[role]).items():
            np.testing.assert_array_equal(value, rank0["saved"][role][key], err_msg=f"{role}.{key}")
    losses = _train(model, optimizer, tm.global_batches(3)[2:])  # optimizer state came along too
    np.testing.assert_allclose(losses, rank0["continued"], rtol=2e-6)
    for role in ("student", "teacher"):
        for key, value in tm.full_state(model[role]).items():
            np.testing.assert_allclose(
                value, rank0[f"final_{role}"][key], rtol=1e-5, atol=2e-6, err_msg=f"{role}.{key}"
            )
    exported = torch.load(tmp_path / "teacher_checkpoint.pth", weights_only=True)["teacher"]
    for key, value in rank0["final_teacher"].items():
        np.testing.assert_array_equal(exported[key].numpy(), value)
