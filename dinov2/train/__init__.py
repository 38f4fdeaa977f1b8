"""DINOv2 training: the meta-architectures, the training loop and what wraps them (released import surface:
``from dinov2.train import SSLMetaArch, get_args_parser, main``).

``get_args_parser`` and ``main`` are resolved on first access (PEP 562), so that ``python -m dinov2.train.train``
does not import its own module twice (runpy warns when a package pre-imports the module it is asked to run).
"""

from dinov2.train.ssl_meta_arch import SSLMetaArch

__all__ = ["SSLMetaArch", "get_args_parser", "main"]


def __getattr__(name: str):
    if name in ("get_args_parser", "main"):
        from dinov2.train import train

        return getattr(train, name)
    raise AttributeError(f"module 'dinov2.train' has no attribute {name!r}")
