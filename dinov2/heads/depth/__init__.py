"""Depth heads of the released depthers (linear bins, DPT) and the backbone + head model."""
