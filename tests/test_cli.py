"""Every command line: the console scripts of ``pyproject.toml`` resolve and run, ``--help`` shows the defaults, a
missing required flag is a usage error (exit code 2, the flag named, no traceback), ``--output-dir`` and
``--output_dir`` both work, and trailing ``key=value`` overrides (or ``--opts``) reach the config."""

from __future__ import annotations

import argparse
import enum
import importlib
import importlib.metadata
import inspect
import json
import os
import subprocess
import sys

import pytest
import torch
from omegaconf import OmegaConf

from dinov2 import distributed
from tests.conftest import REPO_ROOT

tomllib = pytest.importorskip("tomllib", reason="reading pyproject.toml needs Python >= 3.11")

SCRIPTS = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["scripts"]
CONFIG = "dinov2/configs/eval/vits14_pretrain.yaml"
SEG_DATA = "SyntheticDense:root=scenes:num_classes=2"


def _resolve(target: str):
    module, _, attribute = target.partition(":")
    return getattr(importlib.import_module(module), attribute)


def _run(script: str, argv: list[str], monkeypatch) -> int:
    """The console script's target called as the installed wrapper calls it: no argument, ``sys.argv`` set."""
    monkeypatch.setattr(sys, "argv", [script, *argv])
    try:
        return _resolve(SCRIPTS[script])()
    except SystemExit as exit_:
        return exit_.code


@pytest.fixture(autouse=True)
def _forget_process_group():
    yield
    distributed.disable()


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """A ViT-Ti/14 backbone (hub layout, 518 px table): fits the eval config only with ``student.arch=vit_tiny``."""
    from dinov2.models import build_model_from_cfg
    from dinov2.utils.config import load_cfg

    torch.manual_seed(0)
    model, _ = build_model_from_cfg(load_cfg(CONFIG, ["student.arch=vit_tiny"]), only_teacher=True)
    path = tmp_path_factory.mktemp("cli_weights") / "vitt14.pth"
    torch.save(model.state_dict(), path)
    return path


def test_console_scripts_are_declared_and_take_no_argument():
    protocols = ("knn", "linear", "log-regression", "segmentation", "depth", "retrieval", "transfer", "video")
    evals = {f"dinov2-eval-{p}" for p in protocols}
    others = {"dinov2-train", "dinov2-train-slurm", "dinov2-dinotxt-slurm", "dinov2-curation", "dinov2-visualize"}
    others |= {"dinov2-plot"}
    expected = evals | others | {"dinov2-export", "dinov2-demo", "dinov2-finetune"}
    assert set(SCRIPTS) == expected
    for script, target in SCRIPTS.items():
        function = _resolve(target)
        required = [p for p in inspect.signature(function).parameters.values() if p.default is inspect.Parameter.empty]
        assert callable(function) and not required, f"{script} -> {target} needs {required}"


def test_installed_entry_points_match_pyproject():
    found = {ep.name: ep.value for ep in importlib.metadata.entry_points(group="console_scripts")
             if ep.name.startswith("dinov2-")}  # fmt: skip
    if not found:
        pytest.skip("the installed dinov2 metadata predates [project.scripts]: reinstall with pip install -e .")
    assert found == SCRIPTS


# (script, sub-command argv before --help)
HELP = [(script, []) for script in sorted(SCRIPTS) if script not in ("dinov2-curation", "dinov2-visualize")]
HELP += [("dinov2-curation", [step]) for step in ("embed", "dedup", "retrieve", "kmeans", "sample", "pictures", "run")]
HELP += [("dinov2-visualize", ["pca"]), ("dinov2-visualize", ["attention"])]


def _shown(value) -> str:
    if isinstance(value, (list, tuple)):
        return " ".join(_shown(v) for v in value)
    return str(value.value) if isinstance(value, enum.Enum) else str(value)


def _parser_of(script: str, sub: list[str]) -> argparse.ArgumentParser | None:
    """The parser behind a script (None for the launcher, whose parser is built inside its main)."""
    if script == "dinov2-train-slurm":
        return None
    module = importlib.import_module(SCRIPTS[script].partition(":")[0])
    parser = module.get_args_parser()
    for name in sub:  # descend into the sub-command
        parser = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[name]
    return parser


