"""Regenerate the seeded tensors of the depth reference ``tests/reference/depth_heads.pt`` (rules in its README)."""

from __future__ import annotations

import hashlib

import torch


def seeded_generator(text: str) -> torch.Generator:
    """Generator seeded with the first 8 bytes (little endian, top bit cleared) of ``sha256(text)``."""
    seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") & ((1 << 63) - 1)
    return torch.Generator().manual_seed(seed)


def make_tensor(rule: str, shape: list[int], generator: torch.Generator) -> torch.Tensor:
    if rule == "zeros":
        return torch.zeros(shape)
    if rule == "1+N(0,0.1)":
        return 1 + 0.1 * torch.randn(shape, generator=generator)
    if rule.startswith("U(") and rule.endswith(")"):
        low, high = (float(v) for v in rule[2:-1].split(","))
        return low + (high - low) * torch.rand(shape, generator=generator)
    if rule.startswith("N(0,") and rule.endswith(")"):
        return float(rule[4:-1]) * torch.randn(shape, generator=generator)
    raise ValueError(f"unknown generation rule {rule!r}")


def case_state_dict(case: dict, seed: str) -> dict[str, torch.Tensor]:
    """Every tensor of a case, regenerated from its rule and its ``seed/key`` generator."""
    return {
        key: make_tensor(case["rules"][key], shape, seeded_generator(f"{seed}/{key}"))
        for key, shape in case["keys"].items()
    }


def case_input(case_name: str, case: dict, seed: str) -> torch.Tensor:
    return torch.randn(case["input"].shape, generator=seeded_generator(f"{seed}/input/{case_name}"))


def tolerance(case: dict) -> float:
    return 1e-5 * case["output"].abs().max().item() + 10 * case["noise_maxabs"]
