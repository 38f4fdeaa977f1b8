"""A tiny student/teacher (MLP blocks, not the real ViT) and a DINO-like training loop for sharding tests.

The loop has the structure of the real one: teacher targets without gradients, student outputs,
a cross-entropy between them averaged over the local batch, backward, clipping per student
sub-module, AdamW step, EMA of the teacher. Functions are module-level so spawned processes can
import them.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dinov2.distributed import all_reduce
from dinov2.distributed.sharding import clip_grad_norm_
from dinov2.train.ema import ema_update

IN_DIM, DIM, OUT_DIM = 6, 8, 12

# FSDP2 on CPU reduces fp32 gradients with gloo's ReduceOp.AVG, which gloo gained in torch 2.7
# (pytorch#149781); torch 2.6 supports FSDP2 on CUDA/NCCL only.
requires_cpu_fsdp = pytest.mark.skipif(
    tuple(int(v) for v in torch.__version__.split(".")[:2]) < (2, 7), reason="FSDP2 on CPU/gloo needs torch >= 2.7"
)


class TinyBlock(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, 2 * dim)
        self.fc2 = nn.Linear(2 * dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.fc2(F.gelu(self.fc1(self.norm(x))))


class TinyBackbone(nn.Module):
    """``embed -> blocks -> norm``; ``blocks`` holds blocks, or chunks of blocks when ``block_chunks > 0``."""

    def __init__(self, depth: int = 4, block_chunks: int = 0) -> None:
        super().__init__()
        self.embed = nn.Linear(IN_DIM, DIM)
        self.cls_token = nn.Parameter(0.1 * torch.randn(1, DIM))  # a parameter owned by the root
        blocks = [TinyBlock(DIM) for _ in range(depth)]
        if block_chunks > 0:
            size = depth // block_chunks
            blocks = [nn.Sequential(*blocks[i : i + size]) for i in range(0, depth, size)]
        self.blocks = nn.ModuleList(blocks)
        self.norm = nn.LayerNorm(DIM)
        self.register_buffer("scale", torch.ones(DIM))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.embed(x) + self.cls_token  # [B, DIM]
        for block in self.blocks:
            x = block(x)
        return self.norm(x) * self.scale


def build(block_chunks: int = 0, seed: int = 0, depth: int = 4) -> tuple[nn.ModuleDict, nn.ModuleDict]:
    """Student ``{backbone, dino_head}`` and a teacher copy of it without gradients."""
    torch.manual_seed(seed)
    student = nn.ModuleDict(
        {
            "backbone": TinyBackbone(depth, block_chunks),
            "dino_head": nn.Sequential(nn.Linear(DIM, 16), nn.GELU(), nn.Linear(16, OUT_DIM)),
        }
    )
    teacher = copy.deepcopy(student)
    for p in teacher.parameters():
        p.requires_grad_(False)
    return student, teacher


def precision_cfg(student_strategy: str, teacher_strategy: str | None = None, dtype: str = "fp32") -> dict:
    """A ``compute_precision`` section with one strategy per role."""

    def section(strategy):
        return {
            "sharding_strategy": strategy,
            "mixed_precision": {"param_dtype": dtype, "reduce_dtype": dtype, "buffer_dtype": "fp32"},
        }

    teacher_strategy = teacher_strategy or student_strategy
    return {
        "student": {"backbone": section(student_strategy), "dino_head": section(student_strategy)},
        "teacher": {"backbone": section(teacher_strategy), "dino_head": section(teacher_strategy)},
    }


def global_batches(steps: int, batch: int = 8, seed: int = 1) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, IN_DIM, generator=generator) for _ in range(steps)]


def make_optimizer(student: nn.Module) -> torch.optim.Optimizer:
    return torch.optim.AdamW(student.parameters(), lr=0.05, weight_decay=0.04)


def train_step(student, teacher, optimizer, x_local, clip=0.05, momentum=0.9) -> tuple[torch.Tensor, list[float]]:
    """One step; returns (loss averaged over the local batch, per-sub-module gradient norms)."""
    with torch.no_grad():
        targets = F.softmax(teacher["dino_head"](teacher["backbone"](x_local)) / 0.1, dim=-1)  # [b, OUT]
    logits = student["dino_head"](student["backbone"](x_local))  # [b, OUT]
    loss = -(targets * F.log_softmax(logits / 0.2, dim=-1)).sum(-1).mean()
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    norms = [float(clip_grad_norm_(student[name].parameters(), clip)) for name in student]
    optimizer.step()
    ema_update(teacher.parameters(), student.parameters(), momentum)
    return loss.detach(), norms


def train(student, teacher, batches, rank: int = 0, world: int = 1, optimizer=None) -> dict:
    """Each rank takes its contiguous share of every global batch; losses are global means."""
    optimizer = optimizer or make_optimizer(student)
    losses, norms = [], []
    for x in batches:
        loss, step_norms = train_step(student, teacher, optimizer, x.chunk(world)[rank])
        all_reduce(loss)
        losses.append(loss.item() / world)
        norms.append(step_norms)
    return {"losses": losses, "norms": norms}


def full_state(module: nn.Module) -> dict[str, np.ndarray]:
    """Unsharded copies of a module's state (collective when sharded: call on every rank)."""
    from torch.distributed.tensor import DTensor

    out = {}
    for name, value in module.state_dict().items():
        if isinstance(value, DTensor):
            value = value.full_tensor()
        out[name] = value.detach().cpu().numpy().copy()
    return out
