"""DINOv3's released training configs (our equivalents under ``configs/train/dinov3/``): each loads and validates
unchanged (or names exactly the settings we do not implement), builds its models at full size on the meta device,
and, scaled down by overrides (tiny arch, tiny crops, CPU, fp32), runs a training step.

Importing this module registers the tiny DINOv3 archs ``vit3_test`` (32 wide, 2 blocks, 2 heads) and
``convnext_test`` (widths 8-16-16-32, one block per stage), shared with the distillation tests.
"""

from __future__ import annotations

import argparse
import math

import pytest
import torch

import dinov2.utils.config  # noqa: F401  (registers the checks)
from dinov2.config import UnimplementedConfigError, apply_scaling_rules, load_cfg
from dinov2.config.dinov3 import is_dinov3_form
from dinov2.data import MaskingGenerator, collate_data_and_cast
from dinov2.models import build_model_from_cfg
from dinov2.models import vision_transformer_v3 as vits3
from dinov2.models.dinov3_families import register_convnext_arch, register_vit_arch
from dinov2.train.checkpointing import Checkpointer, export_teacher
from dinov2.train.distillation.multi_setup import check_shared_settings, student_config
from dinov2.train.precision import PrecisionPolicy
from dinov2.train.pretrained import load_student_from_teacher_checkpoint
from dinov2.train.ssl_meta_arch import Batch, SSLMetaArch
from dinov2.train.train import build_optimizer, train_step
from dinov2.utils.schedules import build_schedulers
from tests.train.tiny import TINY_OPTS

# Module level: the distillation tests import these names from here.
register_vit_arch("vit3_test", 32, 2, 2, 4.0, exist_ok=True)
register_convnext_arch("test", [1, 1, 1, 1], [8, 16, 16, 32], exist_ok=True)

DATA = "train.dataset_path=ImageNet:split=TRAIN"  # the 7B configs leave it to the command line, as released
GLOBAL, LOCAL, PATCH = 64, 32, 16
# The scaled-down run: every recipe key kept but the sizes (and the CPU's fp32, no compile).
TINY_DINOV3 = [
    f"crops.global_crops_size={GLOBAL}",
    f"crops.local_crops_size={LOCAL}",
    "crops.local_crops_number=2",
    *(opt for opt in TINY_OPTS if opt.startswith(("dino.", "ibot."))),  # the tiny heads of the DINOv2 tests
    "train.batch_size_per_gpu=2",
    "train.num_workers=0",
    "train.OFFICIAL_EPOCH_LENGTH=1",
    "train.compile=false",
    "train.checkpointing=false",
    "compute_precision.param_dtype=fp32",
]

SSL = ["dinov3_vit7b16_pretrain", "vitl_im1k_lin834", "dinov3_vit7b16_gram_anchor", "dinov3_vit7b16_high_res_adapt"]
# Settings of the released files that this trainer does not implement (yet): the loader names exactly these.
NOT_IMPLEMENTED: dict[str, list[str]] = {}  # every released setting is implemented
IMPLEMENTED_VALUES: dict[str, str] = {}
ALL = [
    *SSL,
    "dinov3_vitl16_lvd1689m_distilled",  # its <...> placeholders are strings: it loads
    "multi_distillation_test",
    "multidist_tests/vits_p16",
    "multidist_tests/vitb_p16",
    *(f"distillation_convnext/convnext_{size}_p16" for size in ("tiny", "small", "base", "large")),
    "distillation_convnext/multi_distillation_convnext_test",
]


def dinov3_config(name: str, *opts: str, output_dir: str = "/tmp/unused"):
    """A shipped DINOv3 config with the released values, its unimplemented settings switched off, then ``opts``."""
    off = [f"{key}={IMPLEMENTED_VALUES[key]}" for key in NOT_IMPLEMENTED.get(name, [])]
    return load_cfg(f"configs/train/dinov3/{name}.yaml", [DATA, *off, *opts], output_dir=output_dir)


