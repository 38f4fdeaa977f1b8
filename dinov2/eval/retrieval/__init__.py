"""Instance retrieval on revisited Oxford / Paris (``python -m dinov2.eval.retrieval``).

:mod:`~dinov2.eval.retrieval.metrics`: the protocol's :func:`compute_map` (``(map, aps, pr, prs)``) and the
Easy / Medium / Hard ground truth; :mod:`~dinov2.eval.retrieval.data`: the ground truth files (restricted
unpickler, JSON conversion) and image lists; :mod:`~dinov2.eval.retrieval.descriptors`: preprocessing and
descriptors (class token or GeM, single or multi-scale); :mod:`~dinov2.eval.retrieval.search`: the ranking (exact
or faiss); :mod:`~dinov2.eval.retrieval.cli`: the command line.
"""

from dinov2.eval.retrieval.cli import cli_main, eval_retrieval_with_model, get_args_parser, main
from dinov2.eval.retrieval.data import GroundTruth, convert_ground_truth, read_ground_truth
from dinov2.eval.retrieval.descriptors import RetrievalDescriptor, RetrievalTransform, gem, retrieval_size
from dinov2.eval.retrieval.metrics import compute_ap, compute_map, evaluate_protocols, protocol_ground_truth
from dinov2.eval.retrieval.search import rank_database

__all__ = [
    "GroundTruth",
    "RetrievalDescriptor",
    "RetrievalTransform",
    "cli_main",
    "compute_ap",
    "compute_map",
    "convert_ground_truth",
    "eval_retrieval_with_model",
    "evaluate_protocols",
    "gem",
    "get_args_parser",
    "main",
    "protocol_ground_truth",
    "rank_database",
    "read_ground_truth",
    "retrieval_size",
]
