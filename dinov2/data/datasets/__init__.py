"""Datasets: ImageNet, ImageNet-22k (released layouts), any image folder, and a synthetic demo set; dense
prediction sets: ADE20K, VOC2012, NYU (released layouts), segmentation / depth folders, a synthetic scene set."""

from .ade20k import ADE20K
from .curated import Curated
from .decoders import ImageDataDecoder, TargetDecoder
from .dense import DenseDataset, DepthFolder, SegmentationFolder
from .extended import CorruptImageError, ExtendedVisionDataset
from .image_folder import IMG_EXTENSIONS, UNLABELED_TARGET, ImageFolder
from .image_net import ImageNet
from .image_net_22k import ImageNet22k, write_blocks_log
from .nyu import NYU
from .synthetic import Synthetic, make_synthetic_dataset
from .synthetic_dense import SyntheticDense, make_synthetic_dense_dataset
from .voc2012 import VOC2012

__all__ = [
    "ADE20K",
    "DenseDataset",
    "DepthFolder",
    "NYU",
    "SegmentationFolder",
    "SyntheticDense",
    "VOC2012",
    "make_synthetic_dense_dataset",
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
