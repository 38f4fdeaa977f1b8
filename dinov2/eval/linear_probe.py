"""Linear probing on frozen features (SPEC.md §6): a grid of linear classifiers trained at once.

Facts from the released ``dinov2/eval/linear.py``: the backbone runs once per batch
(``get_intermediate_layers(x, n=4, return_class_token=True)``); each classifier of the grid
(learning rates x n_last_blocks {1, 4} x avgpool {False, True}) reads its input with
:func:`create_linear_input`; one SGD (momentum 0.9, no weight decay, one param group per classifier
with its scaled lr) and one cosine schedule to 0 over ``epochs * epoch_length`` iterations drive them
all; the loss is the sum of the classifiers' cross-entropies, so each classifier gets exactly the
gradient it would get alone. With several processes the gradients are averaged over ranks (what the
released ``DistributedDataParallel`` wrapper does). The best classifier is chosen on validation top-1.

Checkpoint I/O and the hub ``_lc`` head export live in ``dinov2.eval.linear_checkpoint``; the command line
and the model-level entry point (``run_eval_linear``) in ``dinov2.eval.linear``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Sequence

import torch
import torch.nn as nn

from dinov2 import distributed
from dinov2.eval.linear_checkpoint import RUNNING_CHECKPOINT_NAME, hub_head_layers, save_linear_checkpoint
from dinov2.eval.metrics import MetricType, build_metric
from dinov2.eval.results import to_jsonable

logger = logging.getLogger("dinov2")

__all__ = [
    "DEFAULT_LEARNING_RATES",
    "DEFAULT_N_LAST_BLOCKS_LIST",
    "create_linear_input",
    "LinearClassifier",
    "AllClassifiers",
    "scale_lr",
    "classifier_name",
    "setup_linear_classifiers",
    "make_optimizer",
    "make_scheduler",
    "train_step",
    "evaluate_linear_classifiers",
    "select_best_classifier",
    "best_hub_classifier",
    "train_linear_classifiers",
]

DEFAULT_LEARNING_RATES = (1e-5, 2e-5, 5e-5, 1e-4, 2e-4, 5e-4, 1e-3, 2e-3, 5e-3, 1e-2, 2e-2, 5e-2, 0.1)
DEFAULT_N_LAST_BLOCKS_LIST = (1, 4)

# images [B, 3, H, W] -> one (patch_tokens [B, N, D], cls_token [B, D]) pair per block, oldest first
FeatureModel = Callable[[torch.Tensor], Sequence[tuple[torch.Tensor, torch.Tensor]]]


def create_linear_input(x_tokens_list, use_n_blocks: int, use_avgpool: bool) -> torch.Tensor:
    """Classifier input from the last blocks' outputs.

    x_tokens_list: [(patch_tokens [B, N, D], cls_token [B, D]), ...] oldest block first.
    Returns float32 [B, use_n_blocks * D] (cls tokens of the last ``use_n_blocks`` blocks, oldest
    first), with the mean of the last block's patch tokens appended ([B, (use_n_blocks + 1) * D])
    when ``use_avgpool``. This is the input layout of the hub ``_lc`` heads.
    """
    blocks = list(x_tokens_list)[-use_n_blocks:]
    output = torch.cat([cls_token for _, cls_token in blocks], dim=-1)  # [B, n * D]
    if use_avgpool:
        patch_mean = blocks[-1][0].mean(dim=1)  # [B, D]
        output = torch.cat((output, patch_mean), dim=-1).reshape(output.shape[0], -1)
    return output.float()


class LinearClassifier(nn.Module):
    """Linear layer on frozen features; weight ~ N(0, 0.01), bias 0 (released init)."""

    def __init__(self, out_dim: int, use_n_blocks: int, use_avgpool: bool, num_classes: int = 1000):
        super().__init__()
        self.out_dim = out_dim
        self.use_n_blocks = use_n_blocks
        self.use_avgpool = use_avgpool
        self.num_classes = num_classes
        self.linear = nn.Linear(out_dim, num_classes)
        self.linear.weight.data.normal_(mean=0.0, std=0.01)
        self.linear.bias.data.zero_()

    def forward(self, x_tokens_list) -> torch.Tensor:
        return self.linear(create_linear_input(x_tokens_list, self.use_n_blocks, self.use_avgpool))


class AllClassifiers(nn.Module):
    """The grid, as a ``classifiers_dict`` ModuleDict (released state-dict keys
    ``classifiers_dict.<name>.linear.{weight,bias}``). ``forward`` returns {name: logits [B, C]};
    classifiers sharing (n blocks, avgpool) share one computed input.
    """

    def __init__(self, classifiers_dict: dict[str, LinearClassifier]):
        super().__init__()
        self.classifiers_dict = nn.ModuleDict()
        self.classifiers_dict.update(classifiers_dict)

    def forward(self, inputs) -> dict[str, torch.Tensor]:
        cache: dict[tuple[int, bool], torch.Tensor] = {}
        outputs = {}
        for name, classifier in self.classifiers_dict.items():
            key = (classifier.use_n_blocks, classifier.use_avgpool)
            if key not in cache:
                cache[key] = create_linear_input(inputs, *key)
            outputs[name] = classifier.linear(cache[key])
        return outputs

    def __len__(self) -> int:
        return len(self.classifiers_dict)


def scale_lr(learning_rate: float, batch_size: int, world_size: int | None = None) -> float:
    """Released linear scaling: lr * (batch_size * world_size) / 256 (batch_size per process)."""
    world_size = distributed.get_global_size() if world_size is None else world_size
    return learning_rate * (batch_size * world_size) / 256.0


def classifier_name(n_blocks: int, avgpool: bool, lr: float, digits: int = 5) -> str:
    """Released name, e.g. ``classifier_4_blocks_avgpool_True_lr_0_00250`` (scaled lr, "." -> "_")."""
    return f"classifier_{n_blocks}_blocks_avgpool_{avgpool}_lr_{lr:.{digits}f}".replace(".", "_")


def setup_linear_classifiers(
    sample_output,
    n_last_blocks_list: Sequence[int] = DEFAULT_N_LAST_BLOCKS_LIST,
    learning_rates: Sequence[float] = DEFAULT_LEARNING_RATES,
    batch_size: int = 128,
    num_classes: int = 1000,
    *,
    world_size: int | None = None,
    device: torch.device | str | None = None,
) -> tuple[AllClassifiers, list[dict]]:
    """Build the grid in the released order (n blocks, then avgpool False/True, then lr).

    sample_output: the feature model's output for a sample batch (sets the input sizes).
    Returns the classifiers and one optimizer param group per classifier ``{"params", "lr"}``.
    Names that would collide at 5 decimals (e.g. scaled lrs 5e-6 and 1e-5: the released code then
    silently replaces one classifier in the dict) get 10 decimals instead. With a process group the
    initial weights are broadcast from rank 0 (as DistributedDataParallel does).
    """
    if not learning_rates or min(learning_rates) <= 0:
        raise ValueError(f"--learning-rates must be positive, got {list(learning_rates)}")
    depth = len(sample_output)
    if any(n < 1 or n > depth for n in n_last_blocks_list):
        raise ValueError(f"n_last_blocks {list(n_last_blocks_list)} must be in [1, {depth}] (blocks in the output)")
    grid = [
        (n, avgpool, scale_lr(lr, batch_size, world_size))
        for n in n_last_blocks_list
        for avgpool in (False, True)
        for lr in learning_rates
    ]
    short = [classifier_name(*entry) for entry in grid]
    classifiers, param_groups = {}, []
    for (n, avgpool, lr), name in zip(grid, short):
        if short.count(name) > 1:
            name = classifier_name(n, avgpool, lr, digits=10)
        out_dim = create_linear_input(sample_output, use_n_blocks=n, use_avgpool=avgpool).shape[1]
        classifier = LinearClassifier(out_dim, use_n_blocks=n, use_avgpool=avgpool, num_classes=num_classes)
        classifiers[name] = classifier.to(device)
        param_groups.append({"params": list(classifier.parameters()), "lr": lr})
    if len(classifiers) != len(grid):
        raise ValueError(f"duplicate learning rates in {list(learning_rates)}: classifier names must be unique")
    all_classifiers = AllClassifiers(classifiers)
    for param in all_classifiers.parameters():
        distributed.broadcast(param.data, src=0)
    return all_classifiers, param_groups


def make_optimizer(param_groups: list[dict]) -> torch.optim.SGD:
    """Released optimizer: SGD, momentum 0.9, weight decay 0, one group per classifier."""
    return torch.optim.SGD(param_groups, momentum=0.9, weight_decay=0)


def make_scheduler(optimizer: torch.optim.Optimizer, max_iter: int) -> torch.optim.lr_scheduler.CosineAnnealingLR:
    """Released schedule: cosine from each group's lr to 0 over ``max_iter`` iterations (stepped per iteration)."""
    return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, max_iter, eta_min=0)


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
def evaluate_linear_classifiers(
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


def _validate(feature_model, classifiers, val_data, iteration, metrics_file_path, **eval_kwargs) -> dict:
    results = evaluate_linear_classifiers(feature_model, classifiers, val_data, **eval_kwargs)
    for name, metric in results["classifiers"].items():
        logger.info("ITER: %d -- Classifier: %s * %s", iteration, name, to_jsonable(metric))
    logger.info("best classifier: %s", results["best_classifier"])
    if metrics_file_path is not None and distributed.is_main_process():
        with open(metrics_file_path, "a") as f:  # released results_eval_linear.json layout
            f.write(f"iter: {iteration}\n{json.dumps({'best_classifier': results['best_classifier']})}\n\n")
    return results


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
    advanced past the completed iterations on resume). Every ``eval_period`` iterations (not at the
    last one) and at the end the grid is evaluated on ``val_data`` (re-iterable). With ``output_dir``:
    the running checkpoint every ``running_checkpoint_period`` iterations (after the first 5 since
    start), ``model_{iteration:07d}`` every ``checkpoint_period`` and ``model_final`` at the end.
    Returns (final validation results or None, max_iter).
    """
    eval_kwargs = dict(metric_type=metric_type, num_classes=num_classes, class_mapping=val_class_mapping)
    batches = iter(train_data)
    for iteration in range(start_iter, max_iter):
        try:
            images, labels = next(batches)[:2]
        except StopIteration:
            raise ValueError(
                f"the train data ended at iteration {iteration} before max_iter={max_iter}; "
                "use an infinite sampler or lower --epochs / --epoch-length"
            ) from None
        loss = train_step(feature_model, classifiers, optimizer, scheduler, images, labels)
        if iteration % log_period == 0:
            lr = optimizer.param_groups[0]["lr"]
            logger.info("iteration %d/%d  loss %.4f  lr %.6f", iteration, max_iter, loss, lr)
        if output_dir is not None:
            periods = (checkpoint_period, running_checkpoint_period)
            _checkpoint(output_dir, classifiers, optimizer, scheduler, iteration, start_iter, max_iter, *periods)
        is_last = iteration == max_iter - 1
        if val_data is not None and eval_period > 0 and (iteration + 1) % eval_period == 0 and not is_last:
            _validate(feature_model, classifiers, val_data, iteration, metrics_file_path, **eval_kwargs)
    if val_data is None:
        return None, max_iter
    return _validate(feature_model, classifiers, val_data, max_iter, metrics_file_path, **eval_kwargs), max_iter
