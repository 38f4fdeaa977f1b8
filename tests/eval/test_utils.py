"""Feature extraction over ranks (dataset order, no duplicates, labels), label checks, the released evaluate loop."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torchvision.transforms.functional import pil_to_tensor

from dinov2.data.datasets import CorruptImageError
from dinov2.eval.common import check_extracted_labels, make_eval_dataset
from dinov2.eval.linear.data import make_eval_data_loader
from dinov2.eval.metrics import build_metric
from dinov2.eval.utils import (
    ModelWithIntermediateLayers,
    ModelWithNormalize,
    check_labelled,
    evaluate,
    extract_features,
    make_shard_loader,
)
from dinov2.features.extract import UnreadableImagesError


class ToyDataset(torch.utils.data.Dataset):
    """``n`` random 3 x 4 x 4 images; target ``i % 3``, or None for the indices in ``unlabelled``."""

    def __init__(self, n: int, unlabelled=()):
        self.images = torch.randn(n, 3, 4, 4, generator=torch.Generator().manual_seed(n))
        self.unlabelled = set(unlabelled)

    def __getitem__(self, index):
        return self.images[index], None if index in self.unlabelled else index % 3

    def __len__(self):
        return len(self.images)

    def get_targets(self):
        return np.array([-1 if i in self.unlabelled else i % 3 for i in range(len(self))])


class CountingModel(nn.Module):
    """A linear map of the flattened image to 5 features that counts the images it sees."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(48, 5)
        generator = torch.Generator().manual_seed(0)
        torch.nn.init.normal_(self.linear.weight, generator=generator)
        torch.nn.init.normal_(self.linear.bias, generator=generator)
        self.seen = 0

    def forward(self, images):
        self.seen += len(images)
        return self.linear(images.flatten(1))


def _reference(dataset):
    with torch.no_grad():
        features = CountingModel()(dataset.images)
    return features, torch.tensor([-1 if i in dataset.unlabelled else i % 3 for i in range(len(dataset))])


def test_single_process_features_in_dataset_order_with_missing_labels_as_minus_one():
    dataset = ToyDataset(11, unlabelled={4})
    expected_features, expected_labels = _reference(dataset)
    model = CountingModel()
    features, labels = extract_features(model, dataset, batch_size=4, num_workers=0, progress=False)
    torch.testing.assert_close(features, expected_features)
    assert labels.tolist() == expected_labels.tolist() and labels[4] == -1
    assert model.seen == 11
    local = extract_features(CountingModel(), dataset, 4, 0, gather=False, progress=False)
    torch.testing.assert_close(local[0], features)
    with pytest.raises(ValueError, match="dataset 'toy' has no labels"):
        check_extracted_labels(labels, "toy")


CASES = [(7, 2), (3, 4), (1, 4)]  # (images, batch size): uneven shards, a rank out of images early, an empty rank


def _extraction_worker(rank, world_size):
    """Extraction of the toy cases on each rank (run by tests/eval/knn/test_e2e_knn.py, in the same 2 processes as
    the k-NN comparison, to start processes once)."""
    outputs = []
    for n, batch_size in CASES:
        dataset = ToyDataset(n)
        model = CountingModel()
        features, labels = extract_features(model, dataset, batch_size, 0, gather_on_cpu=True, progress=False)
        local, local_labels = extract_features(CountingModel(), dataset, batch_size, 0, gather=False, progress=False)
        outputs.append((features, labels, model.seen, local, local_labels))
    return outputs


def test_unlabelled_datasets_are_refused_by_name(tmp_path):
    with pytest.raises(ValueError, match="dataset 'toy' has no labels"):
        check_labelled(ToyDataset(5, unlabelled={2}), "toy")
    check_labelled(ToyDataset(5), "toy")
    from PIL import Image

    for i in range(2):  # a flat folder of images: ImageFolder gives every image the target -1
        Image.new("RGB", (8, 8)).save(tmp_path / f"{i}.png")
    with pytest.raises(ValueError, match=f"dataset 'ImageFolder:root={tmp_path}' has no labels"):
        make_eval_dataset(f"ImageFolder:root={tmp_path}", None, "train")


def test_wrappers_and_released_evaluate_loop():
    dataset = ToyDataset(9)
    model = CountingModel()
    normalized = ModelWithNormalize(model)
    with torch.no_grad():
        torch.testing.assert_close(normalized(dataset.images).norm(dim=1), torch.ones(9))
    loader = make_shard_loader(dataset, batch_size=4, num_workers=0, with_index=False)
    head = nn.Linear(5, 3)
    metric = build_metric("mean_accuracy", num_classes=3)
    postprocessors = {"acc": lambda outputs, targets: {"preds": head(outputs), "target": targets}}
    stats, results = evaluate(
        model, loader, postprocessors, {"acc": metric}, torch.device("cpu"), nn.CrossEntropyLoss()
    )
    with torch.no_grad():
        predictions = head(model(dataset.images)).argmax(dim=1)
    expected = (predictions == torch.arange(9) % 3).float().mean()
    torch.testing.assert_close(results["acc"]["top-1"], expected)
    assert set(stats) == {"loss"}


class _TinyViT(nn.Module):
    def __init__(self):
        super().__init__()
        self.p = nn.Parameter(torch.zeros(()))

    def get_intermediate_layers(self, x, n, return_class_token):
        assert return_class_token and not torch.is_grad_enabled()
        return tuple((x[:, :, :2].flatten(2).transpose(1, 2) + i, x.mean(dim=(2, 3)) + i) for i in range(n))


def test_model_with_intermediate_layers_runs_without_gradients_inside_the_autocast_context():
    entered = []

    class Ctx:
        def __enter__(self):
            entered.append(True)

        def __exit__(self, *exc):
            return False

    model = ModelWithIntermediateLayers(_TinyViT(), 4, Ctx)
    out = model(torch.randn(2, 3, 4, 4))
    assert len(out) == 4 and out[0][0].shape == (2, 8, 3) and out[3][1].shape == (2, 3) and entered == [True]


def test_evaluation_sets_refuse_unreadable_images_by_name(tmp_path):
    from PIL import Image

    for label in ("a", "b"):
        (tmp_path / label).mkdir()
        Image.new("RGB", (8, 8), (200, 0, 0)).save(tmp_path / label / "0.png")
    (tmp_path / "b" / "1_text.jpg").write_text("not an image")
    dataset_str = f"ImageFolder:root={tmp_path}"
    flatten = nn.Sequential(nn.Flatten(), nn.LazyLinear(3))
    with pytest.raises(UnreadableImagesError, match=r"1 of 3 images are unreadable \(.*1_text.jpg\)"):
        extract_features(flatten, make_eval_dataset(dataset_str, _to_tensor, "train"), 2, 0, progress=False)
    loader = make_eval_data_loader(dataset_str, 2, 0, "mean_accuracy", transform=_to_tensor)
    with pytest.raises(CorruptImageError, match="1_text.jpg"):
        list(loader)  # an evaluation set: never the next readable image instead
    train = make_eval_dataset(dataset_str, _to_tensor, "train")
    assert train.on_unreadable == "substitute"  # training a head on a set: the training default


def _to_tensor(image):
    return pil_to_tensor(image).float()
