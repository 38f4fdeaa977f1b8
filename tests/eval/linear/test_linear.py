"""Linear probe: input layout, grid facts, each classifier trained as if alone, resume, selection, hub export."""

import copy
import math

import pytest
import torch
import torch.nn as nn

from dinov2.eval.linear import (
    DEFAULT_LEARNING_RATES,
    best_hub_classifier,
    classifier_name,
    create_linear_input,
    make_optimizer,
    make_scheduler,
    score_linear_classifiers,
    select_best_classifier,
    setup_linear_classifiers,
    train_linear_classifiers,
    train_step,
)
from dinov2.eval.linear.checkpoint import (
    hub_linear_head_state_dict,
    last_checkpoint_path,
    load_linear_checkpoint,
    resume_or_load,
    save_hub_linear_head,
)
from dinov2.models.weights import NotAWeightsFileError
from tests.conftest import load_reference
from tests.dist_helpers import run_distributed

DIM, PATCHES, CLASSES = 16, 3, 3


class FakeBackbone(nn.Module):
    """Test double for a ViT's ``get_intermediate_layers(x, n=4, return_class_token=True)``:
    four fixed random projections of the flattened image into (patch [B, N, D], cls [B, D]) tokens."""

    def __init__(self, seed=0, depth=4):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.register_buffer("proj", torch.randn(depth, 3 * 4 * 4, (1 + PATCHES) * DIM, generator=g) / 7.0)

    def forward(self, images):
        x = images.flatten(1)  # [B, 48]
        blocks = []
        for proj in self.proj:
            tokens = (x @ proj).view(len(x), 1 + PATCHES, DIM)  # [B, 1 + N, D]
            blocks.append((tokens[:, 1:], tokens[:, 0]))
        return blocks


def make_batches(n_batches, batch_size=8, seed=0):
    """Random images labelled by a fixed linear teacher on the last cls token (learnable by the probes)."""
    g = torch.Generator().manual_seed(seed)
    teacher = torch.randn(DIM, CLASSES, generator=torch.Generator().manual_seed(99))
    batches = []
    for _ in range(n_batches):
        images = torch.randn(batch_size, 3, 4, 4, generator=g)
        batches.append((images, (FakeBackbone()(images)[-1][1] @ teacher).argmax(dim=1)))
    return batches


def make_grid(lrs=(0.05, 0.5), seed=0, batch_size=256, world_size=1):
    torch.manual_seed(seed)
    sample = FakeBackbone()(torch.zeros(1, 3, 4, 4))
    return setup_linear_classifiers(sample, (1, 4), lrs, batch_size, CLASSES, world_size=world_size)


def test_create_linear_input_matches_hub_lc_layout():
    x = [(torch.randn(2, 5, 4, dtype=torch.bfloat16), torch.randn(2, 4, dtype=torch.bfloat16)) for _ in range(4)]
    hub4 = torch.cat([x[0][1], x[1][1], x[2][1], x[3][1], x[3][0].mean(dim=1)], dim=1)  # hub _lc, layers=4
    hub1 = torch.cat([x[3][1], x[3][0].mean(dim=1)], dim=1)  # hub _lc, layers=1 (last block)
    torch.testing.assert_close(create_linear_input(x, 4, True), hub4.float(), rtol=0, atol=0)
    torch.testing.assert_close(create_linear_input(x, 1, True), hub1.float(), rtol=0, atol=0)
    torch.testing.assert_close(create_linear_input(x, 4, False), torch.cat([c for _, c in x], 1).float())
    assert create_linear_input(x, 1, False).dtype == torch.float32


