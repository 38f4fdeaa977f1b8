"""Progress of the picture commands' forward passes: a tqdm bar counting transformer blocks (images x depth), so
that one huge image on the CPU moves too. Forward hooks count; they return nothing, so outputs are untouched.

The bar appears only once a computation has lasted :data:`PROGRESS_DELAY_S` seconds: short runs stay quiet.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator

from torch import nn
from tqdm import tqdm

__all__ = ["PROGRESS_DELAY_S", "block_progress", "transformer_blocks"]

PROGRESS_DELAY_S = 5.0


def transformer_blocks(model: nn.Module) -> list[nn.Module]:
    """The model's transformer blocks in order (chunked models: without the ``Identity`` padding of the chunks);
    a ConvNeXt's blocks, stage after stage."""
    if not hasattr(model, "blocks") and hasattr(model, "stages"):
        return [block for stage in model.stages for block in stage]
    blocks = []
    for block in model.blocks:
        inner = block if isinstance(block, nn.ModuleList) else [block]
        blocks += [b for b in inner if not isinstance(b, nn.Identity)]
    return blocks


@contextlib.contextmanager
def block_progress(model: nn.Module, images: int, description: str) -> Iterator[None]:
    """A progress bar (tqdm, on stderr) over ``images`` forward passes of ``model``, advanced by each block."""
    blocks = transformer_blocks(model)
    every = 1 if sys.stderr.isatty() else 30  # seconds between updates: a log file gets a few lines, not one per block
    bar = tqdm(total=images * len(blocks), desc=description, unit="block", delay=PROGRESS_DELAY_S, mininterval=every)
    handles = [block.register_forward_hook(lambda *_: bar.update()) for block in blocks]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()
        bar.close()