@pytest.mark.parametrize("name", ALL)
def test_loads_and_validates_unchanged(name):
    if name not in NOT_IMPLEMENTED:
        cfg = load_cfg(f"configs/train/dinov3/{name}.yaml", [DATA], output_dir="/tmp/unused")
        # A multi-distillation base file may name no student: each student's file makes its config DINOv3's.
        assert is_dinov3_form(cfg) or name == "multi_distillation_test"
        return
    with pytest.raises(UnimplementedConfigError) as info:
        load_cfg(f"configs/train/dinov3/{name}.yaml", [DATA], output_dir="/tmp/unused")
    message = str(info.value)
    assert f"{len(NOT_IMPLEMENTED[name])} DINOv3 setting(s)" in message
    for key in NOT_IMPLEMENTED[name]:
        assert f"  - {key}=" in message


def test_released_architectures_at_full_size_on_the_meta_device():
    sizes = {}
    for name in SSL:
        # the Gram teacher's file is given on the command line (building does not read it)
        opts = ["gram.ckpt=ignore"] if "high_res" in name else []
        with torch.device("meta"):
            model = SSLMetaArch(dinov3_config(name, *opts))
        sizes[name] = sum(p.numel() for p in model.student.backbone.parameters())
        assert not any(p.is_meta is False for p in model.parameters())
    assert sizes["dinov3_vit7b16_pretrain"] == 6_716_043_264  # dinov3_vit7b16 (research sheet §1)
    assert sizes["dinov3_vit7b16_gram_anchor"] == sizes["dinov3_vit7b16_high_res_adapt"] == 6_716_043_264
    assert sizes["vitl_im1k_lin834"] == 303_154_176 - 4 * 1024  # ViT-L/16 without the 4 storage tokens


@pytest.mark.parametrize(
    ("name", "params"),
    [
        ("distillation_convnext/convnext_tiny_p16", 27_820_128),  # research sheet §6 / dinov3_public.pt
        ("multidist_tests/vits_p16", 21_601_152 - 4 * 384),  # ViT-S/16 without the storage tokens
    ],
)
def test_distillation_students_at_full_size_on_the_meta_device(name, params):
    with torch.device("meta"):
        student, _, _ = build_model_from_cfg(dinov3_config(name))
    assert sum(p.numel() for p in student.parameters()) == params


def tiny_batch(n_images: int = 2, seed: int = 0, gram_size: int | None = None) -> Batch:
    """A collated batch of random crops at the tiny sizes (2 global crops of 32 px, 2 local of 16 px)."""
    g = torch.Generator().manual_seed(seed)
    samples = [
        (
            {
                "global_crops": [torch.randn(3, GLOBAL, GLOBAL, generator=g) for _ in range(2)],
                "local_crops": [torch.randn(3, LOCAL, LOCAL, generator=g) for _ in range(2)],
                **(
                    {"gram_teacher_crops": [torch.randn(3, gram_size, gram_size, generator=g) for _ in range(2)]}
                    if gram_size
                    else {}
                ),
            },
            (),
        )
        for _ in range(n_images)
    ]
    grid = GLOBAL // PATCH
    collated = collate_data_and_cast(
        samples,
        mask_ratio_tuple=(0.1, 0.5),
        mask_probability=1.0,
        dtype=torch.float32,
        n_tokens=grid * grid,
        mask_generator=MaskingGenerator(input_size=(grid, grid), max_num_patches=0.5 * grid * grid),
        local_crops_size=LOCAL,
    )
    return Batch.from_collated(collated, "cpu")


@pytest.mark.parametrize("name", ["dinov3_vit7b16_pretrain", "vitl_im1k_lin834"])
def test_scaled_down_training_step(name, tmp_path):
    cfg = apply_scaling_rules(dinov3_config(name, "student.arch=vit3_test", *TINY_DINOV3, output_dir=tmp_path), 1)
    torch.manual_seed(0)
    model = SSLMetaArch(cfg)
    model.train()
    model.precision = PrecisionPolicy.from_config(cfg, "cpu")
    optimizer = build_optimizer(cfg, model.get_params_groups())
    schedules = build_schedulers(cfg)
    iteration = 150  # inside the schedules: past the 7B's last-layer freeze (5 epochs of 1 iteration)
    before = [p.detach().clone() for p in model.student.parameters()]
    losses, _ = train_step(cfg, model, optimizer, tiny_batch(), schedules, iteration)
    assert set(losses) == {"dino_global_crops_loss", "dino_local_crops_loss", "koleo_loss", "ibot_loss"}
    assert all(math.isfinite(v) for v in losses.values())
    assert any(not torch.equal(b, a) for b, a in zip(before, model.student.parameters()))
    backbone = model.student.backbone
    assert (
        isinstance(backbone, vits3.DinoVisionTransformerV3)
        and backbone.n_storage_tokens == cfg.student.n_storage_tokens
    )


