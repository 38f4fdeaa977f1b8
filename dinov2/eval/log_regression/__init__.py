"""Logistic-regression evaluation (released module ``dinov2.eval.log_regression``; ``python -m
dinov2.eval.log_regression``).

:mod:`~dinov2.eval.log_regression.solver`: the L-BFGS solver, the C sweep and the protocol on features;
:mod:`~dinov2.eval.log_regression.cli`: the command line, the release's model-level :func:`eval_log_regression` and
:func:`eval_log_regression_with_model`.
"""

from dinov2.eval.log_regression.cli import (
    RESIZE_RATIO,
    as_torch_dtype,
    eval_log_regression,
    eval_log_regression_with_model,
    get_args_parser,
    main,
)
from dinov2.eval.log_regression.solver import (
    C_POWER_RANGE,
    DEFAULT_MAX_ITER,
    DEFAULT_TOL,
    LogisticRegression,
    default_c_values,
    format_log_regression_results,
    holdout_split,
    sweep_c_values,
)

__all__ = [
    "C_POWER_RANGE",
    "DEFAULT_MAX_ITER",
    "DEFAULT_TOL",
    "RESIZE_RATIO",
    "LogisticRegression",
    "as_torch_dtype",
    "default_c_values",
    "eval_log_regression",
    "eval_log_regression_with_model",
    "format_log_regression_results",
    "get_args_parser",
    "holdout_split",
    "main",
    "sweep_c_values",
]
