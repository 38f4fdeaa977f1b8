"""Reading third-party pickles of plain data without running code: a restricted unpickler.

A pickle may name any importable callable and call it while loading (``os.system`` through ``__reduce__``), so
``pickle.load`` on a file from elsewhere runs whatever its author wanted. :func:`load` / :func:`loads` admit only
what data files such as the revisited Oxford / Paris ground truth hold: plain containers (dict, list, tuple, set,
frozenset, ``OrderedDict``), strings, bytes, numbers, booleans, None, and numpy arrays, dtypes and scalars (numpy's
own reconstruction path, under its numpy 1 and numpy 2 module names). Any other global stops the load with
:class:`UnsafePickleError` naming it, before it is called; a file that is not a whole pickle (truncated, another
format) stops it with :class:`NotAPickleError` naming the source.
"""

from __future__ import annotations

import codecs
import collections
import importlib
import io
import os
import pickle
from typing import IO, Any

import numpy as np

__all__ = ["ALLOWED_GLOBALS", "UnsafePickleError", "NotAPickleError", "RestrictedUnpickler", "load", "loads"]

# numpy's array pickling: ndarray.__reduce__ -> multiarray._reconstruct(ndarray, shape, dtype) + __setstate__;
# numpy scalars -> multiarray.scalar(dtype, bytes). numpy 2 moved numpy.core to numpy._core.
# Protocol 5 writes arrays as numeric._frombuffer(buffer, dtype, shape, order).
_CORE = "numpy._core" if hasattr(np, "_core") else "numpy.core"
_NUMPY_FUNCTIONS = {"multiarray": ("_reconstruct", "scalar"), "numeric": ("_frombuffer",)}
_NUMPY = {
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    **{
        (f"{core}.{module}", name): getattr(importlib.import_module(f"{_CORE}.{module}"), name)
        for core in ("numpy.core", "numpy._core")  # pickles written by numpy 1 and by numpy 2
        for module, names in _NUMPY_FUNCTIONS.items()
        for name in names
    },
}
_BUILTINS = {"set": set, "frozenset": frozenset, "bytes": bytes, "bytearray": bytearray, "complex": complex}
ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    **{(module, name): value for module in ("builtins", "__builtin__") for name, value in _BUILTINS.items()},
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("_codecs", "encode"): codecs.encode,  # protocol 2 writes bytes as encode(str, "latin1")
    **_NUMPY,
}


class UnsafePickleError(pickle.UnpicklingError):
    """A pickle names a global that is not plain data (it could run code when loaded)."""


class NotAPickleError(ValueError):
    """The source is not a whole pickle: truncated, corrupt or another format (the message names it)."""


class RestrictedUnpickler(pickle.Unpickler):
    """``pickle.Unpickler`` whose globals are limited to :data:`ALLOWED_GLOBALS`; ``what`` names the source in
    errors."""

    def __init__(self, file: IO[bytes], *, what: str = "the pickle", encoding: str = "ASCII"):
        super().__init__(file, encoding=encoding)
        self.what = what

    def find_class(self, module: str, name: str) -> Any:
        found = ALLOWED_GLOBALS.get((module, name))
        if found is None:
            raise UnsafePickleError(
                f"{self.what} refers to {module}.{name}, which is not plain data (loading it could run code); only "
                "containers, strings, bytes, numbers and numpy arrays are read. Convert the file where you trust it "
                "(e.g. to JSON), or check where it came from"
            )
        return found

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError(f"{self.what} uses persistent ids ({pid!r}), which plain data files never need")

    def load(self) -> Any:
        """The unpickled data; :class:`UnsafePickleError` for a global that is not plain data, :class:`NotAPickleError`
        for anything else that stops the load (the pickle machinery's own errors say nothing of the source)."""
        try:
            return super().load()
        except UnsafePickleError:
            raise
        except Exception as error:  # EOFError, UnpicklingError, or a ValueError / TypeError from malformed opcodes
            raise NotAPickleError(
                f"{self.what} is not a readable pickle (truncated, corrupt or another format: {type(error).__name__}: "
                f"{error}); download or copy it again"
            ) from error


def loads(data: bytes, *, what: str = "the pickle", encoding: str = "ASCII") -> Any:
    """The plain data pickled in ``data`` (:class:`UnsafePickleError` for anything else, :class:`NotAPickleError`
    when ``data`` is not a whole pickle)."""
    return RestrictedUnpickler(io.BytesIO(data), what=what, encoding=encoding).load()


def load(path: str | os.PathLike, *, encoding: str = "ASCII") -> Any:
    """The plain data of the pickle file ``path`` (:class:`UnsafePickleError` for anything else,
    :class:`NotAPickleError` when the file is not a whole pickle)."""
    with open(path, "rb") as f:
        return RestrictedUnpickler(f, what=f"pickle file {os.fspath(path)!r}", encoding=encoding).load()
