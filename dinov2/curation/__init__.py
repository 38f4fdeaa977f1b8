"""Data curation in the style of LVD-142M: embed, deduplicate, retrieve, hierarchical k-means, balanced sampling.

Command line: ``python -m dinov2.curation {embed,dedup,retrieve,kmeans,sample,pictures,run} ...`` (see
:mod:`dinov2.curation.cli`); the curated set trains through the dataset string ``Curated:manifest=PATH``
(:mod:`dinov2.data.datasets.curated`). Every step runs on one process, under torchrun or on SLURM
(``dinov2/run/curation/curate.py``), on CPU or GPU, and gives the same result whatever the number of processes.
"""