@pytest.mark.parametrize("script, sub", HELP, ids=[" ".join([s, *sub]) for s, sub in HELP])
def test_help_exits_0_and_shows_every_default(script, sub, monkeypatch, capsys):
    assert _run(script, [*sub, "--help"], monkeypatch) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert text.startswith("usage: ")
    parser = _parser_of(script, sub)
    actions = parser._actions if parser else []
    for action in actions:
        default = action.default
        if (
            action.nargs == 0
            or default in (None, "", [], [None], argparse.SUPPRESS)
            or "%(default" in (action.help or "")
        ):
            continue
        assert f"(default: {_shown(default)})" in text, f"{script} {sub}: default of {action.dest} not shown"
    if script == "dinov2-eval-knn":  # one spelled out
        assert "Number of NN to use. 20 is usually working the best. (default: 10 20 100 200)" in text


def _missing_required_cases(tmp_path):
    weights = tmp_path / "w.pth"
    weights.write_bytes(b"")  # only its existence is checked before the run
    model = ["--config-file", CONFIG, "--pretrained-weights", str(weights)]
    return [
        ("dinov2-train", ["--eval", "knn"], ["argument --eval", "--eval-only", "dinov2-eval-knn"]),
        ("dinov2-train", ["optim.epochz=1"], ["unknown key 'optim.epochz'", "did you mean 'optim.epochs'"]),
        ("dinov2-train", [], ["train.dataset_path: dataset string 'ImageNet:split=TRAIN' lacks required key(s) root"]),
        ("dinov2-train-slurm", ["--cluster", "local"], ["required: --config-file"]),
        ("dinov2-train-slurm", ["--cluster", "local", "--config-file", "train/demo_cpu", "optim.epochz=1"],
         ["unknown key 'optim.epochz'"]),
        ("dinov2-eval-knn", [], ["required: --config-file, --pretrained-weights"]),
        ("dinov2-eval-knn", model, ["--train-dataset (the default)", "lacks required key(s) root, extra"]),
        ("dinov2-eval-linear", ["--output-dir", "o"], ["required: --config-file, --pretrained-weights"]),
        ("dinov2-eval-linear", [*model, "--train-dataset", "ImageFolder:root=a", "--val-dataset", "ImageFolder:root=b",
                                "--test-datasets", "Nope:root=c"], ["--test-datasets", "unknown dataset 'Nope'"]),
        ("dinov2-eval-log-regression", ["--config-file", CONFIG], ["required: --pretrained-weights"]),
        ("dinov2-eval-log-regression", ["--config-file", CONFIG, "--pretrained-weights", str(tmp_path / "gone.pth")],
         ["--pretrained-weights", "gone.pth' does not exist"]),
        ("dinov2-eval-segmentation", ["--pretrained-weights", str(weights)], ["required: --config-file"]),
        ("dinov2-eval-segmentation", model, ["required: --train-dataset"]),
        ("dinov2-eval-depth", [*model, "--train-dataset", SEG_DATA, "--val-dataset", SEG_DATA, "optim.lrr=1"],
         ["unknown recipe key(s) 'optim.lrr'"]),
        ("dinov2-finetune", [], ["one of --model NAME, --config-file F or --weights W"]),
        ("dinov2-finetune", ["--model", "dinov2_vits14", "--random-init", "--train-dataset", "ImageFolder:root=a"],
         ["required: --val-dataset"]),
        ("dinov2-curation", [], ["required: step"]),
        ("dinov2-curation", ["kmeans", "--embeddings", "x.npy", "--output-dir", "o"], ["required: --n-clusters"]),
        ("dinov2-curation", ["embed", *model, "--dataset", "ImageFolder:root=a"], ["required: --output-dir"]),
        ("dinov2-visualize", ["pca", "a.png", "--model", "dinov2_vits14", "--random-init"], ["required: --output-dir"]),
        ("dinov2-plot", [], ["required: RUN_DIR"]),
        ("dinov2-export", ["onnx", "--model", "dinov2_vits14", "--random-init"], ["required: --output"]),
        ("dinov2-demo", ["--output_dir", str(tmp_path / "demo"), "optim.epochz=1"], ["unknown key 'optim.epochz'"]),
    ]  # fmt: skip


