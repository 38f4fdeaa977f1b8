"""The packaged YAML configs hold the released keys and values, and every one loads and validates."""

from __future__ import annotations

import subprocess
import sys

import pytest
from omegaconf import OmegaConf

import dinov2.configs as configs
from dinov2.utils.config import load_cfg

# not training configs: the curation presets and the dense probes' recipes
NOT_TRAINING = ("curation/", "eval/segmentation/", "eval/depth/", "train/dinotxt")
ALL_CONFIGS = [c for c in configs.available_configs() if not c.startswith(NOT_TRAINING)]
# DINOv3's defaults and training configs load over DINOv3's defaults, not the DINOv2 ones this file checks:
# tests/train/test_dinov3_configs.py and tests/config/test_dinov3.py test them.
DINOV3_CONFIGS = {c for c in ALL_CONFIGS if c.startswith("train/dinov3/") or c == "ssl_default_config_dinov3"}
DINOV3_CONFIGS.add("train/adapt_dinov3_vitl16")  # tests/train/test_adapt_presets.py
DINOV3_CONFIGS.add("train/demo_cpu_dinov3")  # tests/train/test_gram_demo.py
DINOV2_CONFIGS = [c for c in ALL_CONFIGS if c not in DINOV3_CONFIGS]


def _flatten(tree, prefix=""):
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _precision(reduce_dtype):
    mixed = {"param_dtype": "fp16", "reduce_dtype": reduce_dtype, "buffer_dtype": "fp32"}
    return {"sharding_strategy": "SHARD_GRAD_OP", "mixed_precision": mixed}


# The released ssl_default_config.yaml (facebookresearch/dinov2, with the register-token keys), key order included.
RELEASED_DEFAULT_TREE = {
    "MODEL": {"WEIGHTS": ""},
    "compute_precision": {
        "grad_scaler": True,
        "teacher": {"backbone": _precision("fp16"), "dino_head": _precision("fp16"), "ibot_head": _precision("fp16")},
        "student": {"backbone": _precision("fp16"), "dino_head": _precision("fp32"), "ibot_head": _precision("fp32")},
    },
    "dino": {
        "loss_weight": 1.0,
        "head_n_prototypes": 65536,
        "head_bottleneck_dim": 256,
        "head_nlayers": 3,
        "head_hidden_dim": 2048,
        "koleo_loss_weight": 0.1,
    },
    "ibot": {
        "loss_weight": 1.0,
        "mask_sample_probability": 0.5,
        "mask_ratio_min_max": [0.1, 0.5],
        "separate_head": False,
        "head_n_prototypes": 65536,
        "head_bottleneck_dim": 256,
        "head_nlayers": 3,
        "head_hidden_dim": 2048,
    },
    "train": {
        "batch_size_per_gpu": 64,
        "dataset_path": "ImageNet:split=TRAIN",
        "output_dir": ".",
        "saveckp_freq": 20,
        "seed": 0,
        "num_workers": 10,
        "OFFICIAL_EPOCH_LENGTH": 1250,
        "cache_dataset": True,
        "centering": "centering",
    },
    "student": {
        "arch": "vit_large",
        "patch_size": 16,
        "drop_path_rate": 0.3,
        "layerscale": 1.0e-05,
        "drop_path_uniform": True,
        "pretrained_weights": "",
        "ffn_layer": "mlp",
        "block_chunks": 0,
        "qkv_bias": True,
        "proj_bias": True,
        "ffn_bias": True,
        "num_register_tokens": 0,
        "interpolate_antialias": False,
        "interpolate_offset": 0.1,
    },
    "teacher": {
        "momentum_teacher": 0.992,
        "final_momentum_teacher": 1,
        "warmup_teacher_temp": 0.04,
        "teacher_temp": 0.07,
        "warmup_teacher_temp_epochs": 30,
    },
    "optim": {
        "epochs": 100,
        "weight_decay": 0.04,
        "weight_decay_end": 0.4,
        "base_lr": 0.004,
        "lr": 0.0,
        "warmup_epochs": 10,
        "min_lr": 1.0e-06,
        "clip_grad": 3.0,
        "freeze_last_layer_epochs": 1,
        "scaling_rule": "sqrt_wrt_1024",
        "patch_embed_lr_mult": 0.2,
        "layerwise_decay": 0.9,
        "adamw_beta1": 0.9,
        "adamw_beta2": 0.999,
    },
    "crops": {
        "global_crops_scale": [0.32, 1.0],
        "local_crops_number": 8,
        "local_crops_scale": [0.05, 0.32],
        "global_crops_size": 224,
        "local_crops_size": 96,
    },
    "evaluation": {"eval_period_iterations": 12500},
}

