"""List the public names of a released package's modules, for ``tests/released_names_dinov2.json``.

    python scripts/released_names.py /path/to/dinov2-release-checkout dinov2 > tests/released_names_dinov2.json

Reads the release's source as text (``ast``; nothing of it is imported or run). A module's names are those its top
level binds (functions, classes, assignments, also inside a top-level ``if`` / ``try``, not the
``if __name__ == "__main__"`` block) and, for a package's
``__init__.py``, those it imports from the package. Private names, ``logger`` and typing aliases are left out.
``tests/test_imports.py`` checks that each name imports from the same path here, or is listed there as not kept.
"""

from __future__ import annotations

import argparse
import ast
import json
import sys
from pathlib import Path

SKIPPED = {"logger", "T", "Any", "Callable", "Dict", "List", "Optional", "Sequence", "Tuple", "Union"}


def _bound(statements: list[ast.stmt], package: str, is_init: bool) -> set[str]:
    names: set[str] = set()
    for node in statements:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
        elif isinstance(node, ast.ImportFrom) and is_init and (node.level or (node.module or "").startswith(package)):
            names.update(alias.asname or alias.name for alias in node.names if alias.name != "*")
        elif isinstance(node, ast.If) and "__main__" not in ast.unparse(node.test):  # not the script's own block
            names |= _bound(node.body + node.orelse, package, is_init)
        elif isinstance(node, ast.Try):
            inner = node.body + node.orelse + node.finalbody + [s for h in node.handlers for s in h.body]
            names |= _bound(inner, package, is_init)
    return names


def released_names(root: Path, package: str) -> dict[str, list[str]]:
    """``{module path: sorted public names}`` of every module under ``root / package``."""
    out = {}
    for path in sorted((root / package).rglob("*.py")):
        parts = path.relative_to(root).with_suffix("").parts
        module = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        names = _bound(tree.body, package, path.name == "__init__.py")
        out[module] = sorted(n for n in names if not n.startswith("_") and n not in SKIPPED)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path, help="a checkout of the release (the folder holding the package)")
    parser.add_argument("package", nargs="?", default="dinov2", help="the package folder under root")
    args = parser.parse_args(argv)
    if not (args.root / args.package).is_dir():
        parser.error(f"{args.root / args.package} is not a folder: give the release checkout and its package name")
    json.dump(released_names(args.root, args.package), sys.stdout, indent=1, sort_keys=True)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
