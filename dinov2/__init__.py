"""DINOv2: faithful, tested reimplementation of self-supervised visual pretraining."""

__version__ = "0.1.0"
