"""Task heads on frozen DINOv2 features, shared by the hub entry points and the evaluation protocols.

One module per head format, each keeping the released state-dict key layout: the linear classifier input of the
hub ``_lc`` models, depth heads (linear bins, DPT) and segmentation heads (BN + 1x1 conv).
"""
