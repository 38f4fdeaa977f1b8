"""Recipes of the segmentation probe (``defaults.yaml``: every key; ``linear``, ``ms``: the released configs)."""
