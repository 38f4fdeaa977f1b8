"""DINOv3's training configs as released: which defaults a config is merged onto, the keys and forms of DINOv3's
``ssl_default_config.yaml``, and the keys we do not implement.

- :func:`is_dinov3_config`: the layers of a config (file, overrides) ask for DINOv3's defaults
  (``ssl_default_config_dinov3.yaml``) when their ``student`` section, merged onto DINOv2's, belongs to a DINOv3
  family (the family registry decides: :func:`register_student_family`), or when they have a ``schedules``
  section or another key that only DINOv3's defaults have (``gram.*`` is in both defaults).
- :func:`dinov3_reference`: the keys a DINOv3 layer may hold: the defaults, DINOv3's schedule form
  (``{start, peak, end, warmup_epochs[, cosine_epochs]}``) under ``schedules.*``, ``dino.local_loss_weight_schedule``
  and ``gram.loss_weight_schedule``, and the per-part precision sections of a written ``config.yaml``.
- :func:`to_trainer_form`: DINOv3's forms turned into the keys the trainer reads: ``compute_precision.{param_dtype,
  reduce_dtype, sharding_strategy}`` -> the per-part sections; ``optim.lr`` (DINOv3's base, scaled by
  ``4 * sqrt(batch / 1024)``) -> ``optim.base_lr = 4 * lr``; with ``schedules``, ``optim.base_lr = 4`` so that the
  scaled ``optim.lr`` is the factor of ``schedules.lr.peak`` / ``end``, as released.
- :func:`unimplemented_settings`: keys DINOv3 reads that this trainer does not implement, set to another value than
  the one we reproduce; :func:`dinov2.config.loader.load_cfg` raises one error naming them all.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import Any

from omegaconf import DictConfig, OmegaConf

from dinov2.config.checks import ConfigValueError

__all__ = [
    "DINOV3_DEFAULT_CONFIG_NAME",
    "SCHEDULE_KEYS",
    "UNIMPLEMENTED",
    "UnimplementedConfigError",
    "dinov3_reference",
    "is_dinov3_config",
    "is_dinov3_form",
    "register_student_family",
    "to_trainer_form",
    "unimplemented_settings",
    "without_null_specs",
]

DINOV3_DEFAULT_CONFIG_NAME = "ssl_default_config_dinov3"
DINOV3_FAMILY_PREFIX = "dinov3_"  # families dinov3_vit, dinov3_convnext

# One schedule in DINOv3's form; ``freeze_last_layer_epochs`` belongs to ``schedules.lr``.
SCHEDULE_KEYS = ("start", "peak", "end", "warmup_epochs", "cosine_epochs", "freeze_last_layer_epochs")
SCHEDULE_SECTIONS = ("lr", "weight_decay", "momentum", "teacher_temp")
MODEL_PARTS = ("backbone", "dino_head", "ibot_head")  # the parts of compute_precision.{student,teacher}

# Keys that DINOv3's code reads and this trainer does not implement: the values we reproduce (anything else is an
# error naming the key), and what to do instead. Keys of the defaults file marked "(no effect)" are read by no
# released code and take any value; the Gram and multi-resolution keys are implemented by the trainer.
UNIMPLEMENTED: dict[str, tuple[tuple[Any, ...], str]] = {
    "dino.global_ignore_diagonal": ((True,), "the global DINO term always skips same-crop pairs (as DINOv2)"),
    "dino.koleo_topk": ((1,), "KoLeo uses the nearest neighbour only"),
    "dino.koleo_distributed_replicas": ((0,), "must stay 0 in the release too"),
    "ibot.mask_random_circular_shift": ((False,), "masks are sampled without circular shift"),
    "train.chunk_schedule": (([],), "one crop size per run: use crops.global_crops_size lists for multi-resolution"),
    "train.data_config": ((None,), "set train.dataset_path"),
    "optim.optimizer": (("adamw",), "AdamW is the only optimizer"),
    "optim.dump_fsdp_weights_path": (("",), "teacher exports are written under <output_dir>/eval"),
    "crops.rgb_mean": (([0.485, 0.456, 0.406],), "the crops are normalised with ImageNet's mean"),
    "crops.rgb_std": (([0.229, 0.224, 0.225],), "the crops are normalised with ImageNet's std"),
}


class UnimplementedConfigError(ConfigValueError):
    """A DINOv3 config sets keys that DINOv3's code reads but this trainer does not implement."""


StudentFamily = Callable[[dict], str]
_STUDENT_FAMILY: list[StudentFamily] = []


def register_student_family(namer: StudentFamily) -> StudentFamily:
    """Use ``namer(student section) -> family name`` to tell DINOv3 students (``dinov2.models.config_checks``
    registers the family registry's answer). Registering again replaces it."""
    _STUDENT_FAMILY[:] = [namer]
    return namer


def _container(cfg: DictConfig | dict | None) -> dict:
    if cfg is None:
        return {}
    return OmegaConf.to_container(cfg, resolve=False) if isinstance(cfg, DictConfig) else dict(cfg)


def _only_in(tree: dict, other: dict) -> bool:
    """Whether ``tree`` holds a key (at any depth) that ``other`` lacks."""
    for key, value in tree.items():
        if key not in other:
            return True
        if isinstance(value, dict) and isinstance(other[key], dict) and _only_in(value, other[key]):
            return True
    return False


