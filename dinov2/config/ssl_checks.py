"""Value checks of the training config (``ssl_default_config.yaml``) that need no registry: types, ranges,
crop sizes against the patch size, the distillation settings. Registered with :func:`register_check` on import.

Keys whose choices come from a registry are checked beside it (``config_checks`` modules of ``models/``, ``loss/``,
``data/``, ``distributed/``); the dtype choices come from the dtype table of ``utils/``.
"""

from __future__ import annotations

from omegaconf import OmegaConf

from dinov2.config.checks import MISSING, Checker, is_int, is_number, register_check
from dinov2.config.dinov3 import MODEL_PARTS, is_dinov3_form
from dinov2.utils.dtype import DTYPES

SCALING_RULES = ("sqrt_wrt_1024",)
DINOV3_STUDENT_BOOLEANS = ("mask_k_bias", "untie_cls_and_patch_norms", "untie_global_and_local_cls_norm")
ROPE_NORMALIZE_COORDS = ("min", "max", "separate")


def _sizes_ok(v) -> bool:
    return (is_int(v) and v >= 1) or _positive_ints(v)


def _positive_ints(v) -> bool:
    return isinstance(v, list) and bool(v) and all(is_int(k) and k > 0 for k in v)


def _check_precision(c: Checker) -> None:
    c.boolean("compute_precision.grad_scaler")
    for model in ("teacher", "student"):
        for part in MODEL_PARTS:
            prefix = f"compute_precision.{model}.{part}"
            for field in ("param_dtype", "reduce_dtype", "buffer_dtype"):
                c.choice(f"{prefix}.mixed_precision.{field}", list(DTYPES))


def _check_heads_and_losses(c: Checker) -> None:
    for section in ("dino", "ibot"):
        c.number(f"{section}.loss_weight", low=0.0)
        for field in ("head_n_prototypes", "head_bottleneck_dim", "head_nlayers", "head_hidden_dim"):
            c.integer(f"{section}.{field}", minimum=1)
    c.number("dino.koleo_loss_weight", low=0.0)
    c.number("ibot.mask_sample_probability", low=0.0, high=1.0)
    c.unit_range("ibot.mask_ratio_min_max")
    c.boolean("ibot.separate_head")


def _check_train(c: Checker) -> None:
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
    c.boolean("train.checkpointing")
    c.boolean("train.compile")
    c.integer("evaluation.eval_period_iterations", minimum=0)
    c.integer("checkpointing.period", minimum=0)
    c.integer("checkpointing.max_to_keep", minimum=1)
    if _present(c, "checkpointing.keep_every"):  # DINOv3's key
        c.integer("checkpointing.keep_every", minimum=1)
    c.boolean("tracking.tensorboard")
    c.integer("tracking.knn.period_iterations", minimum=0)
    c.string("tracking.knn.train_dataset")
    c.string("tracking.knn.val_dataset")
    c.check("tracking.knn.nb_knn", _positive_ints, "a non-empty list of integers > 0")
    c.check("tracking.knn.temperature", lambda v: is_number(v) and v > 0, "a number > 0")
    c.integer("tracking.knn.crop_size", minimum=1)
    c.check("tracking.knn.resize_size", lambda v: v is None or (is_int(v) and v > 0), "null or an integer > 0")
    c.integer("tracking.knn.batch_size", minimum=1)
    c.integer("tracking.knn.num_workers", minimum=0)


def _present(c: Checker, key: str) -> bool:
    return OmegaConf.select(c.cfg, key, default=MISSING) is not MISSING


def _check_student(c: Checker) -> None:
    """The keys every student section has; DINOv2's and DINOv3's own keys where the section has them (a DINOv3
    config is merged onto DINOv3's defaults, which lack DINOv2's ``num_register_tokens`` and the like)."""
    c.integer("student.patch_size", minimum=1)
    c.number("student.drop_path_rate", low=0.0, high=1.0, high_open=True)
    c.check("student.layerscale", lambda v: v is None or (is_number(v) and v >= 0), "null or a number >= 0")
    c.string("student.pretrained_weights")
    for field in ("qkv_bias", "proj_bias", "ffn_bias"):
        c.boolean(f"student.{field}")
    for field in ("drop_path_uniform", "interpolate_antialias", "use_xformers", *DINOV3_STUDENT_BOOLEANS):
        if _present(c, f"student.{field}"):
            c.boolean(f"student.{field}")
    for field in ("block_chunks", "num_register_tokens", "n_storage_tokens"):
        if _present(c, f"student.{field}"):
            c.integer(f"student.{field}", minimum=0)
    if _present(c, "student.interpolate_offset"):
        c.number("student.interpolate_offset", low=0.0)
    for field in ("pos_embed_rope_base", "pos_embed_rope_min_period", "pos_embed_rope_max_period"):
        if _present(c, f"student.{field}"):
            c.check(f"student.{field}", lambda v: v is None or (is_number(v) and v > 0), "null or a number > 0")
    for field in ("pos_embed_rope_shift_coords", "pos_embed_rope_jitter_coords", "pos_embed_rope_rescale_coords"):
        if _present(c, f"student.{field}"):
            c.check(f"student.{field}", lambda v: v is None or (is_number(v) and v >= 0), "null or a number >= 0")
    if _present(c, "student.pos_embed_rope_normalize_coords"):
        c.choice("student.pos_embed_rope_normalize_coords", ROPE_NORMALIZE_COORDS)


