"""The DINOv2 release's dino.txt modules (``dinov2.hub.text.*``), at their released paths.

The implementation is :mod:`dinov2.text` (one copy, shared with DINOv3's dino.txt); each module here re-exports the
names its released namesake defines. ``DINOv2Wrapper`` is the release's adapter of a DINOv2 ViT for its vision tower,
kept for code that builds one; :mod:`dinov2.text` reads DINOv2 and DINOv3 backbones without it.
"""
