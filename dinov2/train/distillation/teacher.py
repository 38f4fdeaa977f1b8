"""The frozen teacher of a distillation run: built from its training config, loaded strictly, never updated.

:func:`plan_teacher` does every check that needs only the configs and the file's key names (cheap: ``.pth`` files
are memory-mapped, checkpoint folders read from their metadata), so a wrong file or setting fails before any model
is built. :func:`build_teacher` then builds the backbone (on the meta device: no random initialisation of a
ViT-g) and the heads, and loads the weights strictly:

- ``distillation.teacher_heads: checkpoint`` (default, the paper's recipe): every backbone and head tensor must
  be in the file;
- ``fresh``: the file is a backbone only (a released hub file); the heads are new, initialised from
  ``train.seed`` (identical on every rank and every run with that seed) and frozen. Not the paper's recipe: the
  targets become balanced assignments of the teacher's features to random prototypes;
- ``checkpoint_path: ignore``: a random teacher seeded from ``train.seed`` (tests).

The teacher backbone is built for the position table the file holds (518 px for hub files): inputs of other sizes
interpolate it at run time, exactly as the released model does.

:class:`TeacherHead` is :class:`dinov2.layers.dino_head.DINOHead` with DINOv3's split forward, so several students
can exchange the teacher's bottleneck vectors rather than its prototype logits.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch import nn

from dinov2.layers.dino_head import DINOHead
from dinov2.models import build_model
from dinov2.models.convert import flat_to_chunked, strip_prefix
from dinov2.train.distillation.config import load_teacher_config
from dinov2.train.distillation.teacher_weights import (
    IGNORE,
    read_teacher_shapes,
    read_teacher_weights,
    teacher_fingerprint,
)
from dinov2.train.heads import heads_for
from dinov2.utils.config import ConfigValueError

logger = logging.getLogger("dinov2")

__all__ = ["TeacherFileCheck", "TeacherHead", "TeacherPlan", "build_teacher", "build_teacher_backbone", "plan_teacher"]


class TeacherHead(DINOHead):
    """A :class:`DINOHead` whose forward can stop at, or start from, the L2-normalised bottleneck.

    ``forward(x)`` is the head; ``forward(x, no_last_layer=True)`` returns the normalised bottleneck
    ``[..., bottleneck_dim]``; ``forward(z, only_last_layer=True)`` applies the prototype layer to it. Going through
    ``forward`` (DINOv3's keywords) keeps FSDP's gathering of the weights. State-dict keys are DINOHead's.
    """

    def forward(self, x: torch.Tensor, *, no_last_layer: bool = False, only_last_layer: bool = False) -> torch.Tensor:
        if only_last_layer:
            return self.last_layer(x)
        x = self.mlp(x)
        eps = 1e-6 if x.dtype == torch.float16 else 1e-12
        x = F.normalize(x, p=2, dim=-1, eps=eps)
        return x if no_last_layer else self.last_layer(x)


@dataclasses.dataclass(frozen=True)
class TeacherPlan:
    """What :func:`build_teacher` will build and load, decided from the configs and the file's keys."""

    teacher_cfg: DictConfig
    path: str  # distillation.checkpoint_path
    heads: tuple[str, ...]  # head names of the teacher (dino_head, ibot_head)
    fresh_heads: bool
    img_size: int  # the backbone's position-table size in pixels
    seed: int  # train.seed: random heads / random teacher


def plan_teacher(cfg: DictConfig) -> TeacherPlan:
    """Check the distillation settings against the teacher config and file; raises naming the key to change."""
    teacher_cfg = load_teacher_config(cfg)
    path, heads_mode = str(cfg.distillation.checkpoint_path), cfg.distillation.teacher_heads
    heads = tuple(heads_for(teacher_cfg).names)
    patch = teacher_cfg.student.patch_size
    if not path:
        raise ConfigValueError(
            "distillation.checkpoint_path is empty: set it to the teacher's weights (eval/training_<it>/"
            "teacher_checkpoint.pth of its run, a checkpoint folder model_<it>, or a hub backbone file with "
            f"distillation.teacher_heads=fresh); '{IGNORE}' gives a random teacher (tests only)"
        )
    if path == IGNORE:
        img_size = _first_size(teacher_cfg.crops.global_crops_size)
        return TeacherPlan(teacher_cfg, path, heads, True, img_size, cfg.train.seed)
    shapes = read_teacher_shapes(path)
    has_heads = any(key.startswith("dino_head.") for key in shapes)
    if heads_mode == "checkpoint" and not has_heads:
        raise ConfigValueError(
            f"distillation.checkpoint_path={path} holds a backbone only (a released hub file?) but "
            "distillation.teacher_heads=checkpoint needs the teacher's trained DINO/iBOT heads: use the "
            "teacher_checkpoint.pth export of the teacher's training run, or set distillation.teacher_heads=fresh "
            "(new frozen heads seeded from train.seed; not the paper's recipe)"
        )
    if heads_mode == "fresh" and has_heads:
        raise ConfigValueError(
            f"distillation.checkpoint_path={path} holds trained teacher heads, which distillation.teacher_heads=fresh "
            "would replace by random ones: set distillation.teacher_heads=checkpoint"
        )
    if "backbone.pos_embed" in shapes:
        img_size = math.isqrt(shapes["backbone.pos_embed"][1] - 1) * patch
    elif any(key.startswith("backbone.") for key in shapes):  # DINOv3 (RoPE, ConvNeXt): no position table
        img_size = _first_size(teacher_cfg.crops.global_crops_size)
    else:
        raise ConfigValueError(f"distillation.checkpoint_path={path} holds no backbone (no backbone.* tensor)")
    return TeacherPlan(teacher_cfg, path, heads, heads_mode == "fresh", img_size, cfg.train.seed)


def _first_size(size) -> int:
    """A crop size, or the first of DINOv3's multi-resolution list (the size a RoPE / ConvNeXt teacher ignores)."""
    return int(size[0]) if isinstance(size, Sequence) and not isinstance(size, str) else int(size)


def build_teacher_backbone(plan: TeacherPlan) -> tuple[nn.Module, int]:
    """(the teacher backbone with random or uninitialised weights, its embed dim), per the teacher's config: the
    one place the frozen teacher's backbone is constructed."""
    return build_model(plan.teacher_cfg.student, only_teacher=True, img_size=plan.img_size)


def _build_modules(plan: TeacherPlan, *, heads_only: bool = False) -> dict[str, nn.Module]:
    """The teacher's backbone and heads (only the heads, sized for the backbone, with ``heads_only``)."""
    with torch.device("meta") if heads_only else contextlib.nullcontext():
        backbone, embed_dim = build_teacher_backbone(plan)
    modules: dict[str, nn.Module] = {} if heads_only else {"backbone": backbone}
    modules.update(heads_for(plan.teacher_cfg).build(embed_dim, head_class=TeacherHead))  # plan.heads, in order
    return modules


def _seeded(plan: TeacherPlan, **kwargs) -> dict[str, nn.Module]:
    """Modules initialised from ``train.seed`` without touching the global random stream."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(plan.seed)
        return _build_modules(plan, **kwargs)


def _check_keys(expected: dict[str, torch.Size], found: dict[str, tuple[int, ...]], plan: TeacherPlan) -> None:
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    mismatched = [f"{k} {found[k]} vs {tuple(v)}" for k, v in expected.items() if k in found and tuple(v) != found[k]]
    if missing or unexpected or mismatched:
        raise ConfigValueError(
            f"distillation.checkpoint_path={plan.path} does not fit the teacher described by distillation."
            f"full_cfg_path ({plan.teacher_cfg.student.arch}, patch {plan.teacher_cfg.student.patch_size}, "
            f"heads {list(plan.heads)}): missing {missing[:8]}, unexpected {unexpected[:8]}, shapes (file vs "
            f"model) {mismatched[:8]}. Check the teacher config's student.*, dino.* and ibot.* keys against the file"
        )


def build_teacher(plan: TeacherPlan) -> nn.ModuleDict:
    """The frozen teacher (``backbone`` + heads), loaded per the plan, in eval mode without gradients."""
    if plan.path == IGNORE:
        teacher = nn.ModuleDict(_seeded(plan))
    else:
        with torch.device("meta"):
            teacher = nn.ModuleDict(_build_modules(plan))
        chunks = plan.teacher_cfg.student.block_chunks
        depth = teacher.backbone.n_blocks
        expected = {k: v.shape for k, v in teacher.state_dict().items()}
        file_shapes = flat_to_chunked(read_teacher_shapes(plan.path), depth=depth, block_chunks=chunks)
        if plan.fresh_heads:
            expected = {k: v for k, v in expected.items() if k.startswith("backbone.")}
        _check_keys(expected, file_shapes, plan)
        teacher.to_empty(device="cpu")
        if plan.fresh_heads:
            for name, head in _seeded(plan, heads_only=True).items():
                teacher[name] = head
        weights = flat_to_chunked(read_teacher_weights(plan.path), depth=depth, block_chunks=chunks)
        for name, module in teacher.items():  # every module strictly (fresh heads: the backbone only is read)
            if name == "backbone" or not plan.fresh_heads:
                module.load_state_dict(strip_prefix(weights, f"{name}.", keep_others=False), strict=True)
        logger.info("loaded the frozen teacher (%s) from %s", plan.teacher_cfg.student.arch, plan.path)
    if plan.path == IGNORE:
        logger.warning(
            "random teacher (distillation.checkpoint_path=%s, seed %d): tests and benchmarks only", IGNORE, plan.seed
        )
    elif plan.fresh_heads:
        logger.warning("random teacher heads %s (seed %d): not the paper's recipe", list(plan.heads), plan.seed)
    teacher.requires_grad_(False)
    return teacher.eval()


class TeacherFileCheck:
    """Checkpoint entry (a ``Checkpointer`` stateful object) holding the teacher file's fingerprint.

    Saved with every checkpoint; on resume, ``load_state_dict`` compares the saved fingerprint with the teacher
    file loaded now and refuses to continue when the content differs (the student was trained against another
    teacher). A moved but identical file is accepted.
    """

    def __init__(self, path: str) -> None:
        self.fingerprint = teacher_fingerprint(path)

    def state_dict(self) -> dict[str, object]:
        return dict(self.fingerprint)

    def load_state_dict(self, saved: dict[str, object]) -> None:
        now = self.fingerprint
        if (saved["size"], saved["crc32"]) != (now["size"], now["crc32"]):
            raise RuntimeError(
                f"the distillation teacher changed since this run started: distillation.checkpoint_path was "
                f"{saved['path']} ({saved['size']} bytes, CRC32 {saved['crc32']:08x}), now {now['path']} "
                f"({now['size']} bytes, CRC32 {now['crc32']:08x}). Restore the original teacher file, or start a new "
                "run (another --output-dir, or --no-resume)"
            )
        if saved["path"] != now["path"]:
            logger.info("distillation teacher moved from %s to %s (same content)", saved["path"], now["path"])
