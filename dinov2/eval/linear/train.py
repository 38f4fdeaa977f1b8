"""Training and evaluation of the linear-probe grid (SPEC.md §6), and the released ``eval_linear`` loop.

Facts from the released ``dinov2/eval/linear.py``: one SGD (momentum 0.9, no weight decay, one param group per
classifier with its scaled lr) and one cosine schedule to 0 over ``epochs * epoch_length`` iterations drive the
whole grid; the loss is the sum of the classifiers' cross-entropies, so each classifier gets exactly the gradient
it would get alone. With several processes the gradients are averaged over ranks (what the released
``DistributedDataParallel`` wrapper does). The best classifier is chosen on validation top-1. Progress: every
``log_period`` (10) iterations a :class:`~dinov2.logging.MetricLogger` line with the iteration, ETA, loss, lr,
iteration and data-loading times, as released (the lr is printed with 6 significant digits instead of 4
decimals, which showed 0.0000 for the smallest learning rates).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Sequence
from typing import NamedTuple

import torch
import torch.nn as nn

from dinov2 import distributed
from dinov2.eval.linear.checkpoint import RUNNING_CHECKPOINT_NAME, resume_or_load, save_linear_checkpoint
from dinov2.eval.linear.classifiers import AllClassifiers, FeatureModel, hub_head_layers, setup_linear_classifiers
from dinov2.eval.metrics import MetricType, build_metric
from dinov2.eval.results import to_jsonable
from dinov2.eval.utils import ModelWithIntermediateLayers
from dinov2.features.backbone import autocast_context
from dinov2.logging import MetricLogger, SmoothedValue

logger = logging.getLogger("dinov2")

__all__ = [
    "Probe",
    "setup_probe",
    "make_optimizer",
    "make_scheduler",
    "train_step",
    "evaluate_linear_classifiers",
    "score_linear_classifiers",
    "select_best_classifier",
    "best_hub_classifier",
    "train_linear_classifiers",
    "eval_linear",
    "write_results_block",
]


def make_optimizer(param_groups: list[dict]) -> torch.optim.SGD:
    """Released optimizer: SGD, momentum 0.9, weight decay 0, one group per classifier."""
    return torch.optim.SGD(param_groups, momentum=0.9, weight_decay=0)


def make_scheduler(optimizer: torch.optim.Optimizer, max_iter: int) -> torch.optim.lr_scheduler.CosineAnnealingLR:
    """Released schedule: cosine from each group's lr to 0 over ``max_iter`` iterations (stepped per iteration)."""
    return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, max_iter, eta_min=0)


class Probe(NamedTuple):
    """A linear-probe grid ready to train: ``train_linear_classifiers(**probe._asdict(), train_data=..., ...)``."""

    feature_model: FeatureModel  # the last blocks of the frozen backbone
    classifiers: AllClassifiers  # the grid: one linear layer per (blocks, avgpool, learning rate)
    optimizer: torch.optim.SGD
    scheduler: torch.optim.lr_scheduler.CosineAnnealingLR


def setup_probe(
    model: nn.Module,
    sample_image: torch.Tensor,
    n_last_blocks_list: Sequence[int],
    learning_rates: Sequence[float],
    batch_size: int,
    num_classes: int,
    autocast_dtype: torch.dtype,
    max_iter: int,
) -> Probe:
    """The released probe set-up on a frozen ``model``: its feature model, the classifier grid sized on
    ``sample_image`` ``[3, H, W]``, SGD and the cosine schedule over ``max_iter`` iterations."""
    device = next(model.parameters()).device
    feature_model = ModelWithIntermediateLayers(
        model, max(n_last_blocks_list), autocast_context(autocast_dtype, device)
    )
    sample_output = feature_model(sample_image.unsqueeze(0).to(device))
    classifiers, param_groups = setup_linear_classifiers(
        sample_output, n_last_blocks_list, learning_rates, batch_size, num_classes, device=device
    )
    optimizer = make_optimizer(param_groups)
    return Probe(feature_model, classifiers, optimizer, make_scheduler(optimizer, max_iter))


