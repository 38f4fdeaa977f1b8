"""Semantic segmentation probe on frozen DINOv2 features (``python -m dinov2.eval.segmentation``)."""