def test_grid_names_lrs_order_and_init():
    classifiers, groups = make_grid(lrs=DEFAULT_LEARNING_RATES, batch_size=128, world_size=8)
    names = list(classifiers.classifiers_dict)
    assert len(names) == len(groups) == 2 * 2 * 13
    assert names[0] == "classifier_1_blocks_avgpool_False_lr_0_00004"  # 1e-5 * 128 * 8 / 256
    assert names[13] == "classifier_1_blocks_avgpool_True_lr_0_00004"
    assert names[-1] == "classifier_4_blocks_avgpool_True_lr_0_40000"
    assert [g["lr"] for g in groups[:3]] == pytest.approx([4e-5, 8e-5, 2e-4])
    first, last = classifiers.classifiers_dict[names[0]], classifiers.classifiers_dict[names[-1]]
    assert first.linear.in_features == DIM and last.linear.in_features == 5 * DIM
    weights = torch.cat([c.linear.weight.flatten() for c in classifiers.classifiers_dict.values()])
    assert 0.008 < weights.std().item() < 0.012
    assert all(c.linear.bias.abs().sum() == 0 for c in classifiers.classifiers_dict.values())
    # one process, batch 128: scaled lrs 5e-6 and 1e-5 both print as 0.00001 -> both get 10 decimals
    names = list(make_grid(lrs=(1e-5, 2e-5, 1e-3), batch_size=128)[0].classifiers_dict)
    assert names[:3] == [
        "classifier_1_blocks_avgpool_False_lr_0_0000050000",
        "classifier_1_blocks_avgpool_False_lr_0_0000100000",
        classifier_name(1, False, 5e-4),
    ]


def test_grid_trains_each_classifier_as_if_alone():
    backbone, batches = FakeBackbone(), make_batches(6)
    classifiers, groups = make_grid()
    initial = copy.deepcopy(classifiers)
    initial_weights = [c.linear.weight.clone() for c in initial.classifiers_dict.values()]
    lrs = [group["lr"] for group in groups]  # the optimizer's schedule updates the group dicts in place
    optimizer = make_optimizer(groups)
    scheduler = make_scheduler(optimizer, max_iter=6)
    for images, labels in batches:
        train_step(backbone, classifiers, optimizer, scheduler, images, labels)
    for (name, alone), lr, weight in zip(initial.classifiers_dict.items(), lrs, initial_weights):
        opt = torch.optim.SGD(alone.parameters(), lr=lr, momentum=0.9)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, 6)
        for images, labels in batches:
            loss = nn.functional.cross_entropy(alone(backbone(images)), labels)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        trained = classifiers.classifiers_dict[name]
        torch.testing.assert_close(trained.linear.weight, alone.linear.weight, rtol=0, atol=0)
        torch.testing.assert_close(trained.linear.bias, alone.linear.bias, rtol=0, atol=0)
        assert not torch.equal(alone.linear.weight, weight)  # it did train


def _run(tmp_path, batches, start=0, seed=0, max_iter=8):
    classifiers, groups = make_grid(seed=seed)
    optimizer = make_optimizer(groups)
    scheduler = make_scheduler(optimizer, max_iter)
    start_iter = resume_or_load(tmp_path, classifiers, optimizer, scheduler) if start is None else start
    train_linear_classifiers(
        feature_model=FakeBackbone(),
        classifiers=classifiers,
        optimizer=optimizer,
        scheduler=scheduler,
        train_data=batches[start_iter:],
        max_iter=max_iter,
        start_iter=start_iter,
        num_classes=CLASSES,
        output_dir=tmp_path,
        checkpoint_period=4,
    )
    return classifiers, optimizer, scheduler, start_iter


def test_resume_is_exact(tmp_path):
    batches = make_batches(8)
    straight = _run(tmp_path / "a", batches)
    (tmp_path / "b").mkdir()
    first = _run(tmp_path / "b", batches, max_iter=8)  # writes model_0000003 then model_0000007 / model_final
    assert sorted(p.name for p in (tmp_path / "b").glob("*.pth")) == ["model_0000003.pth", "model_0000007.pth"] + [
        "model_final.pth"
    ]
    # simulate a stop after iteration 3: point last_checkpoint at model_0000003 and resume in a fresh grid
    (tmp_path / "b" / "last_checkpoint").write_text("model_0000003.pth")
    resumed = _run(tmp_path / "b", batches, start=None, seed=123)
    assert resumed[3] == 4 and first[3] == 0
    for a, b in zip(straight[0].state_dict().values(), resumed[0].state_dict().values()):
        assert torch.equal(a, b)
    assert resumed[2].last_epoch == straight[2].last_epoch == 8
    momentum = [s["momentum_buffer"] for s in straight[1].state_dict()["state"].values()]
    resumed_momentum = [s["momentum_buffer"] for s in resumed[1].state_dict()["state"].values()]
    assert all(torch.equal(a, b) for a, b in zip(momentum, resumed_momentum))
    assert last_checkpoint_path(tmp_path / "b").name == "model_final.pth"


