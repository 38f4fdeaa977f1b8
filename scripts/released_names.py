"""List the public names of a released package's modules and their call signatures, for
``tests/released_names_dinov2.json``.

    python scripts/released_names.py /path/to/dinov2-release-checkout dinov2 > tests/released_names_dinov2.json

Reads the release's source as text (``ast``; nothing of it is imported or run). A module's names are those its top
level binds (functions, classes, assignments, also inside a top-level ``if`` / ``try``, not the
``if __name__ == "__main__"`` block) and, for a package's ``__init__.py``, those it imports from the package.
Private names, ``logger`` and typing aliases are left out. Each function maps to its parameters, each class to its
``__init__``'s (``"Class.method"`` entries for its public methods and ``forward``), written as in a ``def``: ``"*"``
before keyword-only parameters, ``"/"`` after positional-only ones, ``"*args"`` / ``"**kwargs"``; other names (and
classes without their own ``__init__``) map to null. ``tests/test_imports.py`` checks each name and signature
against the same path here, or its listing there as not kept.
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


def parameters(function: ast.FunctionDef | ast.AsyncFunctionDef) -> list[str]:
    """The parameters of ``function`` as a ``def`` writes them (``"/"``, ``"*"``, ``"*args"``, ``"**kwargs"``)."""
    args = function.args
    out = [a.arg for a in args.posonlyargs] + (["/"] if args.posonlyargs else []) + [a.arg for a in args.args]
    if args.vararg is not None:
        out.append("*" + args.vararg.arg)
    elif args.kwonlyargs:
        out.append("*")
    out += [a.arg for a in args.kwonlyargs]
    if args.kwarg is not None:
        out.append("**" + args.kwarg.arg)
    return out


def _definitions(statements: list[ast.stmt]) -> dict[str, ast.AST]:
    """Top-level functions and classes (also inside a top-level ``if`` / ``try``), the last definition winning."""
    found: dict[str, ast.AST] = {}
    for node in statements:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            found[node.name] = node
        elif isinstance(node, ast.If) and "__main__" not in ast.unparse(node.test):
            found.update(_definitions(node.body + node.orelse))
        elif isinstance(node, ast.Try):
            found.update(_definitions(node.body + [s for h in node.handlers for s in h.body] + node.orelse))
    return found


def _signatures(name: str, node: ast.AST | None) -> dict[str, list[str] | None]:
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
        return {name: parameters(node)}
    if not isinstance(node, ast.ClassDef):
        return {name: None}
    methods = {m.name: m for m in node.body if isinstance(m, (ast.FunctionDef, ast.AsyncFunctionDef))}
    out: dict[str, list[str] | None] = {name: parameters(methods["__init__"]) if "__init__" in methods else None}
    for method_name, method in methods.items():
        if any("property" in ast.unparse(d) or "setter" in ast.unparse(d) for d in method.decorator_list):
            continue  # an attribute, not a call
        if not method_name.startswith("_") or method_name == "forward":
            out[f"{name}.{method_name}"] = parameters(method)
    return out


def released_names(root: Path, package: str) -> dict[str, dict[str, list[str] | None]]:
    """``{module path: {public name: parameters or None}}`` of every module under ``root / package``."""
    out = {}
    for path in sorted((root / package).rglob("*.py")):
        parts = path.relative_to(root).with_suffix("").parts
        module = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        names = _bound(tree.body, package, path.name == "__init__.py")
        definitions = _definitions(tree.body)
        entries: dict[str, list[str] | None] = {}
        for name in sorted(n for n in names if not n.startswith("_") and n not in SKIPPED):
            entries.update(_signatures(name, definitions.get(name)))
        out[module] = entries
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path, help="a checkout of the release (the folder holding the package)")
    parser.add_argument("package", nargs="?", default="dinov2", help="the package folder under root")
    parser.add_argument("--only", nargs="+", default=(), metavar="MODULE", help="keep these modules (and submodules)")
    parser.add_argument("--no-submodules", action="store_true", help="with --only: not their submodules")
    args = parser.parse_args(argv)
    if not (args.root / args.package).is_dir():
        parser.error(f"{args.root / args.package} is not a folder: give the release checkout and its package name")
    modules = released_names(args.root, args.package)
    if args.only:
        deeper = () if args.no_submodules else tuple(o + "." for o in args.only)
        modules = {m: e for m, e in modules.items() if m in args.only or m.startswith(deeper)}
    lines = []  # one line per name: a reviewable diff when the release changes
    for module, entries in sorted(modules.items()):
        body = ",\n".join(f"  {json.dumps(name)}: {json.dumps(params)}" for name, params in entries.items())
        lines.append(f" {json.dumps(module)}: {{\n{body}\n }}" if entries else f" {json.dumps(module)}: {{}}")
    sys.stdout.write("{\n" + ",\n".join(lines) + "\n}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
