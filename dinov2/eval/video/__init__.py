"""Video classification from frame features (``python -m dinov2.eval.video``).

Clips and frame sampling: :mod:`dinov2.data.datasets.video`; :mod:`~dinov2.eval.video.features`: frames through the
backbone, averaged or concatenated; :mod:`~dinov2.eval.video.cli`: the linear probe (the released
logistic-regression protocol) and the command line.
"""

from dinov2.data.datasets.video import VideoClips, sample_frame_indices
from dinov2.eval.video.cli import cli_main, eval_video_with_model, get_args_parser, main
from dinov2.eval.video.features import AGGREGATIONS, ClipEncoder, aggregate_frames

__all__ = [
    "AGGREGATIONS",
    "ClipEncoder",
    "VideoClips",
    "aggregate_frames",
    "cli_main",
    "eval_video_with_model",
    "get_args_parser",
    "main",
    "sample_frame_indices",
]
