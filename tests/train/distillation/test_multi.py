"""Several students at once on 2 gloo processes: student A on rank 0, student B on rank 1, global batch 4 (each
rank loads 2 images). Each student's targets, losses and gradients equal a single-process distillation step of that
student on the 4 images with the same masks; the teacher targets of A and B are the same. Tolerances as in
tests/train/test_distributed_training.py (float32 reductions in another order)."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from torch.distributed.checkpoint import FileSystemReader

from dinov2 import distributed
from dinov2.distributed.subgroups import broadcast_to_subgroups, current_subgroup, new_subgroups, scope
from dinov2.train.distillation import DistillationMetaArch, MultiDistillationMetaArch
from dinov2.train.meta_archs import build_meta_arch
from dinov2.train.train import get_args_parser, main
from tests.dist_helpers import run_distributed
from tests.train.distillation.tiny_distill import distill_opts, teacher_run
from tests.train.tiny import FP32_OPTS, TINY_OPTS, batch_for_images, collate, random_samples, tiny_cfg

pytestmark = pytest.mark.skipif(
    tuple(int(v) for v in torch.__version__.split(".")[:2]) < (2, 7),
    reason="FSDP2 on CPU/gloo needs torch >= 2.7 (gloo lacks the average reduction FSDP uses before)",
)

TEACHER_TEMP, N_IMAGES = 0.05, 4
ARCHS = ("vit_test", "vit_test_t")  # student A, student B
STRATEGIES = ("NO_SHARD", "FULL_SHARD")


def _multi_opts(ranges) -> list[str]:
    entries = [f"{{name: s{i}, config_path: s{i}.yaml, ranks_range: {list(r)}}}" for i, r in enumerate(ranges)]
    students = ", ".join(entries)
    return [
        "MODEL.META_ARCHITECTURE=MultiDistillationMetaArch",
        "multidistillation.enabled=true",
        f"multidistillation.global_batch_size={N_IMAGES}",
        f"multidistillation.students=[{students}]",
    ]


def _step(model, cfg, loaded, multi: bool) -> dict:
    """One forward/backward: the loss terms, the targets and the student's full gradients."""
    model.train()
    if multi:
        _, targets = model.shared_teacher_targets(loaded, TEACHER_TEMP)
    else:
        targets = model.teacher_targets(loaded, TEACHER_TEMP)
    losses = model.forward_backward(loaded, TEACHER_TEMP)
    grads = {}
    for name, p in model.student.named_parameters():
        if p.grad is not None:
            grads[name] = p.grad.full_tensor() if hasattr(p.grad, "full_tensor") else p.grad
    return {"losses": losses, "dino": targets.dino, "ibot": targets.ibot, "grads": grads}


def _full_batch(cfg):
    return collate(random_samples(N_IMAGES, 2, seed=100), cfg, seed=0, mask_probability=0.75)


def _reference(tmp_dir: str, teacher, arch: str, *opts: str) -> dict:
    cfg = tiny_cfg(Path(tmp_dir) / f"ref_{arch}", *distill_opts(*teacher), f"student.arch={arch}", *opts)
    torch.manual_seed(0)
    model = build_meta_arch(cfg)
    assert type(model) is DistillationMetaArch
    return _step(model, cfg, batch_for_images(_full_batch(cfg), slice(0, N_IMAGES)), multi=False)


@contextlib.contextmanager
def _student_on_rank(rank: int, world_size: int, tmp_dir: str, teacher, ranges, folder: str, *opts: str):
    """This rank's student (built in its subgroup's scope, which stays open) and the images this rank loads."""
    subgroup = new_subgroups(ranges)
    cfg = tiny_cfg(
        Path(tmp_dir) / f"{folder}{rank}",
        *distill_opts(*teacher),
        *_multi_opts(ranges),
        f"student.arch={ARCHS[subgroup.index]}",
        f"train.batch_size_per_gpu={N_IMAGES // world_size}",
        *opts,
    )
    with scope(subgroup.group):
        torch.manual_seed(0)
        model = build_meta_arch(cfg)
        model.prepare_for_distributed_training("cpu")
        per_rank = N_IMAGES // world_size
        yield subgroup, model, batch_for_images(_full_batch(cfg), slice(rank * per_rank, (rank + 1) * per_rank))


def _students_on_ranks(rank: int, world_size: int, tmp_dir: str, teacher, ranges, *opts: str) -> dict:
    with _student_on_rank(rank, world_size, tmp_dir, teacher, ranges, "rank", *opts) as (subgroup, model, loaded):
        assert type(model) is MultiDistillationMetaArch and model.subgroup.ranks == subgroup.ranks
        return {"arch": ARCHS[subgroup.index], **_step(model, model.cfg, loaded, multi=True)}


