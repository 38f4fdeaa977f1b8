"""Supervised fine-tuning: it beats the linear probe of the frozen backbone, resumes exactly, exports a backbone the
door loads, fine-tunes a DINOv3 backbone (RoPE augmentation off), and its pieces (unfreezing, lr decay groups)."""

from __future__ import annotations

import json
import math

import pytest
import torch

from dinov2.eval.finetune import FineTuneClassifier, optimizer_groups, run_finetune, set_trainable
from dinov2.features import load_backbone
from dinov2.models.vision_transformer import DinoVisionTransformer
from dinov2.models.vision_transformer_v3 import DinoVisionTransformerV3

# 32 px crops of the 40 px images; results and measurements on a budget (the protocol's defaults are ImageNet's)
QUICK = dict(batch_size=16, num_workers=0, crop_size=32, avgpool=True, layer_decay=1.0)
NO_MEASURES = dict(nb_knn=(), probe_iterations=0)


def _run(weights, shapes, output_dir, **kwargs):
    loaded = load_backbone(weights, device="cpu")
    options = {**QUICK, "train_dataset_str": shapes.train, "val_dataset_str": shapes.val, **kwargs}
    return run_finetune(loaded, output_dir=output_dir, **options)


def _export(output_dir) -> dict[str, torch.Tensor]:
    (path,) = output_dir.glob("eval/finetune_*/teacher_checkpoint.pth")
    return torch.load(path, map_location="cpu", weights_only=True)["teacher"]


@pytest.fixture(scope="module")
def finetuned(v2_weights, shapes, tmp_path_factory):
    """180 iterations (30 epochs of 6) of full fine-tuning of the random tiny ViT, with k-NN and probe numbers."""
    output_dir = tmp_path_factory.mktemp("finetune_run")
    measures = dict(nb_knn=(5,), probe_learning_rates=(1e-3, 1e-2, 0.1, 1.0), probe_iterations=50)
    results = _run(v2_weights, shapes, output_dir, epochs=30, lr=5e-2, **measures)
    return results, output_dir


@pytest.mark.slow
def test_fine_tuning_beats_the_linear_probe_of_the_frozen_backbone(finetuned):
    results, output_dir = finetuned
    # measured with run seeds 0 / 1 / 2: fine-tuned 65.6 / 65.6 / 67.2 vs probe 50.0 / 53.1 / 51.6 (+12.5 at least);
    # k-NN k=5 40.6 -> 70.3 / 75.0 / 67.2 (+26.6 at least); 64 val images: one image is 1.6 points
    assert results["finetuned"]["top-1"] >= results["before"]["linear"]["top-1"] + 10.0
    assert results["after"]["knn"]["k=5"] >= results["before"]["knn"]["k=5"] + 20.0
    assert results["after"]["linear"]["top-1"] > results["before"]["linear"]["top-1"]
    lines = [json.loads(line) for line in (output_dir / "results_eval_finetune.json").read_text().splitlines()]
    assert {"finetuned top-1": results["finetuned"]["top-1"]} in lines
    detailed = json.loads((output_dir / "results_eval_finetune_detailed.json").read_text())
    assert detailed["iterations"] == 180 and detailed["recipe"]["warmup_iters"] == 6


@pytest.mark.slow
def test_the_export_loads_through_the_backbone_door_and_the_head_in_the_hub_format(finetuned, v2_weights):
    results, output_dir = finetuned
    exported = load_backbone(results["files"]["backbone"], device="cpu")
    start = load_backbone(v2_weights, device="cpu").model.state_dict()
    assert exported.family == "dinov2_vit" and exported.num_extra_tokens == 2  # cls + the register
    state = exported.model.state_dict()
    assert state.keys() == start.keys() and any(not torch.equal(state[k], start[k]) for k in state)
    head = torch.load(output_dir / "linear_head.pth", weights_only=True)  # 1 block + avgpool: the hub layout
    assert head["weight"].shape == (4, 2 * 32) and results["files"]["head_layers"] == 1


def test_resume_is_exact(v2_weights, shapes, tmp_path):
    """Stopped after 3 of 6 iterations and resumed: the same final weights as an uninterrupted run."""
    recipe = dict(epochs=2, epoch_length=3, lr=5e-2, warmup_epochs=0.5, **NO_MEASURES)
    _run(v2_weights, shapes, tmp_path / "once", **recipe)
    stopped = _run(v2_weights, shapes, tmp_path / "twice", stop_after=3, **recipe)
    assert stopped["iteration"] == 3 and not list((tmp_path / "twice").glob("eval"))
    assert [p.name for p in (tmp_path / "twice" / "checkpoints").glob("model_*")] == ["model_0000002"]
    _run(v2_weights, shapes, tmp_path / "twice", **recipe)
    once, twice = _export(tmp_path / "once"), _export(tmp_path / "twice")
    assert once.keys() == twice.keys()
    for key in once:
        torch.testing.assert_close(twice[key], once[key], rtol=0, atol=0, msg=key)
    start = torch.load(v2_weights, weights_only=True)
    assert any(not torch.equal(once[f"backbone.{key}"], value) for key, value in start.items())  # it trained