_LARGE_RUN = {
    "dino.head_n_prototypes": 131072, "dino.head_bottleneck_dim": 384, "ibot.separate_head": True,
    "ibot.head_n_prototypes": 131072, "train.dataset_path": "ImageNet22k", "train.centering": "sinkhorn_knopp",
    "student.patch_size": 14, "student.drop_path_rate": 0.4, "student.ffn_layer": "swiglufused",
    "student.block_chunks": 4, "teacher.momentum_teacher": 0.994, "optim.epochs": 500, "optim.weight_decay_end": 0.2,
    "optim.base_lr": 2.0e-04, "optim.warmup_epochs": 80, "optim.layerwise_decay": 1.0, "crops.local_crops_size": 98,
}  # fmt: skip
_EVAL = {"student.patch_size": 14, "crops.global_crops_size": 518, "crops.local_crops_size": 98}
_REG4 = {"student.num_register_tokens": 4, "student.interpolate_antialias": True, "student.interpolate_offset": 0.0}
_ARCHS = {"vits14": "vit_small", "vitb14": "vit_base", "vitl14": "vit_large", "vitg14": "vit_giant2"}

RELEASED_DEFAULTS = _flatten(RELEASED_DEFAULT_TREE)
# Keys this implementation adds to the defaults (a section of their own, after the released ones).
EXTENSION_DEFAULTS = {
    "student.use_xformers": False,
    "checkpointing.period": 0,
    "checkpointing.max_to_keep": 3,
    "optim.adamw_fused": None,
    "tracking.tensorboard": False,
    "tracking.knn.period_iterations": 0,
    "tracking.knn.train_dataset": "",
    "tracking.knn.val_dataset": "",
    "tracking.knn.nb_knn": [10, 20],
    "tracking.knn.temperature": 0.07,
    "tracking.knn.crop_size": 224,
    "tracking.knn.resize_size": None,
    "tracking.knn.batch_size": 128,
    "tracking.knn.num_workers": 0,
    # DINOv3's names for what DINOv2 never had
    "MODEL.META_ARCHITECTURE": "SSLMetaArch",
    "train.checkpointing": False,
    "train.compile": False,
    "train.data_device": "cpu",  # dinov2/data/gpu_augment.py
    "distillation.enabled": False,
    "distillation.full_cfg_path": "",
    "distillation.checkpoint_path": "",
    "multidistillation.enabled": False,
    "multidistillation.global_batch_size": 0,
    "multidistillation.students": [],
    # project additions to the distillation keys
    "distillation.teacher_heads": "checkpoint",
    "distillation.mask_student": False,
    "distillation.ibot_tokens": "masked",
    # DINOv3's Gram anchoring and high-resolution keys (dinov2/train/gram.py, dinov2/data/crop_sizes.py)
    "crops.global_local_crop_pairs_ratios": 1.0,
    "crops.gram_teacher_crops_size": None,
    "crops.gram_teacher_no_distortions": False,
    "crops.localcrops_subset_of_globalcrops": False,
    "crops.share_color_jitter": False,
    "crops.horizontal_flips": True,
    "gram.use_loss": False,
    "gram.compute_stats": False,
    "gram.loss_weight": 1.0,
    "gram.loss_weight_schedule": None,
    "gram.ema_teacher": False,
    "gram.ckpt": None,
    "gram.it_load_ema_teacher": -1,
    "gram.rep_update": True,
    "gram.update_frequency": 50000,
    "gram.it_first_update": 0,
    "gram.max_updates": None,
    "gram.normalized": True,
    "gram.img_level": False,
    "gram.remove_neg": False,
    "gram.remove_only_teacher_neg": False,
    "gram.tokens_used": "all",
    "gram.global_teacher_resize_method": "bicubic",
    "gram.global_teacher_resize_antialias": False,
    # adapting a released backbone (dinov2/train/adapt.py, dinov2/train/collapse_guard.py)
    "adapt.pretrained_heads": "",
    "adapt.head_warmup_iterations": 0,
    "adapt.backbone_lr_ramp_iterations": 0,
    "adapt.collapse_guard.period_iterations": 0,
    "adapt.collapse_guard.action": "warn",
    "adapt.collapse_guard.max_target_entropy": None,
    "adapt.collapse_guard.min_target_perplexity": None,
    "adapt.collapse_guard.min_cls_std": None,
    "adapt.collapse_guard.min_cls_effective_rank": None,
    "adapt.collapse_guard.max_knn_drop": None,
}

