"""Task heads on frozen DINOv2 features, shared by the hub entry points and the evaluation protocols.

By task, each keeping the released state-dict key layout: ``classifier`` (the linear-classifier input of the hub
``_lc`` models), ``depth/`` (linear bins, DPT, the backbone + head model), ``segmentation/`` (BN + 1x1 conv head,
model, test-time inference, class names and palettes, drawing; DINOv3's ViT adapter + Mask2Former segmentor),
``detection/`` (DINOv3's Plain-DETR detector on a windowed ViT).
Shared by the two dense tasks: ``encoder_decoder`` (a backbone tapped at some blocks on the centre-padded image) and
``sliding_window``.
"""
