"""Released evaluation names that user scripts import, at their released module paths and signatures, called on
tiny inputs: ``build_topk_imagenet_real_accuracy_metric``, ``extract_features_with_dataloader``, ``eval_linear``,
``test_on_datasets`` (imported through their modules: pytest would collect a bare ``test_on_datasets``)."""

from __future__ import annotations

import inspect
import json

import torch

from dinov2.data import DatasetWithEnumeratedTargets, SamplerType, make_data_loader
from dinov2.eval import knn, linear, log_regression, metrics, setup, utils
from dinov2.eval.knn import eval_knn_with_model
from dinov2.eval.log_regression import eval_log_regression_with_model, solver
from dinov2.features.extract import extract_features
from tests.eval.linear.test_linear import CLASSES, FakeBackbone, make_batches, make_grid
from tests.eval.test_utils import CountingModel, ToyDataset, _reference


def test_released_signatures():
    def names(fn):
        return list(inspect.signature(fn).parameters)

    assert names(metrics.build_topk_imagenet_real_accuracy_metric)[:2] == ["num_classes", "ks"]
    assert names(utils.extract_features_with_dataloader) == ["model", "data_loader", "sample_count", "gather_on_cpu"]
    assert names(utils.extract_features)[:5] == ["model", "dataset", "batch_size", "num_workers", "gather_on_cpu"]
    released_eval_linear = [
        "feature_model", "linear_classifiers", "train_data_loader", "val_data_loader", "metrics_file_path",
        "optimizer", "scheduler", "output_dir", "max_iter", "checkpoint_period", "running_checkpoint_period",
        "eval_period", "metric_type", "training_num_classes", "resume", "classifier_fpath", "val_class_mapping",
    ]  # fmt: skip
    assert names(linear.eval_linear) == released_eval_linear
    released_test_on_datasets = [
        "feature_model", "linear_classifiers", "test_dataset_strs", "batch_size", "num_workers", "test_metric_types",
        "metrics_file_path", "training_num_classes", "iteration", "best_classifier_on_val", "prefixstring",
        "test_class_mappings",
    ]  # fmt: skip
    assert names(linear.test_on_datasets)[:12] == released_test_on_datasets
    assert names(linear.make_eval_data_loader)[:4] == ["test_dataset_str", "batch_size", "num_workers", "metric_type"]
    assert names(setup.build_model_for_eval)[:2] == ["config", "pretrained_weights"]
    assert callable(eval_knn_with_model) and callable(eval_log_regression_with_model) and callable(linear.main)


def test_imagenet_real_metric():
    metric = metrics.build_topk_imagenet_real_accuracy_metric(num_classes=3, ks=(1, 3))
    preds = torch.tensor([[0.1, 0.7, 0.2], [0.5, 0.3, 0.2], [0.2, 0.3, 0.5]])
    target = torch.tensor([[1, 2], [2, -1], [-1, -1]])  # valid labels per image; the last image has none
    metric.update(preds, target)
    result = metric.compute()
    assert result["top-1"].item() == 0.5 and result["top-3"].item() == 1.0  # 2 images counted


def test_extract_features_with_a_released_loader():
    dataset = ToyDataset(7)
    loader = make_data_loader(
        dataset=DatasetWithEnumeratedTargets(dataset), batch_size=3, num_workers=0, shuffle=False, drop_last=False,
        sampler_type=SamplerType.DISTRIBUTED,
    )  # fmt: skip
    features, labels = utils.extract_features_with_dataloader(CountingModel(), loader, len(dataset), gather_on_cpu=True)
    expected_features, expected_labels = _reference(dataset)
    torch.testing.assert_close(features, expected_features)
    assert labels.tolist() == expected_labels.tolist()


def test_eval_linear_then_test_on_datasets(tmp_path):
    classifiers, groups = make_grid()
    optimizer = linear.make_optimizer(groups)
    scheduler = linear.make_scheduler(optimizer, 6)
    val = make_batches(2, seed=1)
    common = dict(
        feature_model=FakeBackbone(), linear_classifiers=classifiers, train_data_loader=make_batches(6),
        val_data_loader=val, metrics_file_path=tmp_path / "results_eval_linear.json", optimizer=optimizer,
        scheduler=scheduler, output_dir=tmp_path, max_iter=6, checkpoint_period=3, running_checkpoint_period=6,
        eval_period=3, metric_type="mean_accuracy", training_num_classes=CLASSES,
    )  # fmt: skip
    val_results, feature_model, returned, iteration = linear.eval_linear(**common)
    assert iteration == 6 and returned is classifiers and (tmp_path / "model_final.pth").is_file()
    best = val_results["best_classifier"]["name"]
    assert best in classifiers.classifiers_dict
    again = linear.eval_linear(**common)  # resumes after the last iteration: nothing left to train
    assert again[0]["best_classifier"] == val_results["best_classifier"]

    dataset = ToyDataset(10)  # labels i % 3, images 3 x 4 x 4 as the fake backbone expects
    results = linear.test_on_datasets(
        feature_model, classifiers, [dataset], 4, 0, ["mean_accuracy"], tmp_path / "results_eval_linear.json",
        CLASSES, iteration, best, transform=lambda image: image,
    )  # fmt: skip
    with torch.no_grad():
        predictions = classifiers.classifiers_dict[best](feature_model(dataset.images)).argmax(dim=1)
    expected = 100.0 * (predictions == torch.arange(10) % 3).float().mean().item()
    assert list(results) == [f"{dataset}_accuracy"] and abs(results[f"{dataset}_accuracy"] - expected) < 1e-4
    blocks = (tmp_path / "results_eval_linear.json").read_text().strip().split("\n\n")
    assert [b.splitlines()[0] for b in blocks] == ["iter: 2", "iter: 6", "iter: 6", "iter: 6"]
    assert json.loads(blocks[-1].splitlines()[1])["best_classifier"]["name"] == best