# Released file name -> its exact content (flattened).
RELEASED_FILES = {
    "train/vitl16_short": {
        "train.dataset_path": "ImageNet:split=TRAIN", "train.batch_size_per_gpu": 64, "student.block_chunks": 4
    },
    "train/vitl14": {**_LARGE_RUN, "train.batch_size_per_gpu": 32, "student.arch": "vit_large"},
    "train/vitg14": {**_LARGE_RUN, "train.batch_size_per_gpu": 12, "student.arch": "vit_giant2"},
    **{
        f"eval/{name}{reg}_pretrain": {
            "student.arch": arch,
            **_EVAL,
            **({"student.ffn_layer": "swiglufused"} if arch == "vit_giant2" else {}),
            **(_REG4 if reg else {}),
        }
        for name, arch in _ARCHS.items()
        for reg in ("", "_reg4")
    },
}  # fmt: skip


def _flat(name):
    return _flatten(OmegaConf.to_container(configs.load_config(name)))


def test_default_config_is_the_released_one_plus_extensions():
    flat = _flat("ssl_default_config")
    assert [k for k in flat if k not in EXTENSION_DEFAULTS] == list(RELEASED_DEFAULTS)  # same keys, same order
    assert flat == {**RELEASED_DEFAULTS, **EXTENSION_DEFAULTS}
    assert all(type(flat[k]) is type(v) for k, v in RELEASED_DEFAULTS.items())


@pytest.mark.parametrize("name", sorted(RELEASED_FILES))
def test_released_file_content(name):
    assert _flat(name) == RELEASED_FILES[name]


# Not released: the CPU demos and the distillation recipes (tests/train/distillation/test_recipes.py).
PROJECT_FILES = {
    "ssl_default_config",
    "train/demo_cpu",
    "train/demo_cpu_distill",
    "train/vits14_distill_vitg14",
    "train/vitb14_distill_vitg14",
    "train/vitl14_distill_vitg14",
    "train/adapt_demo_cpu",
    "train/adapt_dinov2_vits14",
    "train/adapt_dinov2_vitb14",
    "train/adapt_dinov2_vitl14",
}


def test_every_released_file_is_packaged():
    assert set(RELEASED_FILES) | PROJECT_FILES == set(DINOV2_CONFIGS)
    # 13 released recipes, the DINOv3 adaptation preset and the DINOv3 demo
    assert "ssl_default_config_dinov3" in DINOV3_CONFIGS and len(DINOV3_CONFIGS) == 16


@pytest.mark.parametrize("name", DINOV2_CONFIGS)
def test_every_config_loads_and_validates(name, tmp_path):
    cfg = load_cfg(str(configs.config_path(name)), output_dir=str(tmp_path))
    expected = {**RELEASED_DEFAULTS, **EXTENSION_DEFAULTS, **_flat(name), "train.output_dir": str(tmp_path)}
    flat = _flatten(OmegaConf.to_container(cfg))
    if name == "train/demo_cpu":
        expected["train.dataset_path"] = f"Synthetic:root={tmp_path}/data:split=TRAIN:class_colours=true"  # resolved
    assert flat == expected


def test_load_and_merge_config_and_lazy_default():
    cfg = configs.load_and_merge_config("eval/vitg14_reg4_pretrain")
    assert cfg.student.arch == "vit_giant2" and cfg.student.num_register_tokens == 4 and cfg.optim.epochs == 100
    assert configs.dinov2_default_config.student.arch == "vit_large"
    assert configs.dinov2_default_config is configs.dinov2_default_config  # one shared object, as released
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        configs.nope  # noqa: B018


def test_importing_reads_no_config_file():
    code = (
        "import omegaconf\n"
        "def refuse(*a, **k): raise RuntimeError('read')\n"
        "omegaconf.OmegaConf.load = refuse\n"
        "import dinov2.configs, dinov2.utils.config\n"
        "try:\n    dinov2.configs.dinov2_default_config\nexcept RuntimeError:\n    print('lazy')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "lazy"
