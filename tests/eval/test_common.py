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


def _knn_expected(args, model, dtype):  # the keyword arguments the released-style main spelled out
    return dict(
        model=model, output_dir=args.output_dir, train_dataset_str=args.train_dataset_str,
        val_dataset_str=args.val_dataset_str, nb_knn=args.nb_knn, temperature=args.temperature, autocast_dtype=dtype,
        accuracy_averaging=args.metric_type, gather_on_cpu=args.gather_on_cpu, batch_size=args.batch_size,
        num_workers=args.num_workers, n_per_class_list=args.n_per_class_list, n_tries=args.n_tries,
        crop_size=args.crop_size, resize_size=args.resize_size, progress=not args.no_progress, run_args=args,
    )  # fmt: skip


def _log_regression_expected(args, model, dtype):
    return dict(
        model=model, train_dataset_str=args.train_dataset_str, val_dataset_str=args.val_dataset_str,
        finetune_dataset_str=args.finetune_dataset_str, autocast_dtype=dtype, finetune_on_val=args.finetune_on_val,
        metric_type=args.metric_type, train_dtype=torch.float64, train_features_device=torch.device("cpu"),
        max_train_iters=args.max_train_iters, output_dir=args.output_dir, batch_size=args.batch_size,
        num_workers=args.num_workers, crop_size=args.crop_size, resize_size=args.resize_size,
        progress=not args.no_progress, run_args=args,
    )  # fmt: skip


def _linear_expected(args, model, dtype):
    return dict(
        model=model, output_dir=args.output_dir, train_dataset_str=args.train_dataset_str,
        val_dataset_str=args.val_dataset_str, test_dataset_strs=args.test_dataset_strs, batch_size=args.batch_size,
        epochs=args.epochs, epoch_length=args.epoch_length, num_workers=args.num_workers,
        save_checkpoint_frequency=args.save_checkpoint_frequency, eval_period_iterations=args.eval_period_iterations,
        learning_rates=args.learning_rates, autocast_dtype=dtype, resume=not args.no_resume,
        classifier_fpath=args.classifier_fpath, val_metric_type=args.val_metric_type,
        test_metric_types=args.test_metric_types, val_class_mapping_fpath=args.val_class_mapping_fpath,
        test_class_mapping_fpaths=args.test_class_mapping_fpaths, crop_size=args.crop_size,
        resize_size=args.resize_size, run_args=args,
    )  # fmt: skip


CASES = {
    "knn": (knn_cli, "eval_knn_with_model", _knn_expected, ["--nb_knn", "3", "--no-progress", "--gather-on-cpu"]),
    "log_regression": (log_regression_cli, "eval_log_regression_with_model", _log_regression_expected, []),
    "linear": (linear_cli, "run_eval_linear", _linear_expected, ["--no-resume", "--epochs", "2"]),
}


@pytest.mark.parametrize("launcher", [False, True], ids=["cli", "launcher"])
@pytest.mark.parametrize("protocol", list(CASES))
def test_main_forwards_the_released_keywords(protocol, launcher, monkeypatch):
    module, function_name, expected, extra = CASES[protocol]
    parser = module.get_args_parser(add_help=not launcher)
    if launcher:
        parser = get_launcher_args_parser(parents=[parser])
    args = parser.parse_intermixed_args([*COMMON, *DATASETS, *extra, "student.arch=vit_small"])
    model, dtype, calls = torch.nn.Linear(1, 1), torch.bfloat16, []
    function = getattr(module, function_name)
    monkeypatch.setattr(module, "setup_and_build_model", lambda a: (model, dtype))
    monkeypatch.setattr(module, function_name, functools.wraps(function)(lambda **kwargs: calls.append(kwargs)))
    assert module.main(args) == 0
    assert calls == [expected(args, model, dtype)]
