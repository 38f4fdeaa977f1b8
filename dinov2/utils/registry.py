"""The one registry type of the tree: archs, model families, hub names (name -> entry, read like a dict).

A new entry comes from the module that defines it (``register``); tests and demos that add one for a while use
``registered`` (or ``restored``), which puts the table back as it was on exit, also when the body raises.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from typing import Generic, TypeVar

__all__ = ["Registry", "named"]

T = TypeVar("T")
F = TypeVar("F", bound=Callable)


def named(function: F, name: str, doc: str) -> F:
    """``function`` under the public ``name`` with docstring ``doc``: for released entry points and constructors
    made by a factory (``torch.hub`` and ``help()`` show them like hand-written functions)."""
    function.__name__ = function.__qualname__ = name
    function.__doc__ = doc
    return function


class Registry(Mapping[str, T], Generic[T]):
    """``what`` names the kind of entry in errors; ``check(registry, name, entry)`` may refuse an entry
    (``ValueError``) before it is added."""

    def __init__(
        self,
        what: str,
        entries: Mapping[str, T] | None = None,
        check: Callable[[Registry[T], str, T], None] | None = None,
    ) -> None:
        self.what = what
        self._entries: dict[str, T] = dict(entries or {})
        self._check = check

    def __getitem__(self, name: str) -> T:
        return self._entries[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.what!r}, {sorted(self._entries)})"

    def register(self, name: str, entry: T, *, exist_ok: bool = False) -> T:
        """Add ``name``; returns the registered entry. A taken name raises ``ValueError`` unless the entry is the
        same (or equal) or ``exist_ok`` (then the first one stays)."""
        if name in self._entries:
            existing = self._entries[name]
            if exist_ok or existing is entry or existing == entry:
                return existing
            raise ValueError(f"{self.what} {name!r} is already registered; pick another name or unregister it first")
        if self._check is not None:
            self._check(self, name, entry)
        self._entries[name] = entry
        return entry

    def unregister(self, name: str) -> None:
        """Remove ``name`` (``KeyError`` naming the registered entries if absent)."""
        if name not in self._entries:
            raise KeyError(f"{self.what} {name!r} is not registered; registered: {sorted(self._entries)}")
        del self._entries[name]

    @contextlib.contextmanager
    def restored(self) -> Iterator[None]:
        """On exit (also when the body raises) the registry holds exactly what it held on entry."""
        saved = dict(self._entries)
        try:
            yield
        finally:
            self._entries.clear()
            self._entries.update(saved)

    @contextlib.contextmanager
    def registered(self, name: str, entry: T) -> Iterator[T]:
        """``name`` -> ``entry`` inside the block only."""
        with self.restored():
            yield self.register(name, entry)