def _check_teacher(c: Checker) -> None:
    if _has_schedules(c):
        return  # schedules.momentum / teacher_temp replace these (DINOv3's configs set them to null)
    c.number("teacher.momentum_teacher", low=0.0, high=1.0)
    c.number("teacher.final_momentum_teacher", low=0.0, high=1.0)
    c.check("teacher.warmup_teacher_temp", lambda v: is_number(v) and v > 0, "a number > 0")
    c.check("teacher.teacher_temp", lambda v: is_number(v) and v > 0, "a number > 0")
    c.integer("teacher.warmup_teacher_temp_epochs", minimum=0)


def _has_schedules(c: Checker) -> bool:
    return OmegaConf.select(c.cfg, "schedules", default=None) is not None


def _check_schedule_spec(c: Checker, key: str, epochs: object, required: tuple[str, ...] = ()) -> None:
    """One schedule in DINOv3's form ``{start, peak, end, warmup_epochs[, cosine_epochs]}``."""
    for field in ("start", "peak", "end"):
        c.number(f"{key}.{field}")
    warmup = c.integer(f"{key}.warmup_epochs", minimum=0)
    cosine = None
    if _present(c, f"{key}.cosine_epochs"):  # optional: the cosine then spans the rest of training
        cosine = c.check(
            f"{key}.cosine_epochs", lambda v: v is None or (is_int(v) and v >= 0), "null or an integer >= 0"
        )
    for field in required:
        c.integer(f"{key}.{field}", minimum=0)
    spent = (warmup if is_int(warmup) else 0) + (cosine if is_int(cosine) else 0)
    if is_int(epochs) and spent > epochs:
        c.fail(f"{key}.warmup_epochs", warmup, f"warmup_epochs + cosine_epochs at most optim.epochs ({epochs})")


def _check_schedules(c: Checker, epochs: object) -> None:
    """DINOv3's schedules v2 and the other schedules in that form."""
    if _has_schedules(c):
        for name in ("lr", "weight_decay", "momentum", "teacher_temp"):
            _check_schedule_spec(c, f"schedules.{name}", epochs, ("freeze_last_layer_epochs",) if name == "lr" else ())
    if OmegaConf.select(c.cfg, "dino.reweight_dino_local_loss", default=False) is True:
        _check_schedule_spec(c, "dino.local_loss_weight_schedule", epochs)
    if OmegaConf.select(c.cfg, "gram.loss_weight_schedule", default=None) is not None:
        _check_schedule_spec(c, "gram.loss_weight_schedule", epochs)


def _check_optim(c: Checker) -> None:
    epochs = c.integer("optim.epochs", minimum=1)
    _check_schedules(c, epochs)
    for field in ("base_lr", "patch_embed_lr_mult"):
        c.number(f"optim.{field}", low=0.0)
    c.number("optim.lr")
    c.check("optim.clip_grad", lambda v: v is None or (is_number(v) and v >= 0), "null, 0 (off) or a number > 0")
    if not _has_schedules(c):  # DINOv2's schedule keys (null in DINOv3's configs with schedules)
        warmup = c.integer("optim.warmup_epochs", minimum=0)
        if is_int(epochs) and is_int(warmup) and warmup > epochs:
            c.fail("optim.warmup_epochs", warmup, f"at most optim.epochs ({epochs})")
        for field in ("weight_decay", "weight_decay_end", "min_lr"):
            c.number(f"optim.{field}", low=0.0)
        c.integer("optim.freeze_last_layer_epochs", minimum=0)
        if _present(c, "optim.schedule_trunc_extra"):
            c.number("optim.schedule_trunc_extra", low=0.0)
    c.choice("optim.scaling_rule", SCALING_RULES)
    c.check("optim.layerwise_decay", lambda v: is_number(v) and v > 0, "a number > 0")
    c.number("optim.adamw_beta1", low=0.0, high=1.0, high_open=True)
    c.number("optim.adamw_beta2", low=0.0, high=1.0, high_open=True)
    c.check("optim.adamw_fused", lambda v: v is None or isinstance(v, bool), "null (auto), true or false")