def test_checkpoint_keys_and_clear_errors(tmp_path):
    classifiers, groups = make_grid()
    name = next(iter(classifiers.classifiers_dict))
    assert f"classifiers_dict.{name}.linear.weight" in classifiers.state_dict()
    # a released (DDP-wrapped) checkpoint carries "module." prefixes
    torch.save(
        {"model": {f"module.{k}": v + 1 for k, v in classifiers.state_dict().items()}, "iteration": 9},
        tmp_path / "r.pth",
    )
    fresh, _ = make_grid(seed=1)
    assert load_linear_checkpoint(tmp_path / "r.pth", fresh) == 9
    assert torch.equal(fresh.state_dict()[f"classifiers_dict.{name}.linear.bias"], torch.ones(CLASSES))
    assert resume_or_load(tmp_path / "empty", fresh, None, None, classifier_fpath=str(tmp_path / "r.pth")) == 10
    other, _ = make_grid(lrs=(0.1,))
    with pytest.raises(ValueError, match="does not match the classifier grid"):
        load_linear_checkpoint(tmp_path / "r.pth", other)
    with pytest.raises(FileNotFoundError, match="--classifier-fpath"):
        load_linear_checkpoint(tmp_path / "missing.pth", other)
    (tmp_path / "cut.pth").write_bytes((tmp_path / "r.pth").read_bytes()[:200])  # a copy that stopped early
    with pytest.raises(NotAWeightsFileError, match="cut.pth.* truncated or corrupt"):
        load_linear_checkpoint(tmp_path / "cut.pth", other)
    optimizer = make_optimizer(groups)
    scheduler = make_scheduler(optimizer, 4)
    images, labels = make_batches(1)[0]
    with pytest.raises(ValueError, match="train labels contain -1"):
        train_step(FakeBackbone(), classifiers, optimizer, scheduler, images, torch.full_like(labels, -1))
    with pytest.raises(ValueError, match="train data ended at iteration 1 before max_iter=4"):
        train_linear_classifiers(
            feature_model=FakeBackbone(), classifiers=classifiers, optimizer=optimizer, scheduler=scheduler,
            train_data=[(images, labels)], max_iter=4,
        )  # fmt: skip
    with pytest.raises(ValueError, match=r"n_last_blocks \[1, 5\] must be in \[1, 4\]"):
        setup_linear_classifiers(FakeBackbone()(images), (1, 5), (0.1,), 8, CLASSES)
    with pytest.raises(ValueError, match="duplicate learning rates"):
        setup_linear_classifiers(FakeBackbone()(images), (1,), (0.1, 0.1), 8, CLASSES)


def test_evaluation_selection_and_hub_export(tmp_path):
    backbone, batches = FakeBackbone(), make_batches(30)
    classifiers, groups = make_grid(lrs=(1e-4, 2.0))
    optimizer = make_optimizer(groups)
    scheduler = make_scheduler(optimizer, 30)
    val = make_batches(3, seed=5)
    results, _ = train_linear_classifiers(
        feature_model=backbone, classifiers=classifiers, optimizer=optimizer, scheduler=scheduler, train_data=batches,
        max_iter=30, val_data=val, eval_period=10, num_classes=CLASSES, metrics_file_path=tmp_path / "results.json",
    )  # fmt: skip
    for name, classifier in classifiers.classifiers_dict.items():  # metric = plain accuracy of the argmax
        hits = [(classifier(backbone(x)).argmax(1) == y).float() for x, y in val]
        assert results["classifiers"][name]["top-1"].item() == pytest.approx(torch.cat(hits).mean().item())
    accuracies = {n: r["top-1"].item() for n, r in results["classifiers"].items()}
    assert results["best_classifier"] == {
        "name": max(accuracies, key=accuracies.get),
        "accuracy": max(accuracies.values()),
    }
    assert results["best_classifier"]["accuracy"] > 0.6  # large lr learns the linear teacher
    assert (tmp_path / "results.json").read_text().count("iter: ") == 3  # iterations 9, 19 and the final one
    hub = best_hub_classifier(results, classifiers)  # best exportable one (here the overall best has no avgpool)
    assert hub["accuracy"] == max(v for n, v in accuracies.items() if "avgpool_True" in n)
    assert "avgpool_True" in hub["name"] and hub["layers"] == (1 if "_1_blocks" in hub["name"] else 4)
    classifier = classifiers.classifiers_dict[hub["name"]]
    path = save_hub_linear_head(classifier, tmp_path / "head.pth")
    head = nn.Linear((1 + hub["layers"]) * DIM, CLASSES)
    head.load_state_dict(torch.load(path, weights_only=True), strict=True)
    images = val[0][0]
    x = backbone(images)
    hub_input = torch.cat([c for _, c in x[-hub["layers"] :]] + [x[-1][0].mean(dim=1)], dim=1)
    torch.testing.assert_close(head(hub_input), classifier(x))
    no_avgpool = next(c for n, c in classifiers.classifiers_dict.items() if "avgpool_False" in n)
    with pytest.raises(ValueError, match="no hub _lc head layout"):
        hub_linear_head_state_dict(no_avgpool)
    mapped = score_linear_classifiers(backbone, classifiers, [(images, torch.zeros(8, dtype=torch.long))],
                                      num_classes=CLASSES, class_mapping=[2])  # fmt: skip
    assert all(r["top-1"].item() == 1.0 for r in mapped["classifiers"].values())  # one output: always right


