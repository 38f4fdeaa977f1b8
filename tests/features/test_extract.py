"""Feature extraction of any model output over any dataset: dict outputs, dtypes, unlabelled data, per-rank rows
with their indices, streamed batches, the released data-loader variant, errors; 2 processes against 1."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from dinov2.data.datasets.extended import ExtendedVisionDataset
from dinov2.features import extract, extract_features, iter_outputs
from dinov2.features.extract import UnreadableImagesError
from tests.eval.test_utils import CountingModel, ToyDataset


class TokensModel(nn.Module):
    """A dict of outputs of different shapes and dtypes: a class token [B, 5] and patch tokens [B, 4, 3] (fp64)."""

    def __init__(self):
        super().__init__()
        self.linear = CountingModel().linear

    def forward(self, images):
        patches = images.flatten(2).transpose(1, 2)[:, ::4]  # [B, 4, 3]
        return {"cls": self.linear(images.flatten(1)), "patches": patches.double()}


class DamagedToyDataset(ExtendedVisionDataset):
    """:class:`ToyDataset`'s images (targets ``i % 3``) as an image dataset whose ``bad`` indices cannot be read."""

    def __init__(self, n: int, bad=()):
        super().__init__(root="toy")
        self.toy, self.bad = ToyDataset(n), set(bad)

    def _decode_image(self, index: int):
        if index in self.bad:
            raise OSError("image file is truncated")
        return self.toy.images[index]

    def get_target(self, index: int) -> int:
        return index % 3

    def describe_sample(self, index: int) -> str:
        return f"img{index}.jpg"

    def __len__(self) -> int:
        return len(self.toy)


def _reference(dataset: ToyDataset) -> dict:
    with torch.no_grad():
        return TokensModel()(dataset.images)


def test_dict_outputs_of_any_shape_in_dataset_order_with_their_indices():
    dataset = ToyDataset(10, unlabelled={3})
    expected = _reference(dataset)
    result = extract(TokensModel(), dataset, batch_size=4, dtype=None, progress=False)
    assert result.outputs.keys() == {"cls", "patches"} and result.outputs["patches"].dtype == torch.float64
    for key, value in expected.items():
        torch.testing.assert_close(result.outputs[key], value)
    assert result.indices.tolist() == list(range(10)) and result.labels[3] == -1 and result.labels[4] == 1
    cast = extract(TokensModel(), dataset, batch_size=4, progress=False)  # default dtype: float32
    assert cast.outputs["patches"].dtype == torch.float32


def test_streamed_batches_over_chosen_indices():
    dataset = ToyDataset(10)
    expected = _reference(dataset)
    batches = list(iter_outputs(TokensModel(), dataset, batch_size=2, indices=[7, 2, 5]))
    assert [b.indices.tolist() for b in batches] == [[7, 2], [5]]
    cls = torch.cat([b.outputs["cls"] for b in batches])
    torch.testing.assert_close(cls, expected["cls"][[7, 2, 5]])  # other batch sizes: float32 rounding only
    assert torch.cat([b.labels for b in batches]).tolist() == [1, 2, 2]


def test_outputs_that_are_not_tensors_per_image_are_refused():
    with pytest.raises(TypeError, match=r"output 'tensor' is shape \[5\]"):
        extract(lambda images: images.flatten()[:5], ToyDataset(3), batch_size=3, progress=False)
    with pytest.raises(TypeError, match="extract_features needs a model returning one tensor"):
        extract_features(TokensModel(), ToyDataset(3), 2, 0, progress=False)
    with pytest.raises(ValueError, match="empty dataset"):
        extract(TokensModel(), ToyDataset(0), batch_size=2)


def test_unreadable_images_yield_no_row_and_are_reported():
    dataset = DamagedToyDataset(7, bad={2, 3, 5})  # batch [2, 3] has no readable image
    expected, kept = _reference(dataset.toy), [0, 1, 4, 6]
    result = extract(TokensModel(), dataset, batch_size=2, progress=False)
    torch.testing.assert_close(result.outputs["cls"], expected["cls"][kept])
    assert result.indices.tolist() == kept and result.labels.tolist() == [0, 1, 1, 0]
    assert result.dropped.tolist() == [2, 3, 5]
    assert dataset.on_unreadable == "substitute"  # the training default is back after the extraction
    local = extract(TokensModel(), dataset, batch_size=2, gather=False, progress=False)
    assert local.indices.tolist() == kept and local.dropped.tolist() == [2, 3, 5]
    batches = list(iter_outputs(TokensModel(), dataset, batch_size=2))
    assert torch.cat([b.indices for b in batches]).tolist() == kept
    whole = extract(TokensModel(), DamagedToyDataset(4), batch_size=2, progress=False)
    assert whole.dropped.numel() == 0 and whole.indices.tolist() == [0, 1, 2, 3]


def test_evaluation_refuses_unreadable_images_naming_them():
    dataset = DamagedToyDataset(5, bad={1, 4})
    with pytest.raises(UnreadableImagesError, match=r"2 of 5 images are unreadable \(img1.jpg, img4.jpg\)"):
        extract_features(CountingModel(), dataset, 2, 0, progress=False)
    nothing = extract(TokensModel(), DamagedToyDataset(2, bad={0, 1}), batch_size=2, progress=False)
    assert nothing.outputs.shape == (0, 0) and nothing.indices.numel() == 0 and nothing.dropped.tolist() == [0, 1]