def test_released_helpers_of_linear_and_utils():
    classifiers, _ = make_grid()
    name = next(iter(classifiers.classifiers_dict))
    classifier = classifiers.classifiers_dict[name]
    assert not linear.has_ddp_wrapper(classifier) and linear.remove_ddp_wrapper(classifier) is classifier
    images, labels = make_batches(1)[0]
    postprocess = linear.LinearPostprocessor(classifier, class_mapping=[2, 0, 1])
    metric = metrics.build_metric("mean_accuracy", num_classes=3, ks=(1,))
    _, results = utils.evaluate(FakeBackbone(), [(images, labels)], {name: postprocess}, {name: metric}, "cpu")
    with torch.no_grad():
        mapped = classifier(FakeBackbone()(images))[:, [2, 0, 1]]
    expected = (mapped.argmax(dim=1) == labels).float().mean()  # labels index the mapped outputs
    torch.testing.assert_close(results[name]["top-1"], expected)
    tensor = torch.arange(6).view(3, 2)
    assert torch.equal(utils.all_gather_and_flatten(tensor), tensor)  # one process: the tensor itself


def test_the_released_model_level_eval_knn_gives_the_released_keys_as_fractions():
    from dinov2.features.knn_scoring import knn_eval_of_model

    train, val = ToyDataset(30), ToyDataset(12)
    args = (metrics.AccuracyAveraging.MEAN_ACCURACY, [1, 3], 0.07, 4, 0, True)
    results = knn.eval_knn(CountingModel(), train, val, *args, n_per_class_list=[-1, 5], n_tries=2)
    assert sorted(results) == [("5 per class", 1), ("5 per class", 3), ("5 per class", 5), ("full", 1), ("full", 3)]
    protocol = dict(nb_knn=[1, 3], n_per_class_list=[-1, 5], n_tries=2, batch_size=4, num_workers=0)
    ours = knn_eval_of_model(CountingModel(), train, val, **protocol)
    for (setting, k), values in results.items():
        assert set(values) == {"top-1", "top-5"} and 0.0 <= float(values["top-1"]) <= 1.0
        torch.testing.assert_close(values["top-1"], ours[setting]["mean"][k]["top-1"] / 100.0)


def test_the_released_model_level_eval_log_regression_gives_fractions_and_best_c():
    train, val = ToyDataset(30), ToyDataset(12)
    common = dict(model=CountingModel(), train_dataset=train, val_dataset=val, metric_type="mean_accuracy",
                  batch_size=8, num_workers=0, max_train_iters=50)  # fmt: skip
    results = log_regression.eval_log_regression(finetune_dataset=None, **common)
    assert set(results) == {"top-1", "top-5", "best_C"} and 0.0 <= float(results["top-1"]) <= 1.0
    with_finetune = log_regression.eval_log_regression(finetune_dataset=ToyDataset(9), **common)
    assert 0.0 <= float(with_finetune["top-1"]) <= 1.0 and with_finetune["best_C"] > 0
    # the features the model-level function extracts (batches of 8): the unconverged 50-iteration fit on 12 images
    # can change its answer with the last bits of its features (a one-shot product of all images gives others)
    datasets = (("train", train), ("val", val), ("ft", ToyDataset(9)))
    features = {name: extract_features(CountingModel(), dataset, 8, 0, progress=False) for name, dataset in datasets}
    on_features = solver.eval_log_regression(
        *features["train"],
        *features["val"],
        finetune_features=features["ft"][0],
        finetune_labels=features["ft"][1],
        max_iter=50,
    )  # the same protocol on the same features: the released function is that fit, in fractions
    torch.testing.assert_close(with_finetune["top-1"], torch.as_tensor(on_features["top-1"]) / 100)
    assert with_finetune["best_C"] == on_features["best_C"]


def test_the_released_evaluate_linear_classifiers_logs_writes_its_block_and_returns_the_best(tmp_path):
    classifiers, _ = make_grid()
    val = make_batches(2, seed=1)
    path = tmp_path / "results_eval_linear.json"
    results = linear.evaluate_linear_classifiers(FakeBackbone(), classifiers, val, "mean_accuracy", path, CLASSES, 7,
                                                 "ITER: 7")  # fmt: skip
    assert results["best_classifier"]["name"] in classifiers.classifiers_dict
    block = path.read_text().splitlines()
    assert block[0] == "iter: 7" and json.loads(block[1]) == {"best_classifier": results["best_classifier"]}
    first = next(iter(classifiers.classifiers_dict))
    forced = linear.evaluate_linear_classifiers(FakeBackbone(), classifiers, val, "mean_accuracy", None, CLASSES, 8,
                                                best_classifier_on_val=first)  # fmt: skip
    assert forced["best_classifier"]["name"] == first
    assert linear.scale_lr(learning_rates=1e-3, batch_size=512) == 2e-3  # the released keyword
