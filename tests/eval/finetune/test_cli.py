"""The command line (one process, and two CPU processes with FSDP) and the SLURM launcher's flags."""

from __future__ import annotations

import json

import pytest
import torch

from dinov2.eval.finetune import cli
from dinov2.features import load_backbone
from dinov2.run.eval import launcher
from tests.dist_helpers import run_distributed
from tests.eval.finetune.conftest import ARCH, _tiny_vit

CONFIG = f"student:\n  arch: {ARCH}\n  patch_size: 8\ncrops:\n  global_crops_size: 32\n"


@pytest.fixture(scope="module")
def config_and_weights(tiny_arch, tmp_path_factory):
    """A training config of the tiny arch and its teacher export (random, seeded)."""
    folder = tmp_path_factory.mktemp("finetune_cli")
    (folder / "config.yaml").write_text(CONFIG)
    model = load_backbone(config=folder / "config.yaml", random_init=True, validate=False, device="cpu").model
    teacher = {f"backbone.{key}": value for key, value in model.state_dict().items()}
    torch.save({"teacher": teacher}, folder / "teacher_checkpoint.pth")
    return folder / "config.yaml", folder / "teacher_checkpoint.pth"


def _argv(config, weights, shapes, output_dir) -> list[str]:
    return [
        "--config-file",
        str(config),
        "--weights",
        str(weights),
        "--output-dir",
        str(output_dir),
        "--train-dataset",
        shapes.train,
        "--val-dataset",
        shapes.val,
        "--batch-size",
        "8",
        "--epochs",
        "1",
        "--epoch-length",
        "2",
        "--num-workers",
        "0",
        "--crop-size",
        "32",
        "--unfreeze-last-blocks",
        "1",
        "--nb-knn",
        "5",
        "--probe-iterations",
        "0",
    ]


def test_command_line_fine_tunes_and_its_output_folder_is_a_backbone(
    single_process_eval, config_and_weights, shapes, tmp_path
):
    assert cli.cli_main(_argv(*config_and_weights, shapes, tmp_path)) == 0
    detailed = json.loads((tmp_path / "results_eval_finetune_detailed.json").read_text())
    assert detailed["iterations"] == 2 and set(detailed["before"]) == {"knn"}
    assert detailed["args"]["unfreeze_last_blocks"] == 1
    loaded = load_backbone(tmp_path, device="cpu")  # config.yaml + eval/finetune_2/teacher_checkpoint.pth
    assert loaded.arch == ARCH and loaded.source.endswith("config.yaml")
    start = load_backbone(config=config_and_weights[0], weights=config_and_weights[1], validate=False, device="cpu")
    changed = {k for k, v in loaded.model.state_dict().items() if not torch.equal(v, start.model.state_dict()[k])}
    assert changed and all(k.startswith(("blocks.1.", "norm.")) for k in changed)  # only the last block trained


def test_usage_errors_come_before_any_work(capsys, tmp_path):
    with pytest.raises(SystemExit):
        cli.cli_main(["--model", "dinov2_vits14", "--weights", str(tmp_path / "w.pth"), "--train-dataset", "X"])
    assert "does not exist" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.cli_main(["--model", "dinov2_vits14", "--random-init", "--unfreeze-last-blocks", "-1"])
    assert "--unfreeze-last-blocks" in capsys.readouterr().err


def test_the_launcher_takes_the_fine_tuning_flags(capsys):
    with pytest.raises(SystemExit):
        launcher.launch("finetune", ["--help"])
    help_text = capsys.readouterr().out
    assert "--unfreeze-last-blocks" in help_text and "--layer-decay" in help_text and "--nodes" in help_text


def _worker(rank, world_size, argv):
    from dinov2.models.vision_transformer import registered_arch

    torch.set_num_threads(1)
    with registered_arch(ARCH, _tiny_vit):
        return cli.cli_main(argv)


@pytest.mark.slow
def test_two_processes_fine_tune_with_fsdp(config_and_weights, shapes, tmp_path):
    argv = _argv(*config_and_weights, shapes, tmp_path)
    assert run_distributed(_worker, 2, argv, timeout=300) == [0, 0]
    detailed = json.loads((tmp_path / "results_eval_finetune_detailed.json").read_text())
    assert detailed["iterations"] == 2 and 0.0 <= detailed["finetuned"]["top-1"] <= 100.0
    loaded = load_backbone(tmp_path, device="cpu")
    start = load_backbone(config=config_and_weights[0], weights=config_and_weights[1], validate=False, device="cpu")
    changed = {k for k, v in loaded.model.state_dict().items() if not torch.equal(v, start.model.state_dict()[k])}
    assert changed and all(k.startswith(("blocks.1.", "norm.")) for k in changed)