def _average_gradients(module: nn.Module) -> None:
    """Average gradients over ranks in one flat all-reduce (what DistributedDataParallel does)."""
    world = distributed.get_global_size()
    grads = [p.grad for p in module.parameters() if p.grad is not None]
    if world == 1 or not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    distributed.all_reduce(flat)
    flat /= world
    for grad, chunk in zip(grads, flat.split([g.numel() for g in grads])):
        grad.copy_(chunk.view_as(grad))


def train_step(
    feature_model: FeatureModel,
    classifiers: AllClassifiers,
    optimizer: torch.optim.Optimizer,
    scheduler,
    images: torch.Tensor,
    labels: torch.Tensor,
) -> torch.Tensor:
    """One iteration on a batch: frozen features once, summed cross-entropy, backward, step. Returns the loss."""
    device = next(classifiers.parameters()).device
    images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
    if bool((labels < 0).any()):
        raise ValueError(
            f"train labels contain {labels.min().item()}: the train split has no labels; use a labelled split"
        )
    with torch.no_grad():
        features = feature_model(images)
    outputs = classifiers(features)
    loss = sum(nn.functional.cross_entropy(logits, labels) for logits in outputs.values())
    optimizer.zero_grad()
    loss.backward()
    _average_gradients(classifiers)
    optimizer.step()
    scheduler.step()
    return loss.detach()


def select_best_classifier(
    results: dict[str, dict[str, torch.Tensor]], best_classifier_on_val: str | None = None, names: Iterable[str] = ()
) -> dict:
    """Released rule: the first classifier (grid order) with the highest top-1, or ``best_classifier_on_val``.

    ``names`` restricts the candidates (e.g. to hub-compatible ones). A per-class top-1 is averaged
    over the classes present. Returns ``{"name": str, "accuracy": float}`` (fraction, as released).
    """
    allowed = set(names) or set(results)
    best_name, best_accuracy = "", -1.0
    for name, metric in results.items():
        accuracy = float(metric["top-1"].nanmean()) if metric["top-1"].ndim else float(metric["top-1"])
        if name not in allowed:
            continue
        if (best_classifier_on_val is None and accuracy > best_accuracy) or name == best_classifier_on_val:
            best_name, best_accuracy = name, accuracy
    return {"name": best_name, "accuracy": best_accuracy}


@torch.no_grad()
def score_linear_classifiers(
    feature_model: FeatureModel,
    classifiers: AllClassifiers,
    data_loader: Iterable,
    *,
    metric_type: MetricType | str = MetricType.MEAN_ACCURACY,
    num_classes: int,
    class_mapping: Sequence[int] | torch.Tensor | None = None,
    best_classifier_on_val: str | None = None,
) -> dict:
    """Evaluate every classifier on ``data_loader`` batches ``(images, targets, ...)`` (collective).

    ``class_mapping`` selects/reorders the classifier outputs (``preds[:, class_mapping]``).
    Returns ``{"classifiers": {name: {"top-1": .., "top-5": ..}}, "best_classifier": {"name", "accuracy"}}``.
    """
    device = next(classifiers.parameters()).device
    mapping = None if class_mapping is None else torch.as_tensor(class_mapping, dtype=torch.long, device=device)
    num_outputs = len(mapping) if mapping is not None else num_classes
    metrics = {name: build_metric(metric_type, num_classes=num_outputs) for name in classifiers.classifiers_dict}
    for images, targets, *_ in data_loader:
        outputs = classifiers(feature_model(images.to(device)))
        targets = targets.to(device)
        for name, logits in outputs.items():
            metrics[name].update(logits if mapping is None else logits[:, mapping], targets)
    results = {name: metric.compute() for name, metric in metrics.items()}
    return {"classifiers": results, "best_classifier": select_best_classifier(results, best_classifier_on_val)}


