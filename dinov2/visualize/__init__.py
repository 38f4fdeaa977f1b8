"""Pictures of what the features see: PCA feature maps and attention maps (``python -m dinov2.visualize``), and
training-run curves (:mod:`dinov2.visualize.plot`, ``python -m dinov2.plot``)."""