def test_resume_from_teacher_checkpoint_sets_student_heads_and_ema(tmp_path):
    cfg = dinov3_config("vitl_im1k_lin834", "student.arch=vit3_test", *TINY_DINOV3, output_dir=str(tmp_path))
    torch.manual_seed(5)
    source = SSLMetaArch(cfg)
    export = export_teacher(tmp_path / "teacher_checkpoint.pth", source.teacher)  # {"teacher": backbone + heads}
    torch.manual_seed(0)
    model = SSLMetaArch(cfg)
    load_student_from_teacher_checkpoint(model, str(export))
    expected = source.teacher.state_dict()
    for module in (model.student, model.teacher):
        state = module.state_dict()
        assert set(state) == set(expected) and all(torch.equal(state[k], v) for k, v in expected.items())
    other = SSLMetaArch(
        dinov3_config("vitl_im1k_lin834", "student.arch=vit3_test", *TINY_DINOV3, "dino.head_n_prototypes=32")
    )
    with pytest.raises(RuntimeError, match=r"student.resume_from_teacher_chkpt=.*does not fit the student"):
        load_student_from_teacher_checkpoint(other, str(export))


def test_keep_every_checkpoints_are_never_pruned(tmp_path):
    # checkpointing.keep_every (DINOv3): the checkpoint after a multiple of N iterations survives max_to_keep.
    model = torch.nn.Linear(2, 2)
    checkpointer = Checkpointer(tmp_path, keep=2, keep_every=4)
    for iteration in range(10):  # model_<iteration>: iteration + 1 iterations done
        checkpointer.save(iteration, {"model": model})
    assert sorted(p.name for p in checkpointer.list_checkpoints()) == [
        "model_0000003",
        "model_0000007",
        "model_0000008",
        "model_0000009",
    ]


@pytest.mark.parametrize(
    ("base", "archs"),
    [
        ("multi_distillation_test", ["vit_small", "vit_base"]),
        (
            "distillation_convnext/multi_distillation_convnext_test",
            [f"convnext_{s}" for s in ("tiny", "small", "base", "large")],
        ),
    ],
)
def test_multi_distillation_students_are_dinov3_configs(base, archs, tmp_path):
    args = argparse.Namespace(config_file=f"configs/train/dinov3/{base}.yaml", opts=[DATA], output_dir=str(tmp_path))
    students = list(load_cfg(args.config_file, args.opts, output_dir=str(tmp_path)).multidistillation.students)
    configs = {s["name"]: student_config(args, s, n_load=4, warn=False) for s in students}
    check_shared_settings(configs)
    assert [cfg.student.arch for cfg in configs.values()] == archs
    for cfg in configs.values():
        assert cfg.compute_precision.param_dtype == "bf16" and cfg.train.centering == "sinkhorn_knopp"
        assert cfg.distillation.full_cfg_path == "configs/train/dinov3/vitl_im1k_lin834.yaml"