def _check_crops(c: Checker) -> None:
    c.unit_range("crops.global_crops_scale")
    c.unit_range("crops.local_crops_scale")
    n_local = c.integer("crops.local_crops_number", minimum=0)
    patch = OmegaConf.select(c.cfg, "student.patch_size")
    sizes = ["global_crops_size"] + (["local_crops_size"] if n_local != 0 else [])
    for field in sizes:
        # One size, or (DINOv3's multi-resolution configs) a list of sizes.
        value = c.check(f"crops.{field}", _sizes_ok, "an integer >= 1 or a non-empty list of them")
        # The backbone cuts crops into patch_size x patch_size patches: every released DINOv2 config uses multiples
        # (224 = 14 x 16, 96 = 6 x 16, 98 = 7 x 14, 518 = 37 x 14), so any other size is a mistake. DINOv3's
        # models drop the remainder instead, and its high-resolution recipe uses 168 px local crops (10.5 x 16).
        for size in [] if is_dinov3_form(c.cfg) else value if isinstance(value, list) else [value]:
            if is_int(size) and is_int(patch) and patch > 0 and size % patch != 0:
                lower, upper = size - size % patch, size - size % patch + patch
                c.fail(
                    f"crops.{field}",
                    size,
                    f"a multiple of student.patch_size={patch} (e.g. {lower} or {upper})",
                )


DISTILLATION_TEACHER_HEADS = ("checkpoint", "fresh")
DISTILLATION_IBOT_TOKENS = ("masked", "all")
DISTILLATION_META_ARCHS = ("DistillationMetaArch", "MultiDistillationMetaArch")


def _check_distillation(c: Checker) -> None:
    """Types and choices of ``distillation.*`` / ``multidistillation.*`` and their agreement with
    ``MODEL.META_ARCHITECTURE``; the teacher's config and file are checked when the model is built."""
    enabled = c.boolean("distillation.enabled")
    c.string("distillation.full_cfg_path")
    c.string("distillation.checkpoint_path")
    c.choice("distillation.teacher_heads", DISTILLATION_TEACHER_HEADS)
    mask_student = c.boolean("distillation.mask_student")
    tokens = c.choice("distillation.ibot_tokens", DISTILLATION_IBOT_TOKENS)
    if mask_student is True and tokens == "all":
        why = (
            "mask_student=true reproduces the SSL step, whose iBOT term uses the masked tokens: set ibot_tokens=masked"
        )
        c.fail("distillation.mask_student", True, f"false with distillation.ibot_tokens=all ({why})")
    multi = c.boolean("multidistillation.enabled")
    c.integer("multidistillation.global_batch_size", minimum=0)
    students = c.check("multidistillation.students", lambda v: isinstance(v, list), "a list")
    for i, student in enumerate(students if isinstance(students, list) else []):
        keys_ok = isinstance(student, dict) and set(student) == {"name", "config_path", "ranks_range"}
        name = student.get("name") if keys_ok else None
        if not (isinstance(name, str) and name.strip("./") and "/" not in name):  # a sub-folder of output_dir
            form = "{name: <sub-folder name>, config_path: <student yaml>, ranks_range: [first, last)}"
            c.fail(f"multidistillation.students[{i}]", student, form)
    arch = OmegaConf.select(c.cfg, "MODEL.META_ARCHITECTURE")
    if multi is True and arch != "MultiDistillationMetaArch":
        c.fail("MODEL.META_ARCHITECTURE", arch, "MultiDistillationMetaArch with multidistillation.enabled=true")
    if arch == "MultiDistillationMetaArch" and multi is False:
        c.fail("multidistillation.enabled", False, "true with MODEL.META_ARCHITECTURE=MultiDistillationMetaArch")
    if arch in DISTILLATION_META_ARCHS and enabled is False:
        c.fail("distillation.enabled", False, f"true with MODEL.META_ARCHITECTURE={arch} (the frozen teacher)")


def _check_adapt(c: Checker) -> None:
    """``adapt.*``: adapting a trained backbone (``dinov2/train/adapt.py``, ``dinov2/train/collapse_guard.py``)."""
    c.string("adapt.pretrained_heads")
    c.integer("adapt.head_warmup_iterations", minimum=0)
    c.integer("adapt.backbone_lr_ramp_iterations", minimum=0)
    c.integer("adapt.collapse_guard.period_iterations", minimum=0)
    c.choice("adapt.collapse_guard.action", ("warn", "stop"))
    for key in ("max_target_entropy", "min_target_perplexity", "min_cls_std", "min_cls_effective_rank", "max_knn_drop"):
        c.check(f"adapt.collapse_guard.{key}", lambda v: v is None or is_number(v), "null (not checked) or a number")


def check_training_config(c: Checker) -> None:
    """Every check of this module."""
    for check in (_check_precision, _check_heads_and_losses, _check_train, _check_student, _check_teacher):
        check(c)
    _check_optim(c)
    _check_crops(c)
    _check_distillation(c)
    _check_adapt(c)


register_check(__name__, check_training_config)