def evaluate_linear_classifiers(
    feature_model: FeatureModel,
    linear_classifiers: AllClassifiers,
    data_loader: Iterable,
    metric_type: MetricType | str,
    metrics_file_path,
    training_num_classes: int,
    iteration: int,
    prefixstring: str = "",
    class_mapping: Sequence[int] | torch.Tensor | None = None,
    best_classifier_on_val: str | None = None,
) -> dict:
    """Released: :func:`score_linear_classifiers`, each classifier's metrics logged (prefixed ``prefixstring``) and
    the released block (``iter: N`` + the best classifier) appended to ``metrics_file_path`` (main process; None
    writes nothing). Returns the scores: ``best_classifier`` as released, and every classifier's metrics."""
    results = score_linear_classifiers(
        feature_model,
        linear_classifiers,
        data_loader,
        metric_type=metric_type,
        num_classes=training_num_classes,
        class_mapping=class_mapping,
        best_classifier_on_val=best_classifier_on_val,
    )
    for name, metric in results["classifiers"].items():
        logger.info("%s -- Classifier: %s * %s", prefixstring, name, to_jsonable(metric))
    logger.info("best classifier: %s", results["best_classifier"])
    write_results_block(metrics_file_path, iteration, results)
    return results


def best_hub_classifier(val_results: dict, classifiers: AllClassifiers) -> dict | None:
    """The best classifier on validation among those with a hub ``_lc`` layout: ``{"name", "accuracy", "layers"}``.

    When the overall best classifier uses avgpool=False (or 2 blocks, ...) it cannot be exported as a
    hub head; the best exportable one is returned instead (None if the grid has none) and the caller
    reports both names.
    """
    names = [name for name, c in classifiers.classifiers_dict.items() if hub_head_layers(c) is not None]
    if not names:
        return None
    best = select_best_classifier(val_results["classifiers"], names=names)
    return {**best, "layers": hub_head_layers(classifiers.classifiers_dict[best["name"]])}


def write_results_block(metrics_file_path, iteration: int, results: dict) -> None:
    """Released ``results_eval_linear.json`` block (main process): ``iter: N``, one JSON line, a blank line."""
    if metrics_file_path is not None and distributed.is_main_process():
        with open(metrics_file_path, "a") as f:
            f.write(f"iter: {iteration}\n{json.dumps({'best_classifier': results['best_classifier']})}\n\n")


def _checkpoint(output_dir, classifiers, optimizer, scheduler, iteration, start_iter, max_iter, period, running):
    """Released checkpoint cadence: running checkpoint (not in the first 5 iterations after a (re)start),
    periodic ``model_{iteration:07d}`` and ``model_final``."""
    state = (classifiers, optimizer, scheduler, iteration)
    if running and iteration - start_iter > 5 and iteration % running == 0:
        save_linear_checkpoint(output_dir, RUNNING_CHECKPOINT_NAME, *state)
    if period and (iteration + 1) % period == 0:
        save_linear_checkpoint(output_dir, f"model_{iteration:07d}", *state)
    if iteration == max_iter - 1:
        save_linear_checkpoint(output_dir, "model_final", *state)


