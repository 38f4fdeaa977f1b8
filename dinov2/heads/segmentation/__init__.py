"""Segmentation head of the released segmentors, its model and test-time inference, class names and drawing; and
DINOv3's Mask2Former segmentor (``dinov3``: the model and its builder; ``adapter``: the ViT adapter;
``mask2former`` and ``pixel_decoder``: the head)."""
