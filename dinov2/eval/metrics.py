"""Classification metrics of the evaluation protocols (released module name): they live in
:mod:`dinov2.features.metrics`, below training and evaluation, which both score k-NN with them."""

from dinov2.features import metrics as _metrics
from dinov2.features.metrics import *  # noqa: F403  (the released names, listed once in dinov2.features.metrics)

__all__ = list(_metrics.__all__)
