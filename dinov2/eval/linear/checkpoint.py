"""Checkpoints of the linear-probe grid and export of a classifier as a hub ``_lc`` linear head.

Checkpoint files use the layout of the released run (fvcore ``Checkpointer``): ``<output_dir>/<name>.pth``
holding ``{"model": grid state dict, "optimizer": ..., "scheduler": ..., "iteration": int}``, and a
text file ``last_checkpoint`` naming the newest one, so an output directory of the released code can
be resumed here and the other way round. Writes are atomic (temp file, then ``os.replace``); reads go through the
weights door (:func:`dinov2.models.weights.read_checkpoint`: ``weights_only``, and a truncated or foreign file is
named in the error).

Hub head format (``dinov2_vit*14_linear{,4}_head.pth``, :mod:`dinov2.heads.classifier`): ``{"weight":
[1000, (1 + layers) * D], "bias": [1000]}`` for ``nn.Linear((1 + layers) * D, 1000)``, whose input is the cls
tokens of the last ``layers`` blocks (oldest first) followed by the mean of the last block's patch tokens. Only
grid entries with ``avgpool=True`` and 1 or 4 blocks have that layout (layers = n blocks).
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from dinov2 import distributed
from dinov2.eval.linear.classifiers import AllClassifiers, LinearClassifier, hub_head_layers
from dinov2.models.weights import read_checkpoint
from dinov2.utils.io import atomic_torch_save, atomic_write_text

logger = logging.getLogger("dinov2")

__all__ = [
    "RUNNING_CHECKPOINT_NAME",
    "save_linear_checkpoint",
    "load_linear_checkpoint",
    "last_checkpoint_path",
    "resume_or_load",
    "hub_linear_head_state_dict",
    "save_hub_linear_head",
]

RUNNING_CHECKPOINT_NAME = "running_checkpoint_linear_eval"
_LAST_CHECKPOINT_FILE = "last_checkpoint"


def save_linear_checkpoint(output_dir, name: str, classifiers: AllClassifiers, optimizer, scheduler, iteration: int):
    """Write ``<output_dir>/<name>.pth`` and point ``last_checkpoint`` at it (main process only).

    ``iteration`` is the last completed iteration; training resumes at ``iteration + 1``.
    """
    if not distributed.is_main_process():
        return None
    output_dir = Path(output_dir)
    path = output_dir / f"{name}.pth"
    state = {
        "model": classifiers.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "iteration": int(iteration),
    }
    atomic_torch_save(state, path)
    atomic_write_text(output_dir / _LAST_CHECKPOINT_FILE, path.name)
    logger.info("Saved linear classifiers checkpoint %s (iteration %d)", path, iteration)
    return path


def load_linear_checkpoint(path, classifiers: AllClassifiers, optimizer=None, scheduler=None) -> int | None:
    """Load a checkpoint (grid weights, and optimizer / scheduler when given); returns its iteration or None.

    Accepts a released checkpoint too (its ``model`` keys may carry a ``module.`` prefix from DDP).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"linear classifiers checkpoint {path} does not exist; check --classifier-fpath")
    state = read_checkpoint(path, argument="--classifier-fpath")
    if "model" not in state:
        raise ValueError(f"{path} is not a linear-eval checkpoint (expected a dict with a 'model' entry)")
    model_state = {k.removeprefix("module."): v for k, v in state["model"].items()}
    missing, unexpected = classifiers.load_state_dict(model_state, strict=False)
    if missing or unexpected:
        raise ValueError(
            f"{path} does not match the classifier grid: missing {missing[:4]}, unexpected {unexpected[:4]}; "
            "use the same --learning-rates, batch size and number of processes as the run that wrote it"
        )
    if optimizer is not None and "optimizer" in state:
        optimizer.load_state_dict(state["optimizer"])
    if scheduler is not None and "scheduler" in state:
        scheduler.load_state_dict(state["scheduler"])
    return state.get("iteration")


def last_checkpoint_path(output_dir) -> Path | None:
    """The checkpoint named by ``<output_dir>/last_checkpoint``, or None when there is none."""
    marker = Path(output_dir) / _LAST_CHECKPOINT_FILE
    if not marker.is_file():
        return None
    path = Path(output_dir) / marker.read_text().strip()
    return path if path.is_file() else None


def resume_or_load(
    output_dir, classifiers, optimizer, scheduler, *, classifier_fpath: str | None = None, resume: bool = True
) -> int:
    """Released start-up: resume from the output dir's last checkpoint when ``resume`` and one exists,
    else load only the grid weights from ``classifier_fpath`` when given. Returns the start iteration.
    """
    path = last_checkpoint_path(output_dir) if resume else None
    if path is not None:
        logger.info("Resuming linear classifiers from %s", path)
        iteration = load_linear_checkpoint(path, classifiers, optimizer, scheduler)
    elif classifier_fpath:
        logger.info("Loading linear classifiers from %s", classifier_fpath)
        iteration = load_linear_checkpoint(classifier_fpath, classifiers)
    else:
        iteration = None
    return 0 if iteration is None else int(iteration) + 1


def hub_linear_head_state_dict(classifier: LinearClassifier) -> dict[str, torch.Tensor]:
    """``{"weight": [C, (1 + layers) * D], "bias": [C]}`` for ``nn.Linear`` (the hub head format)."""
    if hub_head_layers(classifier) is None:
        raise ValueError(
            f"a classifier with {classifier.use_n_blocks} blocks and avgpool={classifier.use_avgpool} has no hub "
            "_lc head layout (needs avgpool=True and 1 or 4 blocks)"
        )
    return {k: v.detach().cpu().clone() for k, v in classifier.linear.state_dict().items()}


def save_hub_linear_head(classifier: LinearClassifier, path) -> Path:
    """Write the classifier as a hub head state dict (atomically). Returns the path."""
    path = Path(path)
    atomic_torch_save(hub_linear_head_state_dict(classifier), path)
    return path
