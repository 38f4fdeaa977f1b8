"""Recipes of the depth probe (``defaults.yaml``: every key; ``linear1``, ``linear4``, ``dpt``: released NYU)."""
