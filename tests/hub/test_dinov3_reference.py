"""DINOv3 hub backbones, GramLoss and RoPE against ``dinov3_public.pt`` (outputs of the released DINOv3 code)."""

from __future__ import annotations

import hashlib
import math

import pytest
import torch
from torch.testing import assert_close

from dinov2.hub import dinov3_backbones
from dinov2.layers import RopePositionEmbedding
from dinov2.loss import GramLoss
from tests.conftest import load_reference

REFERENCE = "dinov3_public.pt"
BACKBONE_TOLERANCE = {"dinov3_vits16": "backbone_vit", "dinov3_convnext_tiny": "backbone_convnext"}


def recipe(base_seed: int, key: str, shape) -> torch.Tensor:
    """The file's documented weight recipe: one seeded generator per parameter key."""
    g = torch.Generator().manual_seed(base_seed + int(hashlib.sha256(key.encode()).hexdigest()[:8], 16))
    z = torch.randn(shape, generator=g, dtype=torch.float32)
    leaf = key.rsplit(".", 1)[-1]
    if leaf == "gamma":
        return 0.1 + 0.05 * z
    if leaf in ("cls_token", "storage_tokens", "mask_token"):
        return 0.02 * z
    if leaf == "weight" and len(shape) == 1:
        return 1 + 0.1 * z
    if leaf == "bias":
        return 0.02 * z
    if len(shape) >= 2:
        return z / math.sqrt(z.numel() // shape[0])
    return 0.02 * z


def assert_matches(ours, ref, tol: dict, path: str) -> None:
    """Recursive comparison; sketches compare the sampled values and the three whole-tensor statistics."""
    if isinstance(ref, dict) and ref.get("__sketch__"):
        assert list(ours.shape) == list(ref["shape"]), path
        kw = {"rtol": tol["rtol"], "atol": tol["atol"], "msg": lambda m: f"{path}: {m}"}
        assert_close(ours.reshape(-1)[ref["idx"].long()], ref["val"], **kw)
        flat = ours.double().reshape(-1)
        for stat, value in (("mean", flat.mean()), ("mean_abs", flat.abs().mean()), ("rms", flat.pow(2).mean().sqrt())):
            assert_close(value, torch.as_tensor(ref[stat], dtype=torch.float64), **kw)
    elif isinstance(ref, dict):
        assert set(ours) == set(ref), path
        for key in ref:
            assert_matches(ours[key], ref[key], tol, f"{path}.{key}")
    elif isinstance(ref, (list, tuple)):
        assert len(ours) == len(ref), path
        for i, (a, b) in enumerate(zip(ours, ref)):
            assert_matches(a, b, tol, f"{path}[{i}]")
    elif ref is None:
        assert ours is None, path
    else:
        assert ours.dtype == ref.dtype and ours.shape == ref.shape, path
        assert_close(ours, ref, rtol=tol["rtol"], atol=tol["atol"], msg=lambda m: f"{path}: {m}")


def _model(name: str):
    G = load_reference(REFERENCE)
    entry = G["backbones"][name]
    model = getattr(dinov3_backbones, entry["entry"].rsplit(".", 1)[-1])(**entry["entry_kwargs"])
    return G, entry, model


@pytest.mark.parametrize("name", sorted(BACKBONE_TOLERANCE))
def test_constructed_state_matches_release(name):
    G, entry, model = _model(name)
    assert model.training == entry["config"]["training_after_construction"]
    ours = [[k, list(v.shape), str(v.dtype).removeprefix("torch.")] for k, v in model.state_dict().items()]
    assert ours == [row[:3] for row in entry["state_dict_keys"]]
    assert sorted(k for k, _ in model.named_parameters()) == sorted(k for k, _ in entry["param_keys"])
    state = model.state_dict()
    for key, buffer in entry["buffers"].items():
        assert_close(state[key], buffer, **G["tolerances"]["buffers"])


@pytest.mark.parametrize("name", sorted(BACKBONE_TOLERANCE))
def test_backbone_outputs_match_release(name):
    G, entry, model = _model(name)
    base_seed = G["recipe"]["base_seed"]
    state = {key: recipe(base_seed, key, shape) for key, shape in entry["param_keys"]}
    state.update(entry["buffers"])
    state.update({alias: state[target] for alias, target in entry["param_aliases"].items()})
    model.load_state_dict(state, strict=True)
    model.eval()
    tol = G["tolerances"][BACKBONE_TOLERANCE[name]]
    for case_name, case in entry["cases"].items():
        x = G["inputs"][case["input"]].float()
        for call_id, call in case["calls"].items():
            with torch.no_grad():
                if call_id == "forward_features":
                    out = model.forward_features(x, masks=case["masks"])
                elif call_id == "forward":
                    out = model(x)
                else:
                    out = model.get_intermediate_layers(x, **call["kwargs"])
            assert_matches(out, call["out"], tol, f"{name}/{case_name}/{call_id}")


@pytest.mark.parametrize("index", [0, 1])
def test_gram_loss_matches_release(index):
    G = load_reference(REFERENCE)
    case = G["gram"]["cases"][index]
    inputs = G["gram"]["inputs"][case["input"]]
    student = inputs["student"].clone().requires_grad_()
    loss = GramLoss(**case["init"])(student, inputs["teacher"].clone(), **case["forward"])
    loss.backward()
    assert_close(
        loss.detach(),
        case["loss"],
        atol=G["tolerances"]["gram_loss"]["atol"],
        rtol=G["tolerances"]["gram_loss"]["rtol"],
    )
    grad_tol = G["tolerances"]["gram_grad"]
    atol = grad_tol["atol_rel_to_max"] * case["grad_student"].abs().max().item()
    assert student.grad.dtype == case["grad_student"].dtype
    assert_close(student.grad, case["grad_student"], rtol=grad_tol["rtol"], atol=atol)


def test_gram_loss_rejects_what_release_rejects():
    for kwargs in load_reference(REFERENCE)["gram"]["invalid"]:
        with pytest.raises(ValueError):
            GramLoss(**kwargs)
    with pytest.raises(ValueError, match="remove_only_teacher_neg"):
        GramLoss(remove_neg=True, remove_only_teacher_neg=True)


def test_rope_matches_release():
    G = load_reference(REFERENCE)
    for case in G["rope"]["cases"]:
        kwargs = dict(case["kwargs"])
        embed_dim, dtype = kwargs.pop("embed_dim"), getattr(torch, kwargs.pop("dtype"))
        rope = RopePositionEmbedding(embed_dim, **kwargs, dtype=dtype).eval()
        assert_close(rope.periods, case["periods"], **G["tolerances"]["rope_periods"])
        for (h, w), (sin, cos) in zip(case["grids"], case["out"]):
            ours_sin, ours_cos = rope(H=h, W=w)
            assert ours_sin.dtype == getattr(torch, case["out_dtype"])
            assert_close(ours_sin, sin, **G["tolerances"]["rope"])
            assert_close(ours_cos, cos, **G["tolerances"]["rope"])