def test_missing_required_flags_and_bad_values_are_usage_errors(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    for script, argv, expected in _missing_required_cases(tmp_path):
        assert _run(script, argv, monkeypatch) == 2, (script, argv)
        err = capsys.readouterr().err
        assert "usage: " in err and "Traceback" not in err, (script, argv, err)
        for part in expected:
            assert part in err, (script, argv, err)
    assert sorted(tmp_path.iterdir()) == [tmp_path / "w.pth"]  # nothing was written before the checks


def test_an_unwritable_output_folder_is_a_usage_error_of_every_command(tmp_path, monkeypatch, capsys):
    """Every command with ``--output-dir``, otherwise valid: a folder that cannot be made is a usage error naming
    it, before any process group, log or model (it was a ``FileNotFoundError`` traceback from ``mkdir``)."""
    monkeypatch.chdir(tmp_path)
    weights = tmp_path / "w.pth"
    weights.write_bytes(b"")  # only its existence is checked before the run
    (tmp_path / "file.txt").write_text("not a folder")
    out = tmp_path / "file.txt" / "out"  # fails for root too, unlike a chmod 0o500 folder
    model = ["--config-file", CONFIG, "--pretrained-weights", str(weights), "--output-dir", str(out)]
    data = ["--train-dataset", "ImageFolder:root=a", "--val-dataset", "ImageFolder:root=b"]
    cases = [
        ("dinov2-train", ["--config-file", "train/demo_cpu", "--output-dir", str(out)]),
        ("dinov2-eval-knn", [*model, *data]),
        ("dinov2-eval-linear", [*model, *data]),
        ("dinov2-eval-log-regression", [*model, *data]),
        ("dinov2-eval-segmentation", [*model, "--train-dataset", SEG_DATA, "--val-dataset", SEG_DATA]),
        ("dinov2-finetune", ["--model", "dinov2_vits14", "--random-init", *data, "--output-dir", str(out)]),
        ("dinov2-curation", ["embed", *model, "--dataset", "ImageFolder:root=a"]),
    ]
    for script, argv in cases:
        assert _run(script, argv, monkeypatch) == 2, (script, argv)
        err = capsys.readouterr().err
        assert f"--output-dir: cannot create the folder {out}" in err and "Traceback" not in err, (script, err)
    from dinov2.train.dinotxt import cli_main as dinotxt_main

    with pytest.raises(SystemExit) as exit_:
        dinotxt_main(["--output-dir", str(out), "data.dataset=CaptionFolder:root=a"])
    assert exit_.value.code == 2 and f"--output-dir: cannot create the folder {out}" in capsys.readouterr().err


def test_eval_launcher_checks_trailing_overrides_before_submission(tmp_path, monkeypatch, capsys):
    from dinov2.run.eval import knn as knn_launcher

    monkeypatch.setenv("DINOV2_CLUSTER", "generic")
    weights = tmp_path / "w.pth"
    weights.write_bytes(b"")
    argv = ["--cluster", "local", "--config-file", CONFIG, "--pretrained-weights", str(weights), "--output-dir",
            str(tmp_path / "out"), "student.archh=vit_tiny", "--ngpus", "1"]  # fmt: skip
    with pytest.raises(SystemExit) as exit_:
        knn_launcher.main(argv)
    assert exit_.value.code == 2 and "unknown key 'student.archh'" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()  # nothing submitted


def test_python_m_and_the_released_script_path_give_usage_errors_without_traceback():
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    knn = subprocess.run([sys.executable, "-m", "dinov2.eval.knn"], capture_output=True, text=True, env=env)
    assert knn.returncode == 2 and "Traceback" not in knn.stderr
    assert knn.stderr.startswith("usage: python -m dinov2.eval.knn") and "--pretrained-weights" in knn.stderr
    train = subprocess.run([sys.executable, str(REPO_ROOT / "dinov2/train/train.py"), "--eval", "linear"],
                           capture_output=True, text=True, env=env)  # fmt: skip
    assert train.returncode == 2 and "Traceback" not in train.stderr and "--eval-only" in train.stderr


def _output_dir_cases():
    model = ["--config-file", "c.yaml", "--pretrained-weights", "w.pth"]
    return {
        "dinov2.train.train": [[]],
        "dinov2.eval.knn.cli": [model],
        "dinov2.eval.linear.cli": [model],
        "dinov2.eval.log_regression.cli": [model],
        "dinov2.eval.segmentation.probe": [model],
        "dinov2.eval.depth.probe": [model],
        "dinov2.curation.cli": [["embed", *model, "--dataset", "d"], ["dedup", "--embeddings", "e"],
                                ["retrieve", "--pool", "p", "--queries", "q"],
                                ["kmeans", "--embeddings", "e", "--n-clusters", "2"], ["run", "--config-file", "c"]],
        "dinov2.visualize.__main__": [["pca", "a.png", "--model", "dinov2_vits14"], ["attention", "a.png",
                                                                                   "--config-file", "c"]],
        "dinov2.demo": [[]],
        "dinov2.eval.finetune.cli": [["--model", "dinov2_vits14"]],
    }  # fmt: skip


@pytest.mark.parametrize("module", sorted(_output_dir_cases()))
def test_output_dir_has_both_spellings(module):
    for argv in _output_dir_cases()[module]:
        for flag in ("--output-dir", "--output_dir"):
            parser = importlib.import_module(module).get_args_parser()
            args = parser.parse_args([*argv, flag, "out/x"])
            assert args.output_dir == "out/x", (module, argv, flag)


def test_trailing_overrides_and_opts_alias_end_in_the_same_place():
    from dinov2.eval.knn.cli import get_args_parser
    from dinov2.eval.segmentation.probe import get_args_parser as segmentation_parser

    model = ["--config-file", "c.yaml", "--pretrained-weights", "w.pth"]
    parse = get_args_parser().parse_intermixed_args
    assert parse([*model, "a.b=1", "--output_dir", "o", "c.d=2"]).opts == ["a.b=1", "c.d=2"]
    assert parse([*model, "--opts", "a.b=1", "--output-dir", "o", "c.d=2"]).opts == ["a.b=1", "c.d=2"]
    assert parse([*model, "--opts", "a.b=1", "--opts", "c.d=2"]).opts == ["a.b=1", "c.d=2"]
    assert parse(model).opts == []
    # dense probes: trailing overrides set the probe recipe, --opts the model config
    args = segmentation_parser().parse_intermixed_args([*model, "train.iterations=2", "--opts", "student.arch=x"])
    assert (args.overrides, args.opts) == (["train.iterations=2"], ["student.arch=x"])


@pytest.mark.parametrize("how", ["trailing", "--opts"])
def test_a_bad_override_key_is_the_config_loaders_error(how, weights, monkeypatch, capsys):
    override = ["--opts", "student.archh=vit_tiny"] if how == "--opts" else ["student.archh=vit_tiny"]
    argv = ["--config-file", CONFIG, "--pretrained-weights", str(weights), *override]
    assert _run("dinov2-eval-knn", argv, monkeypatch) == 2
    err = capsys.readouterr().err
    assert "unknown key 'student.archh'; did you mean 'student.arch'" in err


def test_a_trailing_override_changes_the_evaluated_model(weights, tmp_path, monkeypatch, capsys):
    from dinov2.models.weights import WeightsMismatchError

    data = f"Synthetic:root={tmp_path / 'data'}:num_classes=2:images_per_class=4:val_images_per_class=2:size=32x32"
    argv = ["--config-file", CONFIG, "--pretrained-weights", str(weights), "--train-dataset", f"{data}:split=TRAIN",
            "--val-dataset", f"{data}:split=VAL", "--nb_knn", "3", "--crop-size", "28", "--batch-size", "8",
            "--num-workers", "0", "--no-progress"]  # fmt: skip
    with pytest.raises(WeightsMismatchError, match="embed dim 192, the config builds 384"):  # the config: vit_small
        _run("dinov2-eval-knn", [*argv, "--output-dir", str(tmp_path / "small")], monkeypatch)
    distributed.disable()
    assert _run("dinov2-eval-knn", [*argv, "student.arch=vit_tiny", "--output_dir", str(tmp_path / "tiny")],
                monkeypatch) == 0  # fmt: skip
    assert OmegaConf.load(tmp_path / "tiny" / "config.yaml").student.arch == "vit_tiny"
    results = [json.loads(line) for line in (tmp_path / "tiny" / "results_eval_knn.json").read_text().splitlines()]
    assert [next(iter(r)) for r in results] == ["('full', 3) Top 1", "('full', 3) Top 5"]
