"""One fine-tuning run from a loaded backbone: data, model, "before" numbers, training, "after" numbers, export.

Files in ``output_dir``: ``checkpoints/model_<iteration>/`` (resume), the fine-tuned backbone as a teacher export
``eval/finetune_<iterations>/teacher_checkpoint.pth`` (``{"teacher": {"backbone.<key>": ...}}``: every tool takes
it, e.g. ``load_backbone(<that file>)``; with a config-built backbone ``config.yaml`` is written too, so the output
folder itself is a run folder for ``load_backbone(output_dir)``), the head (``linear_head.pth`` /
``linear4_head.pth`` in the hub ``_lc`` format when it has that layout, else ``finetune_head.pth``, the same
``{"weight", "bias"}`` keys), ``results_eval_finetune.json`` (one ``{name: value}`` line per number) and
``results_eval_finetune_detailed.json`` (everything, with the arguments).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from dinov2 import distributed
from dinov2.config import write_config
from dinov2.data.transforms import make_classification_eval_transform, make_classification_train_transform
from dinov2.eval import common
from dinov2.eval.dense.train import make_train_loader
from dinov2.eval.finetune.measures import finetuned_accuracy, knn_top1, linear_probe_top1
from dinov2.eval.finetune.model import FineTuneClassifier, set_trainable
from dinov2.eval.finetune.train import Recipe, Trainer
from dinov2.eval.linear.classifiers import DEFAULT_LEARNING_RATES, hub_head_layers, scale_lr
from dinov2.eval.linear.data import make_eval_data_loader, num_classes_of
from dinov2.eval.metrics import MetricType
from dinov2.features.backbone import LoadedBackbone, eval_device
from dinov2.features.knn import check_k
from dinov2.features.knn_scoring import DEFAULT_NB_KNN, RESIZE_RATIO
from dinov2.train.checkpointing import export_teacher
from dinov2.utils.io import atomic_torch_save

logger = logging.getLogger("dinov2")

__all__ = ["FineTuneData", "make_data", "measure", "export_finetuned", "run_finetune"]


@dataclasses.dataclass
class FineTuneData:
    """Train images with augmentations and with the eval transform (k-NN), the val loader, the class count."""

    train: object
    train_eval: object
    val_loader: object
    num_classes: int


def make_data(
    loaded: LoadedBackbone,
    train: str,
    val: str,
    *,
    crop_size: int,
    resize_size: int | None,
    batch_size: int,
    num_workers: int,
    metric_type: MetricType,
) -> FineTuneData:
    """Datasets from dataset strings, normalised with the backbone family's mean / std."""
    norm = dict(mean=loaded.mean, std=loaded.std)
    resize = common.default_resize_size(crop_size, resize_size, RESIZE_RATIO)
    eval_transform = make_classification_eval_transform(resize_size=resize, crop_size=crop_size, **norm)
    train_set = common.make_eval_dataset(
        train, make_classification_train_transform(crop_size=crop_size, **norm), "train"
    )
    train_eval = common.make_eval_dataset(train, eval_transform, "train (k-NN)")
    val_loader = make_eval_data_loader(val, batch_size, num_workers, metric_type, transform=eval_transform)
    return FineTuneData(train_set, train_eval, val_loader, num_classes_of(train_set, train))


def measure(
    model: FineTuneClassifier,
    data: FineTuneData,
    *,
    nb_knn: Sequence[int],
    probe_learning_rates,
    probe_iterations: int,
    batch_size: int,
    num_workers: int,
    autocast_dtype: torch.dtype,
    metric_type: MetricType,
    seed: int,
) -> dict:
    """k-NN top-1 per k (none when ``nb_knn`` is empty) and the linear probe's best top-1 (none when
    ``probe_iterations`` is 0) of the backbone as it is now."""
    out: dict = {}
    common_args = dict(batch_size=batch_size, num_workers=num_workers, autocast_dtype=autocast_dtype)
    if nb_knn:
        out["knn"] = knn_top1(
            model.backbone,
            data.train_eval,
            data.val_loader.dataset,
            nb_knn=nb_knn,
            metric_type=metric_type,
            **common_args,
        )
    if probe_iterations > 0:
        out["linear"] = linear_probe_top1(
            model.backbone,
            data.train,
            data.val_loader,
            n_last_blocks=model.n_last_blocks,
            learning_rates=probe_learning_rates,
            iterations=probe_iterations,
            num_classes=data.num_classes,
            metric_type=metric_type,
            seed=seed,
            **common_args,
        )
    return out


