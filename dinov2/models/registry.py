"""What every registry of the tree (archs, model families, hub names) shares: putting a table back as it was."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, MutableMapping

__all__ = ["restored_after"]


@contextlib.contextmanager
def restored_after(table: MutableMapping) -> Iterator[None]:
    """On exit (also when the body raises), ``table`` holds exactly what it held on entry: for tests and demos
    that register entries for a while."""
    saved = dict(table)
    try:
        yield
    finally:
        table.clear()
        table.update(saved)
