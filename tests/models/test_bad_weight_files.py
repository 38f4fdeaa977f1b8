"""Files that are not weights: every one gets an error naming the file and what it is not, through the one door
(dinov2.models.weights), and no message suggests turning weights_only off."""

from __future__ import annotations

import argparse

import pytest
import torch

from dinov2.hub.backbones import dinov2_vits14
from dinov2.models.weights import NotAWeightsFileError, read_backbone_weights, read_checkpoint


def _empty(path):
    path.write_bytes(b"")


def _text(path):
    path.write_text("hello, this is not a checkpoint\n")


def _truncated(path):
    torch.save({"w": torch.arange(4096.0)}, path)
    path.write_bytes(path.read_bytes()[:2000])


def _foreign_objects(path):
    torch.save({"args": argparse.Namespace(lr=0.1), "w": torch.zeros(2)}, path)


def _foreign_objects_old_format(path):
    torch.save({"args": argparse.Namespace(lr=0.1)}, path, _use_new_zipfile_serialization=False)


CASES = {
    "empty": (_empty, r"is empty \(0 bytes\)"),
    "text": (_text, r"is not a PyTorch weights file \(it starts with b'hello"),
    "truncated": (_truncated, "is a truncated or corrupt PyTorch archive"),
    "foreign objects": (_foreign_objects, r"holds Python objects besides tensors .*\(argparse.Namespace\)"),
    "foreign objects, old format": (_foreign_objects_old_format, r"holds Python objects besides tensors"),
}


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("reader", ["read_checkpoint", "read_backbone_weights", "hub weights="])
def test_a_file_that_is_not_weights_is_named_with_what_it_is_not(tmp_path, case, reader):
    make, expected = CASES[case]
    path = tmp_path / "model.pth"
    make(path)
    read = {
        "read_checkpoint": read_checkpoint,
        "read_backbone_weights": read_backbone_weights,
        "hub weights=": lambda p: dinov2_vits14(weights=p),
    }[reader]
    with pytest.raises(NotAWeightsFileError, match=expected) as caught:
        read(path)
    message = str(caught.value)
    assert str(path) in message
    assert "weights_only" not in message
    error = caught.value  # torch's own message (with its advice to load unsafely) is not chained to ours
    assert error.__cause__ is None and (error.__context__ is None or error.__suppress_context__)
