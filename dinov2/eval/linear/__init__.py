"""Linear evaluation (released module ``dinov2.eval.linear``; ``python -m dinov2.eval.linear``).

:mod:`~dinov2.eval.linear.classifiers` (the grid and its inputs), :mod:`~dinov2.eval.linear.train` (training,
evaluation, selection, the released ``eval_linear``), :mod:`~dinov2.eval.linear.checkpoint` (checkpoints, hub head
export), :mod:`~dinov2.eval.linear.data` (evaluation loaders), :mod:`~dinov2.eval.linear.cli` (command line,
``run_eval_linear``, ``test_on_datasets``).
"""

from dinov2.eval.linear.checkpoint import (
    RUNNING_CHECKPOINT_NAME,
    hub_linear_head_state_dict,
    last_checkpoint_path,
    load_linear_checkpoint,
    resume_or_load,
    save_hub_linear_head,
    save_linear_checkpoint,
)
from dinov2.eval.linear.classifiers import (
    DEFAULT_LEARNING_RATES,
    DEFAULT_N_LAST_BLOCKS_LIST,
    AllClassifiers,
    LinearClassifier,
    LinearPostprocessor,
    classifier_name,
    create_linear_input,
    has_ddp_wrapper,
    hub_head_layers,
    remove_ddp_wrapper,
    scale_lr,
    setup_linear_classifiers,
)
from dinov2.eval.linear.cli import (
    RESIZE_RATIO,
    format_linear_results,
    get_args_parser,
    main,
    run_eval_linear,
    test_on_datasets,
)
from dinov2.eval.linear.data import make_eval_data_loader
from dinov2.eval.linear.train import (
    Probe,
    best_hub_classifier,
    eval_linear,
    evaluate_linear_classifiers,
    make_optimizer,
    make_scheduler,
    score_linear_classifiers,
    select_best_classifier,
    setup_probe,
    train_linear_classifiers,
    train_step,
)

__all__ = [
    "DEFAULT_LEARNING_RATES",
    "DEFAULT_N_LAST_BLOCKS_LIST",
    "RESIZE_RATIO",
    "RUNNING_CHECKPOINT_NAME",
    "AllClassifiers",
    "LinearClassifier",
    "LinearPostprocessor",
    "Probe",
    "best_hub_classifier",
    "classifier_name",
    "create_linear_input",
    "eval_linear",
    "evaluate_linear_classifiers",
    "format_linear_results",
    "get_args_parser",
    "has_ddp_wrapper",
    "hub_head_layers",
    "hub_linear_head_state_dict",
    "last_checkpoint_path",
    "load_linear_checkpoint",
    "main",
    "make_eval_data_loader",
    "make_optimizer",
    "make_scheduler",
    "remove_ddp_wrapper",
    "resume_or_load",
    "run_eval_linear",
    "save_hub_linear_head",
    "save_linear_checkpoint",
    "scale_lr",
    "score_linear_classifiers",
    "select_best_classifier",
    "setup_linear_classifiers",
    "setup_probe",
    "test_on_datasets",
    "train_linear_classifiers",
    "train_step",
]
