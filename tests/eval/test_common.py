"""The protocols' ``main(args)`` forward exactly the released keyword arguments to their ``*_with_model`` function,
from the protocol's own command line and from the SLURM launcher's (whose extra flags must not leak in)."""

from __future__ import annotations

import functools

import pytest
import torch

from dinov2.eval.knn import cli as knn_cli
from dinov2.eval.linear import cli as linear_cli
from dinov2.eval.log_regression import cli as log_regression_cli
from dinov2.run.submit import get_args_parser as get_launcher_args_parser

COMMON = ["--config-file", "c.yaml", "--pretrained-weights", "w.pth", "--output-dir", "out"]
DATASETS = ["--train-dataset", "Synthetic:root=r:split=TRAIN", "--val-dataset", "Synthetic:root=r:split=VAL"]


# The keyword arguments the released-style main() spelled out: flags passed under their own name, then the others.
PLAIN_FLAGS = {
    "knn": "output_dir train_dataset_str val_dataset_str nb_knn temperature gather_on_cpu batch_size num_workers "
    "n_per_class_list n_tries crop_size resize_size",
    "log_regression": "train_dataset_str val_dataset_str finetune_dataset_str finetune_on_val metric_type "
    "max_train_iters output_dir batch_size num_workers crop_size resize_size",
    "linear": "output_dir train_dataset_str val_dataset_str test_dataset_strs batch_size epochs epoch_length "
    "num_workers save_checkpoint_frequency eval_period_iterations learning_rates classifier_fpath val_metric_type "
    "test_metric_types val_class_mapping_fpath test_class_mapping_fpaths crop_size resize_size",
}


def _other_values(protocol, args):
    if protocol == "knn":
        return {"accuracy_averaging": args.metric_type, "progress": not args.no_progress}
    if protocol == "log_regression":
        device = torch.device("cpu")
        return {"train_dtype": torch.float64, "train_features_device": device, "progress": not args.no_progress}
    return {"resume": not args.no_resume}


CASES = {
    "knn": (knn_cli, "eval_knn_with_model", ["--nb_knn", "3", "--no-progress", "--gather-on-cpu"]),
    "log_regression": (log_regression_cli, "eval_log_regression_with_model", []),
    "linear": (linear_cli, "run_eval_linear", ["--no-resume", "--epochs", "2"]),
}


@pytest.mark.parametrize("launcher", [False, True], ids=["cli", "launcher"])
@pytest.mark.parametrize("protocol", list(CASES))
def test_main_forwards_the_released_keywords(protocol, launcher, monkeypatch):
    module, function_name, extra = CASES[protocol]
    parser = module.get_args_parser(add_help=not launcher)
    if launcher:
        parser = get_launcher_args_parser(parents=[parser])
    args = parser.parse_intermixed_args([*COMMON, *DATASETS, *extra, "student.arch=vit_small"])
    model, dtype, calls = torch.nn.Linear(1, 1), torch.bfloat16, []
    function = getattr(module, function_name)
    monkeypatch.setattr(module, "setup_and_build_model", lambda a: (model, dtype))
    monkeypatch.setattr(module, function_name, functools.wraps(function)(lambda **kwargs: calls.append(kwargs)))
    assert module.main(args) == 0
    expected = {name: getattr(args, name) for name in PLAIN_FLAGS[protocol].split()}
    expected.update(_other_values(protocol, args), model=model, autocast_dtype=dtype, run_args=args)
    assert calls == [expected]


@pytest.mark.parametrize("protocol", list(CASES))
def test_protocol_parsers_start_from_the_shared_dataset_flags(protocol):
    parser = CASES[protocol][0].get_args_parser()
    args = parser.parse_intermixed_args(COMMON)
    assert (args.train_dataset_str, args.val_dataset_str) == ("ImageNet:split=TRAIN", "ImageNet:split=VAL")
    args = parser.parse_intermixed_args([*COMMON, *DATASETS])
    assert (args.train_dataset_str, args.val_dataset_str) == (DATASETS[1], DATASETS[3])
    with pytest.raises(SystemExit):  # --config-file and --pretrained-weights are required
        parser.parse_intermixed_args(DATASETS)


def test_backbone_protocol_publishes_the_command_line_of_its_parts(tmp_path, monkeypatch):
    from dinov2.eval import common

    calls = []

    def add_flags(parser):
        parser.add_argument("--answer", type=int, default=42)

    def check_flags(parser, args):
        calls.append("check")
        if args.answer < 0:
            parser.error("--answer must be >= 0")

    protocol = common.BackboneProtocol("toy protocol", add_flags, check_flags, evaluate=lambda **values: values)
    get_args_parser, check_args, main, cli_main = protocol.entry_points()
    parser = get_args_parser(description="toy")
    args = parser.parse_args(["--model", "dinov2_vits14", "--answer", "7", "--output-dir", str(tmp_path)])
    assert (args.model, args.answer, args.output_dir) == ("dinov2_vits14", 7, str(tmp_path))
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(SystemExit):  # the protocol's checks first, then an unwritable --output-dir
        check_args(parser, parser.parse_args(["--model", "dinov2_vits14", "--output-dir", str(blocker / "out")]))
    assert calls == ["check"]
    ran = []
    monkeypatch.setattr(common, "run_backbone_eval", lambda args, evaluate: ran.append(args.answer) or 0)
    assert cli_main(["--model", "dinov2_vits14", "--answer", "3"]) == 0 and ran == [3] and calls == ["check"] * 2
