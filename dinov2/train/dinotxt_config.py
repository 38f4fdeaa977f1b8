"""The config of dino.txt training (``python -m dinov2.train.dinotxt``): defaults (dataclasses) <- YAML file <-
``key=value``, strict keys (an unknown key names the closest valid ones), checked values.

Defaults are the released recipe (DINOv3 ``configs/dinov3_vitl_text.yaml``: 2 head blocks, drop path 0.3, AdamW lr
7e-4, betas (0.9, 0.99), weight decay 1e-4, 2000 warm-up iterations of 50,000, batch 256 per process, 224 px
random-resized crops with flips, a 1280-d 24-layer text transformer, ``init_logit_scale = ln(1/0.07)``), except
``train.fsdp`` (released: FSDP2 in bf16; here off, for one process). Presets:
``configs/train/dinotxt_demo_cpu.yaml``.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field

from dinov2.config import Checker, ConfigFolder, load_dataclass_config
from dinov2.text.build import TEXT_1280D20H24L as _TEXT

__all__ = ["DinoTxtTrainConfig", "DinoTxtConfigError", "load_dinotxt_config"]


class DinoTxtConfigError(ValueError):
    """A dino.txt training config names an unknown key or holds a bad value."""


@dataclass
class BackboneSection:
    source: str = "dinov2_vitl14_reg"  # anything the backbone door takes: hub name, run folder, weights, config
    weights: str = ""  # weights for a hub name / config source ("" = released weights of a hub name)
    random_init: bool = False  # the seeded initialisation instead of weights (tests, demos)
    overrides: list[str] = field(default_factory=list)  # key=value overrides of a config source
    hub_name: str = ""  # hub name written into the exported dino.txt file ("" = store the backbone tensors)


@dataclass
class TextSection:
    """The text transformer's sizes; defaults: the released ``tet1280d20h24l`` (``dinov2.text.TEXT_1280D20H24L``)."""

    context_length: int = _TEXT["context_length"]
    vocab_size: int = _TEXT["vocab_size"]
    dim: int = _TEXT["dim"]
    num_heads: int = _TEXT["num_heads"]
    num_layers: int = _TEXT["num_layers"]
    ffn_ratio: float = _TEXT["ffn_ratio"]


@dataclass
class ModelSection:
    embed_dim: int = 0  # 0: twice the backbone's (CLS + pooled patches, no projection)
    head_blocks: int = 2
    head_drop_path: float = 0.3
    patch_tokens_pooler: str = "mean"
    patch_token_layer: int = 1
    init_logit_scale: float = math.log(1 / 0.07)
    text: TextSection = field(default_factory=TextSection)


@dataclass
class DataSection:
    dataset: str = ""  # CaptionFolder:root=... or CaptionManifest:path=...
    img_size: int = 224
    random_resized_crop: bool = True  # released: RandomResizedCrop + flip; false: resize + centre crop
    batch_size: int = 256  # per process
    num_workers: int = 8
    vocab_path: str = ""  # CLIP BPE vocabulary ("" = the copy of an installed open_clip)


@dataclass
class OptimSection:
    lr: float = 7e-4
    weight_decay: float = 1e-4
    beta1: float = 0.9
    beta2: float = 0.99
    eps: float = 1e-8
    warmup_iterations: int = 2000
    iterations: int = 50_000


@dataclass
class EvalSection:
    dataset: str = ""  # zero-shot classification set at the end (ImageFolder:root=...); "" = none
    class_names: str = ""  # file, one a line ("" = folder names)
    templates: str = ""  # file ("" = the 80 ImageNet templates)
    crop_size: int = 224


@dataclass
class TrainSection:
    # FSDP2 over the processes for the trained parts (text tower, vision head); the frozen backbone and the logit
    # scale stay replicated. Released: on. Default off: one process has nothing to shard.
    fsdp: bool = False
    sharding_strategy: str = "FULL_SHARD"  # FULL_SHARD (reshard after forward) or SHARD_GRAD_OP (keep gathered)
    param_dtype: str = "fp32"  # compute dtype of the sharded parts (released: bf16 on GPUs); gradients reduced in fp32
    checkpointing: bool = False  # activation checkpointing of the text blocks: recomputed in backward (released: on)


@dataclass
class DinoTxtTrainConfig:
    backbone: BackboneSection = field(default_factory=BackboneSection)
    model: ModelSection = field(default_factory=ModelSection)
    data: DataSection = field(default_factory=DataSection)
    optim: OptimSection = field(default_factory=OptimSection)
    train: TrainSection = field(default_factory=TrainSection)
    eval: EvalSection = field(default_factory=EvalSection)
    output_dir: str = ""
    seed: int = 11
    checkpoint_period: int = 500
    max_checkpoints_to_keep: int = 5
    log_period: int = 10


_FOLDER = ConfigFolder(what="dino.txt config", like="configs/train/dinotxt_demo_cpu.yaml", example="optim.lr=1e-3")


def _check_values(c: Checker, cfg: DinoTxtTrainConfig) -> None:
    c.choice("model.patch_tokens_pooler", ("mean", "max", "gem"))
    c.choice("train.sharding_strategy", ("FULL_SHARD", "SHARD_GRAD_OP"))
    c.choice("train.param_dtype", ("fp32", "bf16"))  # fp16 would need a gradient scaler
    for path in (
        "data.batch_size",
        "data.img_size",
        "optim.iterations",
        "checkpoint_period",
        "model.patch_token_layer",
    ):
        c.check(path, lambda v: v >= 1, "an integer >= 1")
    c.check("optim.warmup_iterations", lambda v: 0 <= v <= cfg.optim.iterations, "in [0, optim.iterations]")
    c.check("model.head_drop_path", lambda v: 0 <= v < 1, "a probability in [0, 1)")
    if not cfg.data.dataset:
        c.errors.append("data.dataset: required (CaptionFolder:root=... or CaptionManifest:path=...)")


def load_dinotxt_config(
    config_file: str | os.PathLike | None = None, opts: list[str] | None = None, output_dir: str | None = None
) -> DinoTxtTrainConfig:
    """Defaults <- ``config_file`` (a path or a packaged name such as ``train/dinotxt_demo_cpu``) <- ``opts`` <-
    ``output_dir``, checked; :class:`DinoTxtConfigError` names unknown keys (with the closest valid ones) and bad
    values."""
    return load_dataclass_config(
        DinoTxtTrainConfig, config_file, opts, output_dir, _FOLDER, DinoTxtConfigError, check=_check_values
    )