def test_a_dinov3_backbone_fine_tunes_and_its_export_loads(v3_weights, shapes, tmp_path):
    results = _run(v3_weights, shapes, tmp_path, epochs=1, epoch_length=4, lr=5e-2, **NO_MEASURES)
    exported = load_backbone(results["files"]["backbone"], device="cpu")
    assert exported.family == "dinov3_vit" and exported.num_extra_tokens == 3  # cls + 2 storage tokens
    start = load_backbone(v3_weights, device="cpu").model.state_dict()
    state = exported.model.state_dict()
    assert any(not torch.equal(state[k], start[k]) for k in state)
    assert 0.0 <= results["finetuned"]["top-1"] <= 100.0


def test_rope_augmentation_is_off_while_fine_tuning_unless_asked():
    torch.manual_seed(0)
    backbone = DinoVisionTransformerV3(
        patch_size=8, embed_dim=32, depth=1, num_heads=2, pos_embed_rope_rescale_coords=2.0, pos_embed_rope_dtype="fp32"
    )
    backbone.init_weights()
    images = torch.randn(2, 3, 32, 32)
    for augment in (False, True):
        model = FineTuneClassifier(backbone, 32, 3, rope_augmentation=augment).train()
        assert model.training and model.head.training
        with torch.no_grad():
            first, second = model(images), model(images)
        assert torch.equal(first, second) != augment


def _four_blocks(chunks: int = 0):
    torch.manual_seed(0)
    options = dict(init_values=1.0, block_chunks=chunks)
    return DinoVisionTransformer(img_size=16, patch_size=8, embed_dim=16, depth=4, num_heads=2, **options)


@pytest.mark.parametrize("chunks", [0, 2])
def test_unfreezing_the_last_blocks(chunks):
    backbone = _four_blocks(chunks)
    set_trainable(backbone, 1)
    trained = {name for name, p in backbone.named_parameters() if p.requires_grad}
    last = "blocks.3." if chunks == 0 else "blocks.1.3."
    assert trained and all(name.startswith((last, "norm.")) for name in trained)
    assert set_trainable(backbone, 0) == 0
    assert set_trainable(backbone, None) == sum(p.numel() for p in backbone.parameters()) - backbone.mask_token.numel()
    with pytest.raises(ValueError, match="has 4 blocks"):
        set_trainable(backbone, 5)


def test_layer_wise_lr_decay_groups():
    """Tokens and patch embedding r^5 (x the patch-embed multiplier), block i r^(4-i), final norm and head 1; no
    weight decay on biases, norms and LayerScale gammas."""
    model = FineTuneClassifier(_four_blocks(), 16, 3)
    set_trainable(model.backbone, None)
    r = 0.5
    by_name = {}
    for group in optimizer_groups(model, r, patch_embed_lr_mult=0.2):
        for param in group["params"]:
            by_name[param] = (group["lr_multiplier"], group["wd_multiplier"])
    names = {name: by_name[p] for name, p in model.named_parameters() if p.requires_grad}
    assert "backbone.mask_token" not in names  # unused by a classification forward: frozen
    assert math.isclose(names["backbone.cls_token"][0], r**5)
    assert math.isclose(names["backbone.patch_embed.proj.weight"][0], 0.2 * r**5)
    for i in range(4):
        assert math.isclose(names[f"backbone.blocks.{i}.attn.qkv.weight"][0], r ** (4 - i))
    assert names["backbone.norm.weight"] == (1.0, 0.0) and names["head.linear.weight"] == (1.0, 1.0)
    assert names["head.linear.bias"][1] == 0.0 and names["backbone.blocks.0.ls1.gamma"][1] == 0.0


@pytest.mark.cuda
@pytest.mark.parametrize("amp_dtype", [torch.bfloat16, torch.float16])
def test_mixed_precision_on_cuda(amp_dtype, v2_weights, shapes, tmp_path):
    """bf16 autocast, or fp16 with a gradient scaler: the weights stay float32 and change, the numbers are finite."""
    results = _run(v2_weights, shapes, tmp_path, epochs=1, epoch_length=4, lr=5e-2, amp_dtype=amp_dtype, **NO_MEASURES)
    assert math.isfinite(results["finetuned"]["top-1"])
    exported = _export(tmp_path)
    start = torch.load(v2_weights, weights_only=True)
    assert all(value.dtype == torch.float32 for value in exported.values())
    assert any(not torch.equal(exported[f"backbone.{key}"], value) for key, value in start.items())


def test_a_k_larger_than_the_train_set_is_refused_before_any_work(v2_weights, shapes, tmp_path):
    """The default k-NN measure (k up to 200) on a small dataset: an error naming --nb-knn, nothing written."""
    fits = r"--nb-knn 200 is larger than the train set \(\d+ images\); use k <= \d+, e.g. --nb-knn 10 20"
    with pytest.raises(ValueError, match=fits):
        _run(v2_weights, shapes, tmp_path / "run", epochs=1)
    assert not (tmp_path / "run" / "checkpoints").exists()
