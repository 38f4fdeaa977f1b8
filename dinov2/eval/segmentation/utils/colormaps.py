"""The release's ``dinov2.eval.segmentation.utils.colormaps``, in its layout, from the one table of class names and
colours (:mod:`dinov2.heads.segmentation.classes`).

As released, ``ADE20K_COLORMAP`` / ``ADE20K_CLASS_NAMES`` start with an unused entry (black, ``""``) before the 150
classes, and ``VOC2012_CLASS_NAMES`` names the background ``""``; lists of RGB tuples and of strings. Prefer
``dinov2.heads.segmentation.classes`` (class ``i`` in colour ``PALETTE[i]`` for both datasets): the release's
notebook draws ``colormap[pred + 1]``, right for ADE20K, one colour off for VOC2012.
"""

from __future__ import annotations

from dinov2.heads.segmentation import classes

__all__ = ["ADE20K_CLASS_NAMES", "ADE20K_COLORMAP", "VOC2012_CLASS_NAMES", "VOC2012_COLORMAP"]

ADE20K_COLORMAP = [(0, 0, 0), *classes.ADE20K_PALETTE]
ADE20K_CLASS_NAMES = ["", *classes.ADE20K_CLASS_NAMES]
VOC2012_COLORMAP = list(classes.VOC2012_PALETTE)
VOC2012_CLASS_NAMES = ["", *classes.VOC2012_CLASS_NAMES[1:]]
