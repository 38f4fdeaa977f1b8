"""Data pipeline: datasets, multi-crop augmentation, iBOT masking, collate, samplers and loaders."""

from .adapters import DatasetWithEnumeratedTargets
from .augmentations import DataAugmentationDINO
from .collate import collate_data_and_cast
from .loaders import SamplerType, make_data_loader, make_dataset
from .masking import MaskingGenerator

__all__ = [
    "DataAugmentationDINO",
    "DatasetWithEnumeratedTargets",
    "MaskingGenerator",
    "SamplerType",
    "collate_data_and_cast",
    "make_data_loader",
    "make_dataset",
]