def _compare(got: dict, expected: dict, what: str) -> None:
    assert got["losses"].keys() == expected["losses"].keys()
    for name, value in expected["losses"].items():
        torch.testing.assert_close(got["losses"][name], value, rtol=1e-5, atol=1e-6, msg=f"{what}: {name}")
    assert got["grads"].keys() == expected["grads"].keys()
    for name, value in expected["grads"].items():
        torch.testing.assert_close(got["grads"][name], value, rtol=1e-4, atol=1e-6, msg=f"{what}: {name}")


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    config, export, _ = teacher_run(tmp_path_factory.mktemp("teacher"))
    return str(config), str(export)


def _broadcasts_then_students(rank: int, world_size: int, tmp_dir: str, teacher, ranges) -> dict:
    return {
        "broadcasts": _broadcasts(rank, world_size),
        **_students_on_ranks(rank, world_size, tmp_dir, teacher, ranges),
        "diverged": _one_student_diverges(rank, world_size, tmp_dir, teacher),
    }


@pytest.fixture(scope="module")
def two_students(tmp_path_factory, teacher) -> tuple[str, list[dict]]:
    """Both tests of two students on two ranks, from one start of the processes (they are the slow part)."""
    tmp_dir = str(tmp_path_factory.mktemp("two_students"))
    return tmp_dir, run_distributed(_broadcasts_then_students, 2, tmp_dir, teacher, [[0, 1], [1, 2]], timeout=240)


