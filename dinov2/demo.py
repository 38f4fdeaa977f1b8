"""Feature-extraction demo: ``python -m dinov2.demo``.

Builds a randomly initialised ViT-S/14 hub backbone (no download), draws a synthetic image and prints the
shapes of the features DINOv2 gives: cls token, patch tokens, registers and intermediate layers.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from PIL import Image

from dinov2.hub.backbones import dinov2_vits14, dinov2_vits14_reg

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def synthetic_image(height: int = 224, width: int = 308) -> Image.Image:
    """An RGB gradient with a checkerboard: something with structure, no file needed."""
    y, x = np.mgrid[0:height, 0:width]
    checker = ((y // 28 + x // 28) % 2) * 80
    rgb = np.stack([x * 255 // width, y * 255 // height, checker + 60], axis=-1).astype(np.uint8)
    return Image.fromarray(rgb)


def to_tensor(image: Image.Image) -> torch.Tensor:
    """PIL RGB -> normalised float tensor ``[1, 3, H, W]``."""
    x = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1)
    mean, std = torch.tensor(IMAGENET_MEAN)[:, None, None], torch.tensor(IMAGENET_STD)[:, None, None]
    return ((x - mean) / std).unsqueeze(0)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--registers", action="store_true", help="use the ViT-S/14 variant with 4 registers")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    build = dinov2_vits14_reg if args.registers else dinov2_vits14
    model = build(pretrained=False).eval()  # pass pretrained=True (or weights="/path.pth") for real features
    image = to_tensor(synthetic_image())  # [1, 3, 224, 308]: any size works, sides are cropped to multiples of 14
    with torch.inference_mode():
        features = model.forward_features(image)
        layers = model.get_intermediate_layers(image, n=4, reshape=True, return_class_token=True)
    print(f"input image           {tuple(image.shape)}")
    print(f"cls token             {tuple(features['x_norm_clstoken'].shape)}")
    print(f"patch tokens          {tuple(features['x_norm_patchtokens'].shape)}  (16 x 22 patches of 14 px)")
    print(f"register tokens       {tuple(features['x_norm_regtokens'].shape)}")
    for i, (patch_map, cls_token) in enumerate(layers):
        print(f"block -{4 - i} patch map    {tuple(patch_map.shape)}, cls {tuple(cls_token.shape)}")


if __name__ == "__main__":
    main()