def export_finetuned(model: FineTuneClassifier, loaded: LoadedBackbone, output_dir: Path, iteration: int) -> dict:
    """Write the backbone as a teacher export and the head (collective); returns their paths."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    full = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    backbone = {key: value for key, value in full.items() if key.startswith("backbone.")}
    export = export_teacher(output_dir / "eval" / f"finetune_{iteration}" / "teacher_checkpoint.pth", backbone)
    layers = hub_head_layers(model.head)
    head = output_dir / (f"linear{'4' if layers == 4 else ''}_head.pth" if layers else "finetune_head.pth")
    if distributed.is_main_process():
        atomic_torch_save({k.removeprefix("head.linear."): v for k, v in full.items() if k.startswith("head.")}, head)
        if loaded.config is not None:
            write_config(loaded.config, output_dir)
    return {"backbone": str(export), "head": str(head), "head_layers": layers}


def _released(before: dict, after: dict, finetuned: dict) -> dict:
    """The summary lines of ``results_eval_finetune.json``: fine-tuned top-1, then k-NN / linear before and after."""
    lines = {"finetuned top-1": finetuned["top-1"]}
    for when, values in (("before", before), ("after", after)):
        for k, top1 in values.get("knn", {}).items():
            lines[f"knn {k} top-1 {when}"] = top1
        if "linear" in values:
            lines[f"linear top-1 {when}"] = values["linear"]["top-1"]
    return lines


def _seeded_model(loaded: LoadedBackbone, num_classes: int, seed: int, **head) -> FineTuneClassifier:
    """The backbone and a head whose initialisation depends on ``seed`` alone (the global RNG is left as it was)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return FineTuneClassifier(loaded.model, loaded.embed_dim, num_classes, **head)


def _after(
    model, loaded, data: FineTuneData, recipe: Recipe, output_dir: Path, before: dict, measures: dict, facts: dict
) -> dict:
    """The "after" numbers, the fine-tuned accuracy and the export (collective); returns the detailed results."""
    after = measure(model, data, **measures)
    finetuned = finetuned_accuracy(
        model,
        data.val_loader,
        num_classes=data.num_classes,
        autocast_dtype=recipe.amp_dtype,
        metric_type=measures["metric_type"],
    )
    files = export_finetuned(model, loaded, output_dir, recipe.max_iter)
    recipe_record = {**dataclasses.asdict(recipe), "amp_dtype": str(recipe.amp_dtype).removeprefix("torch.")}
    return {
        "backbone": {"source": loaded.source, "family": loaded.family, "arch": loaded.arch},
        "num_classes": data.num_classes,
        "iterations": recipe.max_iter,
        **facts,
        "recipe": recipe_record,
        "before": before,
        "after": after,
        "finetuned": finetuned,
        "files": files,
        "results": _released(before, after, finetuned),
    }