def test_two_students_equal_single_student_steps(two_students, teacher):
    tmp_path, results = two_students
    _check_broadcasts([r["broadcasts"] for r in results])
    a, b = results
    assert (a["arch"], b["arch"]) == ARCHS
    # the teacher is computed once and shared: both students get the same targets
    torch.testing.assert_close(a["dino"], b["dino"], rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(a["ibot"], b["ibot"], rtol=1e-6, atol=1e-7)
    for got, arch in ((a, ARCHS[0]), (b, ARCHS[1])):
        expected = _reference(tmp_path, teacher, arch)
        torch.testing.assert_close(got["dino"], expected["dino"], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(got["ibot"], expected["ibot"], rtol=1e-5, atol=1e-6)
        _compare(got, expected, arch)


def _sharding(strategy: str) -> list[str]:
    return [
        f"compute_precision.{role}.{module}.sharding_strategy={strategy}"
        for role in ("student", "teacher")
        for module in ("backbone", "dino_head", "ibot_head")
    ]


def _per_strategy(rank: int, world_size: int, *args) -> dict:
    return {strategy: _students_on_ranks(rank, world_size, *args, *_sharding(strategy)) for strategy in STRATEGIES}


def test_one_student_over_both_ranks_equals_one_process(tmp_path, teacher):
    """One subgroup of 2: each rank trains on half of the global batch; student, EMA and teacher sharded over both
    (KoLeo, which is per rank, is off here as in the SSL distributed test)."""
    results = run_distributed(_per_strategy, 2, str(tmp_path), teacher, [[0, 2]], "dino.koleo_loss_weight=0")
    expected = _reference(str(tmp_path), teacher, ARCHS[0], "dino.koleo_loss_weight=0")
    for strategy in STRATEGIES:
        per_rank = [result[strategy] for result in results]
        mean = {k: (per_rank[0]["losses"][k] + per_rank[1]["losses"][k]) / 2 for k in expected["losses"]}
        for rank, got in enumerate(per_rank):  # the trainer logs the mean over the subgroup; gradients are averaged
            _compare({**got, "losses": mean}, expected, f"{strategy}, rank {rank}")


def _broadcasts(rank: int, world_size: int) -> dict:
    tensor = torch.arange(3.0).view(1, 3) + 10 * rank  # [1, 3] per rank: rows 0..2 on rank 0, 10..12 on rank 1
    out = {}
    for name, ranges in (("one subgroup", [[0, 2]]), ("two subgroups", [[0, 1], [1, 2]])):
        subgroup = new_subgroups(ranges)
        with scope(subgroup.group):  # the dinov2.distributed helpers work within the subgroup
            assert current_subgroup().ranks == tuple(range(*ranges[subgroup.index]))
            value = torch.tensor([float(rank)])
            distributed.all_reduce(value)
            out[f"{name}: scoped"] = (distributed.get_global_size(), distributed.get_global_rank(), float(value))
        assert distributed.get_global_size() == 2 and distributed.get_global_rank() == rank  # outside: all
        out[name] = broadcast_to_subgroups(tensor, dim=1, total=6, subgroup=subgroup)
    return out


def _check_broadcasts(results: list[dict]) -> None:
    everything = torch.tensor([[0.0, 1, 2, 10, 11, 12]])
    assert torch.equal(results[0]["one subgroup"], everything[:, :3])  # rank r keeps chunk r: the identity
    assert torch.equal(results[1]["one subgroup"], everything[:, 3:])
    assert all(torch.equal(r["two subgroups"], everything) for r in results)  # each student sees it all
    assert [r["one subgroup: scoped"] for r in results] == [(2, 0, 1.0), (2, 1, 1.0)]  # 0 + 1 over both
    assert [r["two subgroups: scoped"] for r in results] == [(1, 0, 0.0), (1, 0, 1.0)]  # each rank alone


def _train_two_students(rank: int, world_size: int, folder: str, teacher) -> None:
    folder = Path(folder)
    dataset = f"Synthetic:root={folder}/data:num_classes=3:images_per_class=6:size=40x32"
    argv = ["--multi-distillation", "--config-file", str(folder / "base.yaml"), "--output-dir", str(folder / "out")]
    main(get_args_parser().parse_args([*argv, f"train.dataset_path={dataset}"]))


@pytest.mark.slow  # two processes through the whole trainer: ~20 s
def test_trainer_writes_one_folder_per_student(tmp_path, teacher, monkeypatch):
    """``train.py --multi-distillation`` on 2 processes: per-student configs, checkpoints (no teacher) and exports."""
    base = OmegaConf.from_dotlist(
        [*TINY_OPTS, *FP32_OPTS, *distill_opts(*teacher), *_multi_opts([[0, 1], [1, 2]])]
        + ["optim.epochs=1", "checkpointing.period=4", "evaluation.eval_period_iterations=4"]
    )
    del base.student.arch  # set by each student's file (the base file would win)
    OmegaConf.save(base, tmp_path / "base.yaml")
    for i, arch in enumerate(ARCHS):
        OmegaConf.save(OmegaConf.create({"student": {"arch": arch}}), tmp_path / f"s{i}.yaml")
    monkeypatch.chdir(tmp_path)  # the students' config_path values are relative to the working directory
    run_distributed(_train_two_students, 2, str(tmp_path), teacher, timeout=300)
    for i, arch in enumerate(ARCHS):
        out = tmp_path / "out" / f"s{i}"
        cfg = OmegaConf.load(out / "config.yaml")
        assert cfg.student.arch == arch and cfg.train.output_dir == str(out) and cfg.train.batch_size_per_gpu == 2
        assert (out / "training_metrics.json").is_file() and (out / "model_0000003").is_dir()
        metrics = [json.loads(line) for line in (out / "training_metrics.json").read_text().splitlines()]
        assert {m["current_batch_size"] for m in metrics} == {4}  # its share of the global batch, not the 2 loaded
        keys = FileSystemReader(str(out / "model_0000003")).read_metadata().state_dict_metadata
        assert not [k for k in keys if k.startswith("model.teacher.")] and "model.model_ema.backbone.cls_token" in keys
        export = torch.load(out / "eval" / "training_3" / "teacher_checkpoint.pth", weights_only=True)["teacher"]
        assert export["backbone.cls_token"].shape[-1] == (32 if arch == "vit_test" else 48)


def _one_student_diverges(rank: int, world_size: int, tmp_dir: str, teacher) -> str:
    """Student s1's weights hold a NaN: its loss is not finite at (resumed) iteration 7; s0's is finite."""
    with _student_on_rank(rank, world_size, tmp_dir, teacher, [[0, 1], [1, 2]], "diverged") as (
        subgroup,
        model,
        loaded,
    ):
        model.progress.steps = 7
        if subgroup.index == 1:
            with torch.no_grad():
                model.student.backbone.cls_token.fill_(float("nan"))
        with pytest.raises(FloatingPointError) as error:
            model.forward_backward(loaded, TEACHER_TEMP)
        return str(error.value)


def test_a_non_finite_loss_in_one_student_stops_every_student(two_students):
    """Both students raise at once (no collective timeout), naming the diverged student and the iteration."""
    messages = [result["diverged"] for result in two_students[1]]
    assert messages[0] == messages[1]
    assert "non-finite loss at iteration 7" in messages[0] and "student 's1'" in messages[0]
    assert "student 's0'" not in messages[0] and "checkpoints" in messages[0]
