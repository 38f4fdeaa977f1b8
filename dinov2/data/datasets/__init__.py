"""Datasets: ImageNet, ImageNet-22k (released layouts), any image folder, and a synthetic demo set."""

from .curated import Curated
from .decoders import ImageDataDecoder, TargetDecoder
from .extended import CorruptImageError, ExtendedVisionDataset
from .image_folder import IMG_EXTENSIONS, UNLABELED_TARGET, ImageFolder
from .image_net import ImageNet
from .image_net_22k import ImageNet22k, write_blocks_log
from .synthetic import Synthetic, make_synthetic_dataset

__all__ = [
    "CorruptImageError",
    "Curated",
    "ExtendedVisionDataset",
    "IMG_EXTENSIONS",
    "ImageDataDecoder",
    "ImageFolder",
    "ImageNet",
    "ImageNet22k",
    "Synthetic",
    "TargetDecoder",
    "UNLABELED_TARGET",
    "make_synthetic_dataset",
    "write_blocks_log",
]
