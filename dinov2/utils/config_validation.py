"""Value checks of a merged training/evaluation config, run before any heavy work.

``validate_config(cfg)`` collects every problem and raises one :class:`ConfigValueError` listing them all, each
line naming the key, the value and what is allowed. The allowed choices are the ones the released code accepts.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from numbers import Real
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from dinov2.data.gpu_augment import DATA_DEVICES
from dinov2.distributed.sharding import SHARDING_STRATEGIES
from dinov2.loss.teacher_centering import CENTERINGS
from dinov2.models.vision_transformer import ARCHS, FFN_LAYERS
from dinov2.utils.dtype import DTYPES

# Choices come from the registries that implement them (FFN layers, centrings, dtypes, sharding strategies,
# archs, meta-architectures), so a new entry there is accepted here without a second list to edit.
SCALING_RULES = ("sqrt_wrt_1024",)
MODEL_PARTS = ("backbone", "dino_head", "ibot_head")

_MISSING = object()


class ConfigValueError(ValueError):
    """A config value is out of range or of the wrong type; the message lists every such value."""


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, Real) and not isinstance(v, bool) and math.isfinite(v)


class _Checker:
    """Accumulates error lines; each ``check_*`` reads one dotted key of ``cfg``."""

    def __init__(self, cfg: DictConfig):
        self.cfg = cfg
        self.errors: list[str] = []

    def get(self, key: str) -> Any:
        value = OmegaConf.select(self.cfg, key, default=_MISSING)
        if value is _MISSING:
            self.errors.append(f"{key}: missing (it is a key of ssl_default_config.yaml; do not delete it)")
        elif isinstance(value, (DictConfig, ListConfig)):
            value = OmegaConf.to_container(value, resolve=True)
        return value

    def fail(self, key: str, value: Any, expected: str) -> None:
        self.errors.append(f"{key}: got {value!r}, expected {expected}")

    def check(self, key: str, ok: Callable[[Any], bool], expected: str) -> Any:
        value = self.get(key)
        if value is not _MISSING and not ok(value):
            self.fail(key, value, expected)
            return _MISSING
        return value

    def integer(self, key: str, minimum: int) -> Any:
        return self.check(key, lambda v: _is_int(v) and v >= minimum, f"an integer >= {minimum}")

    def number(self, key: str, low: float = -math.inf, high: float = math.inf, high_open: bool = False) -> Any:
        def ok(v):
            return _is_number(v) and low <= v and (v < high if high_open else v <= high)

        bracket = ")" if high_open else "]"
        return self.check(key, ok, f"a number in [{low}, {high}{bracket}")

    def boolean(self, key: str) -> Any:
        return self.check(key, lambda v: isinstance(v, bool), "true or false")

    def string(self, key: str, allow_empty: bool = True) -> Any:
        what = "a string" if allow_empty else "a non-empty string"
        return self.check(key, lambda v: isinstance(v, str) and (allow_empty or v != ""), what)

    def choice(self, key: str, choices: Sequence[str]) -> Any:
        return self.check(key, lambda v: v in choices, f"one of {list(choices)}")

    def unit_range(self, key: str) -> Any:
        """A ``[min, max]`` pair with ``0 <= min <= max <= 1`` (mask ratios, crop scales)."""

        def ok(v):
            return (
                isinstance(v, (list, tuple))
                and len(v) == 2
                and all(_is_number(x) and 0.0 <= x <= 1.0 for x in v)
                and v[0] <= v[1]
            )

        return self.check(key, ok, "a pair [min, max] with 0 <= min <= max <= 1")


def _check_precision(c: _Checker) -> None:
    c.boolean("compute_precision.grad_scaler")
    for model in ("teacher", "student"):
        for part in MODEL_PARTS:
            prefix = f"compute_precision.{model}.{part}"
            c.choice(f"{prefix}.sharding_strategy", SHARDING_STRATEGIES)
            for field in ("param_dtype", "reduce_dtype", "buffer_dtype"):
                c.choice(f"{prefix}.mixed_precision.{field}", list(DTYPES))


def _check_heads_and_losses(c: _Checker) -> None:
    for section in ("dino", "ibot"):
        c.number(f"{section}.loss_weight", low=0.0)
        for field in ("head_n_prototypes", "head_bottleneck_dim", "head_nlayers", "head_hidden_dim"):
            c.integer(f"{section}.{field}", minimum=1)
    c.number("dino.koleo_loss_weight", low=0.0)
    c.number("ibot.mask_sample_probability", low=0.0, high=1.0)
    c.unit_range("ibot.mask_ratio_min_max")
    c.boolean("ibot.separate_head")


def _check_train(c: _Checker) -> None:
    c.string("MODEL.WEIGHTS")
    c.string("MODEL.META_ARCHITECTURE", allow_empty=False)
    c.integer("train.batch_size_per_gpu", minimum=1)
    c.string("train.dataset_path", allow_empty=False)
    c.string("train.output_dir", allow_empty=False)
    c.integer("train.saveckp_freq", minimum=0)
    c.integer("train.seed", minimum=0)
    c.integer("train.num_workers", minimum=0)
    c.integer("train.OFFICIAL_EPOCH_LENGTH", minimum=1)
    c.boolean("train.cache_dataset")
    c.choice("train.centering", list(CENTERINGS))
    c.boolean("train.checkpointing")
    c.boolean("train.compile")
    c.choice("train.data_device", list(DATA_DEVICES))
    c.integer("evaluation.eval_period_iterations", minimum=0)
    c.integer("checkpointing.period", minimum=0)
    c.integer("checkpointing.max_to_keep", minimum=1)
    c.boolean("tracking.tensorboard")
    c.integer("tracking.knn.period_iterations", minimum=0)
    c.string("tracking.knn.train_dataset")
    c.string("tracking.knn.val_dataset")
    c.check("tracking.knn.nb_knn", lambda v: isinstance(v, list) and v and all(_is_int(k) and k > 0 for k in v),
            "a non-empty list of integers > 0")  # fmt: skip
    c.check("tracking.knn.temperature", lambda v: _is_number(v) and v > 0, "a number > 0")
    c.integer("tracking.knn.crop_size", minimum=1)
    c.check("tracking.knn.resize_size", lambda v: v is None or (_is_int(v) and v > 0), "null or an integer > 0")
    c.integer("tracking.knn.batch_size", minimum=1)
    c.integer("tracking.knn.num_workers", minimum=0)


def _check_student(c: _Checker) -> None:
    # ARCHS is read at call time: tests and users may register archs after import.
    c.check("student.arch", lambda v: str(v).removesuffix("_memeff") in ARCHS, f"one of {sorted(ARCHS)}")
    c.integer("student.patch_size", minimum=1)
    c.number("student.drop_path_rate", low=0.0, high=1.0, high_open=True)
    c.check("student.layerscale", lambda v: v is None or (_is_number(v) and v >= 0), "null or a number >= 0")
    c.boolean("student.drop_path_uniform")
    c.string("student.pretrained_weights")
    c.choice("student.ffn_layer", list(FFN_LAYERS))
    c.integer("student.block_chunks", minimum=0)
    for field in ("qkv_bias", "proj_bias", "ffn_bias", "interpolate_antialias", "use_xformers"):
        c.boolean(f"student.{field}")
    c.integer("student.num_register_tokens", minimum=0)
    c.number("student.interpolate_offset", low=0.0)


def _check_teacher(c: _Checker) -> None:
    c.number("teacher.momentum_teacher", low=0.0, high=1.0)
    c.number("teacher.final_momentum_teacher", low=0.0, high=1.0)
    c.check("teacher.warmup_teacher_temp", lambda v: _is_number(v) and v > 0, "a number > 0")
    c.check("teacher.teacher_temp", lambda v: _is_number(v) and v > 0, "a number > 0")
    c.integer("teacher.warmup_teacher_temp_epochs", minimum=0)


def _check_optim(c: _Checker) -> None:
    epochs = c.integer("optim.epochs", minimum=1)
    warmup = c.integer("optim.warmup_epochs", minimum=0)
    if _is_int(epochs) and _is_int(warmup) and warmup > epochs:
        c.fail("optim.warmup_epochs", warmup, f"at most optim.epochs ({epochs})")
    for field in ("weight_decay", "weight_decay_end", "base_lr", "min_lr", "patch_embed_lr_mult"):
        c.number(f"optim.{field}", low=0.0)
    c.number("optim.lr")
    c.check("optim.clip_grad", lambda v: v is None or (_is_number(v) and v >= 0), "null, 0 (off) or a number > 0")
    c.integer("optim.freeze_last_layer_epochs", minimum=0)
    c.choice("optim.scaling_rule", SCALING_RULES)
    c.check("optim.layerwise_decay", lambda v: _is_number(v) and v > 0, "a number > 0")
    c.number("optim.adamw_beta1", low=0.0, high=1.0, high_open=True)
    c.number("optim.adamw_beta2", low=0.0, high=1.0, high_open=True)
    c.check("optim.adamw_fused", lambda v: v is None or isinstance(v, bool), "null (auto), true or false")


def _check_crops(c: _Checker) -> None:
    c.unit_range("crops.global_crops_scale")
    c.unit_range("crops.local_crops_scale")
    n_local = c.integer("crops.local_crops_number", minimum=0)
    patch = OmegaConf.select(c.cfg, "student.patch_size")
    sizes = ["global_crops_size"] + (["local_crops_size"] if n_local != 0 else [])
    for field in sizes:
        size = c.integer(f"crops.{field}", minimum=1)
        # The backbone cuts crops into patch_size x patch_size patches: every released config uses multiples
        # (224 = 14 x 16, 96 = 6 x 16, 98 = 7 x 14, 518 = 37 x 14), so any other size is a mistake.
        if _is_int(size) and _is_int(patch) and patch > 0 and size % patch != 0:
            lower, upper = size - size % patch, size - size % patch + patch
            c.fail(
                f"crops.{field}",
                size,
                f"a multiple of student.patch_size={patch} (e.g. {lower} or {upper})",
            )


DISTILLATION_TEACHER_HEADS = ("checkpoint", "fresh")
DISTILLATION_IBOT_TOKENS = ("masked", "all")
DISTILLATION_META_ARCHS = ("DistillationMetaArch", "MultiDistillationMetaArch")


def _check_distillation(c: _Checker) -> None:
    """Types and choices of ``distillation.*`` / ``multidistillation.*`` and their agreement with
    ``MODEL.META_ARCHITECTURE``; the teacher's config and file are checked when the model is built."""
    enabled = c.boolean("distillation.enabled")
    c.string("distillation.full_cfg_path")
    c.string("distillation.checkpoint_path")
    c.choice("distillation.teacher_heads", DISTILLATION_TEACHER_HEADS)
    mask_student = c.boolean("distillation.mask_student")
    tokens = c.choice("distillation.ibot_tokens", DISTILLATION_IBOT_TOKENS)
    if mask_student is True and tokens == "all":
        c.fail("distillation.mask_student", True, "false with distillation.ibot_tokens=all (mask_student=true "
               "reproduces the SSL step, whose iBOT term uses the masked tokens: set ibot_tokens=masked)")  # fmt: skip
    multi = c.boolean("multidistillation.enabled")
    c.integer("multidistillation.global_batch_size", minimum=0)
    students = c.check("multidistillation.students", lambda v: isinstance(v, list), "a list")
    for i, student in enumerate(students if isinstance(students, list) else []):
        keys_ok = isinstance(student, dict) and set(student) == {"name", "config_path", "ranks_range"}
        name = student.get("name") if keys_ok else None
        if not (isinstance(name, str) and name.strip("./") and "/" not in name):  # a sub-folder of output_dir
            c.fail(f"multidistillation.students[{i}]", student,
                   "{name: <sub-folder name>, config_path: <student yaml>, ranks_range: [first, last)}")  # fmt: skip
    arch = OmegaConf.select(c.cfg, "MODEL.META_ARCHITECTURE")
    if multi is True and arch != "MultiDistillationMetaArch":
        c.fail("MODEL.META_ARCHITECTURE", arch, "MultiDistillationMetaArch with multidistillation.enabled=true")
    if arch == "MultiDistillationMetaArch" and multi is False:
        c.fail("multidistillation.enabled", False, "true with MODEL.META_ARCHITECTURE=MultiDistillationMetaArch")
    if arch in DISTILLATION_META_ARCHS and enabled is False:
        c.fail("distillation.enabled", False, f"true with MODEL.META_ARCHITECTURE={arch} (the frozen teacher)")


def validate_config(cfg: DictConfig) -> None:
    """Raise :class:`ConfigValueError` listing every invalid value of a merged config (defaults + overrides)."""
    checker = _Checker(cfg)
    for check in (_check_precision, _check_heads_and_losses, _check_train, _check_student, _check_teacher):
        check(checker)
    _check_optim(checker)
    _check_crops(checker)
    _check_distillation(checker)
    if checker.errors:
        lines = "\n".join(f"  - {e}" for e in checker.errors)
        raise ConfigValueError(f"invalid config ({len(checker.errors)} problem(s)):\n{lines}")