def run_finetune(
    loaded: LoadedBackbone,
    *,
    output_dir: str | Path,
    train_dataset_str: str,
    val_dataset_str: str,
    batch_size: int = 32,
    num_workers: int = 8,
    epochs: int = 10,
    epoch_length: int | None = None,
    lr: float = 1e-4,
    min_lr: float = 1e-6,
    warmup_epochs: float = 1.0,
    weight_decay: float = 0.05,
    layer_decay: float = 0.75,
    patch_embed_lr_mult: float = 1.0,
    clip_grad: float = 3.0,
    label_smoothing: float = 0.0,
    amp_dtype: torch.dtype = torch.bfloat16,
    unfreeze_last_blocks: int | None = None,
    n_last_blocks: int = 1,
    avgpool: bool = False,
    rope_augmentation: bool = False,
    crop_size: int = 224,
    resize_size: int | None = None,
    nb_knn: Sequence[int] = DEFAULT_NB_KNN,
    probe_learning_rates: Sequence[float] = DEFAULT_LEARNING_RATES,
    probe_iterations: int = 1250,
    metric_type: MetricType | str = MetricType.MEAN_ACCURACY,
    checkpoint_period: int | None = None,
    resume: bool = True,
    seed: int = 0,
    stop_after: int | None = None,
    run_args=None,
) -> dict:
    """Fine-tune ``loaded.model`` with a linear head on a labelled dataset (collective); see the module docstring
    for the files and :mod:`dinov2.eval.finetune` for the method. ``lr`` / ``min_lr`` are per 256 images (scaled
    by the global batch); ``epoch_length`` defaults to one pass over the train set; ``unfreeze_last_blocks`` None
    trains every block. ``stop_after``: return after that many iterations in all (checkpointed), for time-limited
    jobs. Returns the detailed results (``{"iteration", "before"}`` only when stopped early)."""
    start, output_dir, metric_type = time.perf_counter(), Path(output_dir), MetricType(metric_type)
    output_dir.mkdir(parents=True, exist_ok=True)
    shape = dict(batch_size=batch_size, num_workers=num_workers)
    data = make_data(
        loaded,
        train_dataset_str,
        val_dataset_str,
        crop_size=crop_size,
        resize_size=resize_size,
        metric_type=metric_type,
        **shape,
    )
    if nb_knn:  # before any feature is extracted
        check_k(nb_knn, len(data.train), flag="--nb-knn")
    epoch_length = epoch_length or max(1, len(data.train) // (batch_size * distributed.get_global_size()))
    recipe = Recipe(
        max_iter=epochs * epoch_length,
        lr=scale_lr(lr, batch_size),
        min_lr=scale_lr(min_lr, batch_size),
        warmup_iters=round(warmup_epochs * epoch_length),
        weight_decay=weight_decay,
        layer_decay=layer_decay,
        patch_embed_lr_mult=patch_embed_lr_mult,
        clip_grad=clip_grad,
        label_smoothing=label_smoothing,
        amp_dtype=amp_dtype,
    )
    head = dict(n_last_blocks=n_last_blocks, avgpool=avgpool, rope_augmentation=rope_augmentation)
    model = _seeded_model(loaded, data.num_classes, seed, **head)
    trainable = set_trainable(loaded.model, unfreeze_last_blocks)
    trainer = Trainer(model, recipe, eval_device(), output_dir)
    measures = dict(
        nb_knn=nb_knn,
        probe_learning_rates=probe_learning_rates,
        probe_iterations=probe_iterations,
        autocast_dtype=amp_dtype,
        metric_type=metric_type,
        seed=seed,
        **shape,
    )
    checkpoint = trainer.resume() if resume else None
    before = checkpoint.extra["before"] if checkpoint is not None else measure(model, data, **measures)
    start_iter = 0 if checkpoint is None else checkpoint.iteration + 1
    logger.info("Fine-tuning %d backbone parameters from iteration %d of %d", trainable, start_iter, recipe.max_iter)
    loader = make_train_loader(data.train, batch_size, num_workers, seed, start_iter)
    period = checkpoint_period or epoch_length
    iteration = trainer.fit(
        loader, start_iter, checkpoint_period=period, stop_after=stop_after, plain={"before": before}
    )
    if iteration < recipe.max_iter:
        return {"iteration": iteration, "before": before}
    facts = {"epoch_length": epoch_length, "trainable_backbone_parameters": trainable}
    detailed = _after(model, loaded, data, recipe, output_dir, before, measures, facts)
    common.finish_eval_run(output_dir, "finetune", detailed["results"], detailed, start=start, run_args=run_args)
    return detailed