def test_select_best_rules():
    results = {"a": {"top-1": torch.tensor(0.5)}, "b": {"top-1": torch.tensor(0.7)}, "c": {"top-1": torch.tensor(0.7)}}
    assert select_best_classifier(results) == {"name": "b", "accuracy": pytest.approx(0.7)}  # first of the ties
    assert select_best_classifier(results, best_classifier_on_val="a")["name"] == "a"
    assert select_best_classifier(results, names=["a", "c"])["name"] == "c"
    per_class = {"a": {"top-1": torch.tensor([1.0, float("nan"), 0.0])}}
    assert select_best_classifier(per_class)["accuracy"] == 0.5


def test_hub_head_shapes_match_released_heads():
    shapes = load_reference("keys_shapes.json")["linear_heads"]["dinov2_vits14"]
    for layers in (1, 4):
        torch.manual_seed(0)
        sample = [(torch.zeros(1, 4, 384), torch.zeros(1, 384))] * 4
        classifiers, _ = setup_linear_classifiers(sample, (layers,), (0.1,), 256, 1000)
        classifier = classifiers.classifiers_dict[classifier_name(layers, True, 0.1)]
        state = hub_linear_head_state_dict(classifier)
        assert [[k, list(v.shape)] for k, v in state.items()] == shapes[f"layers_{layers}"]


def _ddp_worker(rank, world_size):
    batches = make_batches(4, batch_size=8)
    torch.manual_seed(rank)  # different local init: setup must broadcast rank 0's weights
    sample = FakeBackbone()(torch.zeros(1, 3, 4, 4))
    classifiers, groups = setup_linear_classifiers(sample, (1, 4), (0.05, 0.5), 256, CLASSES, world_size=1)
    optimizer = make_optimizer(groups)
    scheduler = make_scheduler(optimizer, 4)
    for images, labels in batches:  # each rank takes its half of every batch
        half = slice(4 * rank, 4 * rank + 4)
        train_step(FakeBackbone(), classifiers, optimizer, scheduler, images[half], labels[half])
    return {k: v.tolist() for k, v in classifiers.state_dict().items()}


def test_two_process_training_equals_single_process_full_batch():
    outputs = run_distributed(_ddp_worker, 2)
    torch.manual_seed(0)
    sample = FakeBackbone()(torch.zeros(1, 3, 4, 4))
    classifiers, groups = setup_linear_classifiers(sample, (1, 4), (0.05, 0.5), 256, CLASSES, world_size=1)
    optimizer = make_optimizer(groups)
    scheduler = make_scheduler(optimizer, 4)
    for images, labels in make_batches(4, batch_size=8):
        train_step(FakeBackbone(), classifiers, optimizer, scheduler, images, labels)
    for key, value in classifiers.state_dict().items():
        for output in outputs:
            torch.testing.assert_close(torch.tensor(output[key]), value, rtol=1e-5, atol=1e-6)
    assert math.isfinite(value.sum().item())
