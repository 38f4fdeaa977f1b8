"""Metadata ``.npy`` files of a dataset kept in an ``extra`` folder (the released ImageNet / ImageNet-22k layout)."""

from __future__ import annotations

import os

import numpy as np

__all__ = ["ExtraMetadata"]


class ExtraMetadata:
    """Mixin of the datasets whose metadata lives in ``.npy`` files under an ``extra`` folder.

    Each file is read memory-mapped once, at its first use; a missing one raises ``FileNotFoundError`` naming the
    ``dump_extra()`` call that writes it (``_dump_extra_call``, given by the dataset). Keeps the released method
    names ``_get_extra_full_path``, ``_load_extra`` and ``_save_extra``.
    """

    _extra_root: str
    _extras: dict[str, np.ndarray]

    def _set_extra_root(self, extra: str, entries_path: str, what: str) -> None:
        """Use ``extra`` as the metadata folder; raise if its ``entries_path`` file exists but lists no samples
        (``what`` names the dataset in the error)."""
        self._extra_root = str(extra)
        self._extras = {}  # metadata file name -> array, read on first use
        if os.path.exists(self._get_extra_full_path(entries_path)) and len(self) == 0:
            raise ValueError(f"{what}: {entries_path} in {extra!r} lists no images")

    def _dump_extra_call(self) -> str:
        """The Python call that writes this dataset's metadata (named when a file is missing)."""
        raise NotImplementedError

    def _get_extra_full_path(self, extra_path: str) -> str:
        return os.path.join(self._extra_root, extra_path)

    def _load_extra(self, extra_path: str) -> np.ndarray:
        full_path = self._get_extra_full_path(extra_path)
        if not os.path.isfile(full_path):
            raise FileNotFoundError(
                f"{type(self).__name__} metadata {full_path!r} not found; create it once with {self._dump_extra_call()}"
            )
        return np.load(full_path, mmap_mode="r")

    def _save_extra(self, extra_array: np.ndarray, extra_path: str) -> None:
        os.makedirs(self._extra_root, exist_ok=True)
        np.save(self._get_extra_full_path(extra_path), extra_array)
        self._extras.pop(extra_path, None)  # read the new file at the next use

    def _cached_extra(self, extra_path: str) -> np.ndarray:
        """The metadata array ``extra_path``, loaded once."""
        if extra_path not in self._extras:
            self._extras[extra_path] = self._load_extra(extra_path)
        return self._extras[extra_path]
