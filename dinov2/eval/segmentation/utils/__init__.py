"""The release's ``dinov2.eval.segmentation.utils`` (its ``colormaps`` module)."""