def train_linear_classifiers(
    *,
    feature_model: FeatureModel,
    classifiers: AllClassifiers,
    optimizer: torch.optim.Optimizer,
    scheduler,
    train_data: Iterable,
    max_iter: int,
    start_iter: int = 0,
    val_data: Iterable | None = None,
    eval_period: int = 0,
    metric_type: MetricType | str = MetricType.MEAN_ACCURACY,
    num_classes: int = 1000,
    val_class_mapping=None,
    output_dir=None,
    checkpoint_period: int = 0,
    running_checkpoint_period: int = 0,
    metrics_file_path=None,
    log_period: int = 10,
) -> tuple[dict | None, int]:
    """Released training loop from ``start_iter`` to ``max_iter`` (iterations, not epochs).

    train_data: batches ``(images, labels, ...)`` starting at ``start_iter`` (an infinite loader
    advanced past the completed iterations on resume). Every ``log_period`` iterations a progress line (ETA,
    loss, lr, times). Every ``eval_period`` iterations (not at the last one) and at the end the grid is evaluated
    on ``val_data`` (re-iterable). With ``output_dir``: the running checkpoint every
    ``running_checkpoint_period`` iterations (after the first 5 since start), ``model_{iteration:07d}`` every
    ``checkpoint_period`` and ``model_final`` at the end. Returns (final validation results or None, max_iter).
    """
    validation = (metric_type, metrics_file_path, num_classes)
    metric_logger = MetricLogger(delimiter="  ")
    metric_logger.add_meter("lr", SmoothedValue(window_size=1, fmt="{value:.6g}"))
    iteration = start_iter
    batches = metric_logger.log_every(train_data, log_period, "Training", max_iter, start_iter)
    for images, labels, *_ in batches if start_iter < max_iter else ():
        loss = train_step(feature_model, classifiers, optimizer, scheduler, images, labels)
        if iteration % log_period == 0:  # as released: read the loss (a device sync) only when it is logged
            metric_logger.update(loss=loss, lr=optimizer.param_groups[0]["lr"])
        if output_dir is not None:
            periods = (checkpoint_period, running_checkpoint_period)
            _checkpoint(output_dir, classifiers, optimizer, scheduler, iteration, start_iter, max_iter, *periods)
        is_last = iteration == max_iter - 1
        if val_data is not None and eval_period > 0 and (iteration + 1) % eval_period == 0 and not is_last:
            evaluate_linear_classifiers(
                feature_model, classifiers, val_data, *validation, iteration, f"ITER: {iteration}", val_class_mapping
            )
        iteration += 1
    if iteration < max_iter:
        raise ValueError(
            f"the train data ended at iteration {iteration} before max_iter={max_iter}; "
            "use an infinite sampler or lower --epochs / --epoch-length"
        )
    if val_data is None:
        return None, max_iter
    final = evaluate_linear_classifiers(
        feature_model, classifiers, val_data, *validation, max_iter, f"ITER: {max_iter}", val_class_mapping
    )
    return final, max_iter


def eval_linear(
    *,
    feature_model: FeatureModel,
    linear_classifiers: AllClassifiers,
    train_data_loader: Iterable,
    val_data_loader: Iterable,
    metrics_file_path,
    optimizer: torch.optim.Optimizer,
    scheduler,
    output_dir,
    max_iter: int,
    checkpoint_period: int,
    running_checkpoint_period: int,
    eval_period: int,
    metric_type: MetricType | str,
    training_num_classes: int,
    resume: bool = True,
    classifier_fpath: str | None = None,
    val_class_mapping=None,
):
    """Released entry point: resume (or load ``classifier_fpath``), train to ``max_iter``, validate.

    ``train_data_loader`` must start at the resumed iteration (the released ``run_eval_linear`` advances its
    sampler). Returns ``(val_results, feature_model, linear_classifiers, iteration)`` as released; val_results
    holds ``best_classifier`` (and, here, every classifier's metrics under ``classifiers``).
    """
    start_iter = resume_or_load(
        output_dir, linear_classifiers, optimizer, scheduler, classifier_fpath=classifier_fpath, resume=resume
    )
    val_results, iteration = train_linear_classifiers(
        feature_model=feature_model,
        classifiers=linear_classifiers,
        optimizer=optimizer,
        scheduler=scheduler,
        train_data=train_data_loader,
        max_iter=max_iter,
        start_iter=start_iter,
        val_data=val_data_loader,
        eval_period=eval_period,
        metric_type=metric_type,
        num_classes=training_num_classes,
        val_class_mapping=val_class_mapping,
        output_dir=output_dir,
        checkpoint_period=checkpoint_period,
        running_checkpoint_period=running_checkpoint_period,
        metrics_file_path=metrics_file_path,
    )
    return val_results, feature_model, linear_classifiers, iteration
