"""Import-cycle check for dinov2/ (a helper for the permanent test of issue 11).

Every module under dinov2/ is imported (catches cycles that break at import time), then the import graph is built
from the AST: an edge M -> N for ``import N`` / ``from N import x`` (``from P import m`` -> P.m when m is a
submodule), at any depth of the file (function-level and TYPE_CHECKING imports included, so a cycle hidden in a
function still counts). Edges to a package's own ``__init__`` implied by importing a submodule are not added.
Prints every strongly connected component with more than one module; exit status 1 when there is one.

    PYTHONPATH=$PWD python notes/check_import_cycles.py
"""

from __future__ import annotations

import ast
import importlib
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "dinov2"


def module_names() -> dict[str, Path]:
    names = {}
    for path in sorted((ROOT / PACKAGE).rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        names[".".join(parts)] = path
    return names


def edges(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    is_package = path.name == "__init__.py"
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative import
                anchor = name.split(".") if is_package else name.split(".")[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
        else:
            continue
        out.update(t for t in targets if t in modules and t != name)
    return out


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    index, low, stack, on_stack, result, counter = {}, {}, [], set(), [], [0]
    sys.setrecursionlimit(10_000)

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            result.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return result


def main() -> int:
    modules = module_names()
    failed = []
    for name in modules:
        if name.endswith("__main__"):
            continue
        try:
            importlib.import_module(name)
        except Exception as error:  # report every module that cannot be imported
            failed.append(f"{name}: {type(error).__name__}: {error}")
    graph = {name: edges(name, path, modules) for name, path in modules.items()}
    cycles = [c for c in strongly_connected(graph) if len(c) > 1]
    print(f"{len(modules)} modules, {sum(map(len, graph.values()))} internal import edges")
    for line in failed:
        print("import failed:", line)
    for cycle in cycles:
        print("cycle:", " <-> ".join(cycle))
    if not cycles:
        print("no import cycle")
    return 1 if cycles or failed else 0


if __name__ == "__main__":
    sys.exit(main())