def is_dinov3_config(
    layers: Sequence[DictConfig], dinov2_defaults: DictConfig, dinov3_defaults: DictConfig | None = None
) -> bool:
    """True when the layers (a config file, overrides) are DINOv3's: their ``student`` section, merged onto
    DINOv2's, is a DINOv3 family's; or they have a ``schedules`` section or another key that only DINOv3's
    defaults (``dinov3_defaults``) have (``crops.teacher_to_student_resolution_scale``, ``hrft``, ...). The
    ``gram`` keys are in both defaults (Gram anchoring trains either family) and decide nothing."""
    trees = [_container(layer) for layer in layers]
    v2_tree = _container(dinov2_defaults)
    v3_tree = _container(dinov3_defaults)
    for tree in trees:
        if "schedules" in tree:
            return True
        others = {key: value for key, value in tree.items() if key != "student" and key in v3_tree}
        if _only_in(others, v2_tree):
            return True
    sections = [tree["student"] for tree in trees if isinstance(tree.get("student"), dict)]
    if not sections:
        return False
    student = dict(v2_tree["student"])
    for section in sections:
        student.update(section)
    if _STUDENT_FAMILY:
        try:
            return _STUDENT_FAMILY[0](student).startswith(DINOV3_FAMILY_PREFIX)
        except (KeyError, ValueError):  # an unknown arch: decided by the keys below; validation names the arch
            pass
    # Without the family registry (config package used alone) or for an unknown arch: keys DINOv2's student
    # section lacks (student.n_storage_tokens, ...).
    return bool(set(student) - set(v2_tree["student"]))


def is_dinov3_form(cfg: DictConfig) -> bool:
    """A merged config made on DINOv3's defaults (it has DINOv3's one-policy ``compute_precision`` keys)."""
    return OmegaConf.select(cfg, "compute_precision.param_dtype") is not None


def _spec_tree() -> dict:
    return {key: None for key in SCHEDULE_KEYS}


def dinov3_reference(defaults: DictConfig, dinov2_defaults: DictConfig) -> dict:
    """The reference tree for strict keys of DINOv3 layers (see the module docstring)."""
    tree = _container(defaults)
    tree["schedules"] = {name: _spec_tree() for name in SCHEDULE_SECTIONS}
    tree["dino"]["local_loss_weight_schedule"] = _spec_tree()
    tree["gram"]["loss_weight_schedule"] = _spec_tree()
    for model in ("student", "teacher"):  # the derived per-part sections, present in a run's config.yaml
        tree["compute_precision"][model] = copy.deepcopy(_container(dinov2_defaults)["compute_precision"][model])
    return tree


SPEC_PATHS = ("schedules", "dino.local_loss_weight_schedule", "gram.loss_weight_schedule")


def without_null_specs(layer: DictConfig) -> DictConfig:
    """A copy of ``layer`` without the schedule specs set to null (``gram.loss_weight_schedule: null``, as in the
    released files), for the key check: a spec is a section of the reference, yet null is its released default."""
    layer = copy.deepcopy(layer)
    for path in SPEC_PATHS:
        parent, _, key = path.rpartition(".")
        section = OmegaConf.select(layer, parent) if parent else layer
        if isinstance(section, DictConfig) and key in section and section[key] is None:
            del section[key]
    return layer


def to_trainer_form(cfg: DictConfig, layers: Sequence[DictConfig] = ()) -> DictConfig:
    """Turn a merged DINOv3 config into the keys the trainer reads (in place; returns ``cfg``). Per-part precision
    sections set by ``layers`` (the config's layers: a written ``config.yaml``, a per-part override) win over the
    ones derived from the one policy. Idempotent: a written ``config.yaml`` (``optim.base_lr`` set) keeps its
    learning rates."""
    precision = cfg.compute_precision
    for model in ("student", "teacher"):
        parts = {}
        for part in MODEL_PARTS:
            mixed = {"param_dtype": precision.param_dtype, "reduce_dtype": precision.reduce_dtype}
            parts[part] = {"sharding_strategy": precision.sharding_strategy, "mixed_precision": mixed}
            parts[part]["mixed_precision"]["buffer_dtype"] = "fp32"
        given = [OmegaConf.select(layer, f"compute_precision.{model}") for layer in layers]
        precision[model] = OmegaConf.merge(parts, *(section for section in given if section is not None))
    if cfg.optim.base_lr is None:
        has_schedules = OmegaConf.select(cfg, "schedules") is not None
        # Multiplying by 4 is exact, so the scaled rates equal the release's 4 * sqrt(...) * lr bit for bit.
        cfg.optim.base_lr = 4.0 if has_schedules else 4.0 * cfg.optim.lr
        cfg.optim.lr = 0.0
    return cfg


def unimplemented_settings(cfg: DictConfig) -> list[str]:
    """``"key=value (we reproduce ...: hint)"`` for each key of :data:`UNIMPLEMENTED` set to another value."""
    found = []
    for key, (values, hint) in UNIMPLEMENTED.items():
        value = OmegaConf.select(cfg, key)
        if OmegaConf.is_config(value):
            value = OmegaConf.to_container(value, resolve=True)
        if value not in values:
            allowed = " or ".join(repr(v) for v in values)
            found.append(f"{key}={value!r} (implemented: {allowed}; {hint})")
    return found
