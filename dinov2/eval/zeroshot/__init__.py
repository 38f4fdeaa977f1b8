"""Zero-shot classification with a dino.txt model (``python -m dinov2.eval.zeroshot``); the class weights and dense
similarity maps are :mod:`dinov2.text.zeroshot`."""

from dinov2.eval.zeroshot.cli import eval_zeroshot_with_model, get_args_parser, main

__all__ = ["eval_zeroshot_with_model", "get_args_parser", "main"]