def test_the_local_dino_term_follows_its_weight_schedule(tmp_path):
    """dino.reweight_dino_local_loss: the local DINO term times dino.local_loss_weight_schedule[iteration]."""
    schedule = "dino.local_loss_weight_schedule={start: 1, peak: 1, end: 0.5, warmup_epochs: 2, cosine_epochs: 2}"
    opts = ("student.arch=vit3_test", *TINY_DINOV3, "optim.epochs=10", schedule)
    terms = {}
    for reweight in ("false", "true"):
        cfg = dinov3_config("vitl_im1k_lin834", *opts, f"dino.reweight_dino_local_loss={reweight}")
        torch.manual_seed(0)
        model = SSLMetaArch(cfg)
        model.precision = PrecisionPolicy.from_config(cfg, "cpu")
        batch = tiny_batch()
        for iteration in (0, 3, 5):
            model.begin_iteration(iteration)
            with torch.no_grad():
                targets, outputs = model.teacher_targets(batch, 0.07), model.student_outputs(batch)
                losses = model.loss_terms(outputs, targets, batch)[0]
            terms[reweight, iteration] = float(losses["dino_local_crops_loss"])
    for iteration, weight in ((0, 1.0), (3, 0.5 + 0.25 * (1 + math.cos(math.pi))), (5, 0.5)):
        assert terms["true", iteration] == pytest.approx(weight * terms["false", iteration], rel=1e-6)


def test_dinov3_configs_get_dinov3_heads_with_a_plain_prototype_layer():
    from dinov2.train.heads import heads_for

    heads = heads_for(dinov3_config("vitl_im1k_lin834", *TINY_DINOV3)).build(32)
    for head in heads.values():
        assert isinstance(head.last_layer, torch.nn.Linear) and set(head.last_layer.state_dict()) == {"weight"}
        x = torch.randn(3, 32)
        expected = torch.nn.functional.normalize(head.mlp(x), dim=-1) @ head.last_layer.weight.T
        torch.testing.assert_close(head(x), expected)
    dinov2_heads = heads_for(load_cfg(None, list(TINY_OPTS), output_dir="/tmp/unused")).build(32)
    assert {"weight_g", "weight_v"} <= set(dinov2_heads["dino_head"].last_layer.state_dict())


# The Gram stages, scaled down: a tiny student; the Gram teacher copied from the EMA teacher (the released files take
# it from gram.ckpt, a file of stage 1), refreshed from iteration 1 on; the high-resolution stage with one size pair
# and Gram teacher crops at 1.5x the global crops, as released.
GRAM_STAGES = {
    "dinov3_vit7b16_gram_anchor": ["gram.ckpt=null", "gram.it_load_ema_teacher=0", "gram.it_first_update=1"],
    "dinov3_vit7b16_high_res_adapt": [
        "gram.ckpt=null",
        "gram.it_load_ema_teacher=0",
        f"crops.gram_teacher_crops_size={GLOBAL * 3 // 2}",
        "crops.global_local_crop_pairs_ratios=1.0",
        "student.resume_from_teacher_chkpt=",
        "dino.koleo_distributed_loss_group_size=2",  # groups of 16 images in the release; the tiny batch holds 2
    ],
}


@pytest.mark.parametrize("name", sorted(GRAM_STAGES))
def test_scaled_down_gram_stage_steps(name, tmp_path):
    opts = ("student.arch=vit3_test", *TINY_DINOV3, *GRAM_STAGES[name])
    cfg = apply_scaling_rules(dinov3_config(name, *opts, output_dir=tmp_path), 1)
    torch.manual_seed(0)
    model = SSLMetaArch(cfg)
    model.train()
    model.precision = PrecisionPolicy.from_config(cfg, "cpu")
    optimizer = build_optimizer(cfg, model.get_params_groups())
    schedules = build_schedulers(cfg)
    gram_size = cfg.crops.gram_teacher_crops_size
    losses = {}
    for iteration in (0, 1, 2):
        losses, _ = train_step(cfg, model, optimizer, tiny_batch(gram_size=gram_size), schedules, iteration)
    assert "gram_loss" in losses and all(math.isfinite(v) for v in losses.values())
    assert model.gram_teacher is not None


@pytest.mark.parametrize(
    ("name", "family"),
    [
        ("multidist_tests/vitb_p16", "DinoVisionTransformerV3"),
        *((f"distillation_convnext/convnext_{size}_p16", "ConvNeXt") for size in ("small", "base", "large")),
    ],
)
def test_the_other_distillation_students_at_full_size_on_the_meta_device(name, family):
    with torch.device("meta"):
        student, teacher, _ = build_model_from_cfg(dinov3_config(name))
    assert type(student).__name__ == type(teacher).__name__ == family
    assert all(p.is_meta for p in student.parameters())
