"""The grid of linear classifiers of the linear probe (SPEC.md §6) and its inputs.

Facts from the released ``dinov2/eval/linear.py``: the backbone runs once per batch
(``get_intermediate_layers(x, n=4, return_class_token=True)``); each classifier of the grid
(learning rates x n_last_blocks {1, 4} x avgpool {False, True}) reads its input with
:func:`create_linear_input` (the hub ``_lc`` head input of :mod:`dinov2.heads.classifier`, in float32); one
optimizer param group per classifier carries its scaled learning rate.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn as nn
from torch.nn.parallel import DistributedDataParallel

from dinov2 import distributed
from dinov2.heads.classifier import hub_head_layers as _hub_layers
from dinov2.heads.classifier import linear_head_input

__all__ = [
    "DEFAULT_LEARNING_RATES",
    "DEFAULT_N_LAST_BLOCKS_LIST",
    "FeatureModel",
    "create_linear_input",
    "LinearClassifier",
    "AllClassifiers",
    "scale_lr",
    "classifier_name",
    "setup_linear_classifiers",
    "hub_head_layers",
    "LinearPostprocessor",
    "has_ddp_wrapper",
    "remove_ddp_wrapper",
]

DEFAULT_LEARNING_RATES = (1e-5, 2e-5, 5e-5, 1e-4, 2e-4, 5e-4, 1e-3, 2e-3, 5e-3, 1e-2, 2e-2, 5e-2, 0.1)
DEFAULT_N_LAST_BLOCKS_LIST = (1, 4)

#: images [B, 3, H, W] -> one (patch_tokens [B, N, D], cls_token [B, D]) pair per block, oldest first
FeatureModel = Callable[[torch.Tensor], Sequence[tuple[torch.Tensor, torch.Tensor]]]


def create_linear_input(x_tokens_list, use_n_blocks: int, use_avgpool: bool) -> torch.Tensor:
    """Classifier input from the last blocks' outputs (released name).

    x_tokens_list: [(patch_tokens [B, N, D], cls_token [B, D]), ...] oldest block first.
    Returns float32 [B, use_n_blocks * D] (cls tokens of the last ``use_n_blocks`` blocks, oldest
    first), with the mean of the last block's patch tokens appended ([B, (use_n_blocks + 1) * D])
    when ``use_avgpool``. This is the input layout of the hub ``_lc`` heads.
    """
    return linear_head_input(x_tokens_list, use_n_blocks, use_avgpool).float()


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


def scale_lr(learning_rates: float, batch_size: int, world_size: int | None = None) -> float:
    """Released linear scaling of one rate (the released name is plural): lr * (batch_size * world_size) / 256
    (batch_size per process)."""
    world_size = distributed.get_global_size() if world_size is None else world_size
    return learning_rates * (batch_size * world_size) / 256.0


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


def hub_head_layers(classifier: LinearClassifier) -> int | None:
    """``layers`` of the hub head this classifier is equivalent to (1 or 4), or None when it has no hub layout."""
    return _hub_layers(classifier.use_n_blocks, classifier.use_avgpool)


class LinearPostprocessor(nn.Module):
    """Released adapter for :func:`dinov2.eval.utils.evaluate`: ``{"preds": logits [B, C'], "target": targets}``,
    logits restricted / reordered by ``class_mapping`` (``preds[:, class_mapping]``) when given."""

    def __init__(self, linear_classifier: nn.Module, class_mapping=None):
        super().__init__()
        self.linear_classifier = linear_classifier
        mapping = None if class_mapping is None else torch.as_tensor(class_mapping, dtype=torch.long)
        self.register_buffer("class_mapping", mapping)

    def forward(self, samples, targets) -> dict[str, torch.Tensor]:
        preds = self.linear_classifier(samples)
        return {"preds": preds if self.class_mapping is None else preds[:, self.class_mapping], "target": targets}


def has_ddp_wrapper(m: nn.Module) -> bool:
    """Released helper: True for a ``DistributedDataParallel`` wrapper (this probe averages gradients itself)."""
    return isinstance(m, DistributedDataParallel)


def remove_ddp_wrapper(m: nn.Module) -> nn.Module:
    """Released helper: the wrapped module of a ``DistributedDataParallel``, else ``m``."""
    return m.module if has_ddp_wrapper(m) else m
