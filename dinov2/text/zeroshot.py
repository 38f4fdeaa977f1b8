"""Zero-shot use of a dino.txt model: class weights from prompt templates, class scores, dense similarity maps.

Class weight (the released notebooks): tokenize every template filled with the class name, ``encode_text``,
L2-normalise each, average, L2-normalise -> one column of ``[D, C]``. Image scores: 100 x normalised image features
@ weights. Dense use compares the head's patch tokens with the **second half** (the local half) of the text
embeddings (``part="local"``).
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "IMAGENET_TEMPLATES_FILE",
    "read_templates",
    "read_class_names",
    "zeroshot_weights",
    "patch_similarity",
    "predict_topk",
    "topk_accuracy",
    "ZERO_SHOT_SCALE",
]

IMAGENET_TEMPLATES_FILE = "imagenet_templates.txt"  # the 80 OpenAI ImageNet prompt templates, in this package
ZERO_SHOT_SCALE = 100.0  # the logit scale of the released zero-shot notebooks
_PARTS = ("all", "global", "local")


def _lines(path: str | os.PathLike, what: str) -> list[str]:
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"{what} file {str(path)!r} does not exist: pass a text file with one entry a line")
    lines = [line.rstrip("\n").strip() for line in path.read_text(encoding="utf-8").splitlines()]
    lines = [line for line in lines if line]
    if not lines:
        raise ValueError(f"{what} file {str(path)!r} is empty: write one entry a line")
    return lines


def read_templates(path: str | os.PathLike | None = None) -> list[str]:
    """Prompt templates with one ``{}`` each (one a line); default: the 80 ImageNet templates."""
    if path is None:
        text = resources.files("dinov2.text").joinpath(IMAGENET_TEMPLATES_FILE).read_text(encoding="utf-8")
        return [line for line in text.splitlines() if line]
    templates = _lines(path, "templates")
    bad = [t for t in templates if t.count("{}") != 1]
    if bad:
        raise ValueError(f"templates {bad[:3]} of {str(path)!r} need exactly one '{{}}' where the class name goes")
    return templates


def read_class_names(path: str | os.PathLike) -> list[str]:
    """Class names, one a line, in label order."""
    return _lines(path, "class names")


def _part(features: Tensor, part: str) -> Tensor:
    if part not in _PARTS:
        raise ValueError(f"part {part!r} is not one of {_PARTS}")
    half = features.shape[-1] // 2
    return {"all": features, "global": features[..., :half], "local": features[..., half:]}[part]


@torch.no_grad()
def zeroshot_weights(
    model: nn.Module,
    tokenizer,
    class_names: list[str],
    templates: list[str],
    *,
    part: str = "all",
    device: torch.device | str = "cpu",
    batch_size: int = 256,
) -> Tensor:
    """``[D, C]`` class weights: per class, the normalised mean of the normalised embeddings of its prompts
    (``part``: the whole embedding, or its ``global`` / ``local`` half)."""
    columns = []
    context_length = model.text_model.backbone.context_length  # 77 for the released model
    for name in class_names:
        ids = tokenizer.tokenize([template.format(name) for template in templates], context_length).to(device)
        embeddings = torch.cat([model.encode_text(chunk) for chunk in ids.split(batch_size)])  # [T, D]
        embeddings = F.normalize(_part(embeddings.float(), part), dim=-1)
        columns.append(F.normalize(embeddings.mean(dim=0), dim=-1))
    return torch.stack(columns, dim=1)  # [D, C]


@torch.no_grad()
def predict_topk(model: nn.Module, weights: Tensor, batches, device: torch.device | str, k: int = 5):
    """``(top-k class indices [N, k], labels [N])`` of ``(images, labels)`` batches: 100 x cosine(image, class)."""
    top, labels = [], []
    k = min(k, weights.shape[1])
    for images, targets in batches:
        features = model.encode_image(images.to(device), normalize=True).float()
        logits = ZERO_SHOT_SCALE * features @ weights.to(device)  # [B, C]
        top.append(logits.topk(k, dim=1).indices.cpu())
        labels.append(torch.as_tensor(targets))
    return torch.cat(top), torch.cat(labels)


def topk_accuracy(top: Tensor, labels: Tensor, num_classes: int) -> dict[str, float]:
    """``{"top-1": %, "top-5": %}`` of :func:`predict_topk`'s output; labels outside the classes are an error."""
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise ValueError(
            f"labels go from {int(labels.min())} to {int(labels.max())} but there are {num_classes} class names: "
            "pass one name per class, in label order"
        )
    correct = top == labels[:, None]
    return {
        "top-1": 100.0 * correct[:, :1].any(1).float().mean().item(),
        "top-5": 100.0 * correct.any(1).float().mean().item(),
    }


def patch_similarity(patch_tokens: Tensor, weights: Tensor, grid: tuple[int, int]) -> Tensor:
    """Cosine similarity of each patch with each class: ``[B, HW, D]`` x ``[D, C]`` -> ``[B, C, h, w]``."""
    batch = patch_tokens.shape[0]
    maps = F.normalize(patch_tokens.float(), dim=-1) @ weights  # [B, HW, C]
    return maps.transpose(1, 2).reshape(batch, weights.shape[1], *grid)
