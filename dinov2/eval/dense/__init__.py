"""What the dense probes (:mod:`dinov2.eval.segmentation`, :mod:`dinov2.eval.depth`) share."""
