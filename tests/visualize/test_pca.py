"""PCA feature maps: the foreground of a known object is found, one joint basis across images, PNG outputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from dinov2.models.vision_transformer import DinoVisionTransformer
from dinov2.visualize.pca import (
    foreground_pca,
    otsu_threshold,
    patch_features,
    principal_directions,
    write_pca_pictures,
)

PATCH, SIDE = 14, 8  # 8 x 8 patches of 14 px: 112 px images
BACKGROUND, OBJECT = (0.1, 0.3, 0.9), (0.9, 0.15, 0.1)


def colour_backbone() -> DinoVisionTransformer:
    """A backbone whose patch features encode the patch's mean colour: the patch embedding averages each input
    channel into one feature, position embeddings are zero and every block is the identity (layer-scale 0).
    Such features separate an object of another colour, as trained features separate objects."""
    model = DinoVisionTransformer(img_size=PATCH * SIDE, patch_size=PATCH, embed_dim=16, depth=1, num_heads=2,
                                  init_values=1.0, block_chunks=0).eval()  # fmt: skip
    with torch.no_grad():
        model.patch_embed.proj.weight.zero_()
        model.patch_embed.proj.bias.zero_()
        for channel in range(3):
            model.patch_embed.proj.weight[channel, channel] = 1.0 / PATCH**2
        model.patch_embed.proj.bias[3] = 0.5  # a constant feature keeps LayerNorm away from degenerate vectors
        model.pos_embed.zero_()
        for block in model.blocks:
            block.ls1.gamma.zero_()
            block.ls2.gamma.zero_()
    return model


def disk_image(centre: tuple[float, float], radius: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A noisy background with a disk of another colour; returns the image [1, 3, H, W] and the object's patch
    mask [8, 8] (patches whose centre lies in the disk)."""
    g = torch.Generator().manual_seed(seed)
    size = PATCH * SIDE
    y, x = torch.meshgrid(torch.arange(size) + 0.5, torch.arange(size) + 0.5, indexing="ij")
    inside = (y - centre[0]) ** 2 + (x - centre[1]) ** 2 <= radius**2  # [H, W]
    colour = torch.where(inside, torch.tensor(OBJECT)[:, None, None], torch.tensor(BACKGROUND)[:, None, None])
    image = (colour + 0.05 * torch.randn(3, size, size, generator=g)).unsqueeze(0)
    patch_centres = inside[PATCH // 2 :: PATCH, PATCH // 2 :: PATCH]  # [8, 8]
    return image, patch_centres


def iou(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a & b).sum().item() / (a | b).sum().item()


def test_foreground_of_a_known_object_is_found_in_every_image():
    model = colour_backbone()
    images, objects = zip(disk_image((50, 60), 30, seed=0), disk_image((70, 40), 22, seed=1))
    maps = foreground_pca(patch_features(model, images))
    for foreground, truth in zip(maps.foreground, objects):
        assert iou(foreground, truth) > 0.9  # the object, not the background (border rule orients the component)
    # one joint basis: the object's patches get (nearly) the same colour in both images
    colours = [rgb[truth.numpy()].astype(float).mean(0) for rgb, truth in zip(maps.rgb, objects)]
    assert np.abs(colours[0] - colours[1]).max() < 40
    for rgb, foreground in zip(maps.rgb, maps.foreground):
        assert (rgb[~foreground.numpy()] == 0).all() and rgb[foreground.numpy()].max() > 0


def test_an_explicit_threshold_is_a_fraction_of_the_first_components_range():
    model = colour_backbone()
    image, truth = disk_image((56, 56), 30, seed=2)
    features = patch_features(model, [image])
    assert foreground_pca(features, threshold=0.0).foreground[0].sum() == SIDE * SIDE - 1  # all but the minimum
    assert foreground_pca(features, threshold=1.0).foreground[0].sum() == 0
    assert iou(foreground_pca(features, threshold=0.5).foreground[0], truth) > 0.75  # edge patches are mixed


@pytest.mark.parametrize("seed", range(40))
def test_threshold_ends_are_exact_whatever_the_rounding(seed):
    # low + 1.0 * (high - low) rounds below high for about 1 grid in 4: the maximum must still be background
    features = torch.randn(4, 4, 3, generator=torch.Generator().manual_seed(seed))
    assert foreground_pca([features], threshold=1.0).foreground[0].sum() == 0
    assert foreground_pca([features], threshold=0.0).foreground[0].sum() == 15  # all but the minimum


def test_otsu_threshold_splits_two_groups():
    g = torch.Generator().manual_seed(0)
    values = torch.cat([torch.randn(300, generator=g) * 0.1, 3 + torch.randn(100, generator=g) * 0.1])
    cut = otsu_threshold(values)
    assert 1.0 < cut < 2.0  # in the middle of the gap
    assert (values > cut).sum() == 100


def test_principal_directions_match_the_covariance_eigenvectors_with_a_fixed_sign():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(500, 5, generator=g) * torch.tensor([5.0, 3.0, 1.0, 0.5, 0.1]) + 2.0
    mean, directions = principal_directions(x, 3)
    torch.testing.assert_close(mean, x.double().mean(0))
    eigenvalues, eigenvectors = torch.linalg.eigh(torch.cov(x.double().T))
    for i in range(3):
        expected = eigenvectors[:, -1 - i]
        assert abs(abs(directions[i] @ expected).item() - 1.0) < 1e-8
        assert directions[i][directions[i].abs().argmax()] > 0
    assert torch.equal(principal_directions(-x, 3)[1], directions)  # no dependence on the SVD's signs


def test_pca_pictures_have_the_input_size_and_are_not_constant(tmp_path):
    torch.manual_seed(0)
    model = DinoVisionTransformer(img_size=56, patch_size=PATCH, embed_dim=24, depth=2, num_heads=2,
                                  init_values=1.0, block_chunks=0).eval()  # fmt: skip
    rng = np.random.default_rng(0)
    paths = []
    for name, size in (("wide.png", (150, 100)), ("tall.jpg", (90, 120))):
        Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(tmp_path / name)
        paths.append(tmp_path / name)
    written = write_pca_pictures(model, paths, tmp_path / "out", resolution=70)
    assert sorted(written) == ["pca_sheet.png", "tall_pca.png", "wide_pca.png"]
    # shorter side 70 px, then cropped to multiples of 14: 150x100 -> 105x70 -> 98x70; 90x120 -> 70x93 -> 70x84
    for name, expected in (("wide_pca.png", (98, 70)), ("tall_pca.png", (70, 84))):
        picture = np.asarray(Image.open(written[name]))
        assert picture.shape == (expected[1], expected[0], 3)
        assert picture.std() > 0
    assert Image.open(written["pca_sheet.png"]).size == (3 * 98 + 4 * 4, 2 * 84 + 3 * 4)


def test_empty_input_is_an_error():
    with pytest.raises(ValueError, match="at least one image"):
        foreground_pca([])
