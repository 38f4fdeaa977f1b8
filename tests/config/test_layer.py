"""dinov2/config sits just above utils/: it imports nothing above it (not even the YAML package dinov2.configs,
whose released ``load_and_merge_config`` calls the loader), so every package may load configs."""

from __future__ import annotations

import ast
import subprocess
import sys

from tests.conftest import REPO_ROOT

PACKAGE = REPO_ROOT / "dinov2" / "config"
ALLOWED = ("dinov2.config", "dinov2.utils")  # itself and the floor


def _imported_modules(path):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            yield node.module


def test_config_package_imports_nothing_above_utils():
    upward = [
        f"{path.name}: {module}"
        for path in sorted(PACKAGE.glob("*.py"))
        for module in _imported_modules(path)
        if module.split(".")[0] == "dinov2" and not any(module == a or module.startswith(a + ".") for a in ALLOWED)
    ]
    assert not upward, upward


def test_importing_the_loader_loads_no_package_above_it():
    code = (
        "import sys, dinov2.config\n"
        "print(sorted({m.split('.')[1] for m in sys.modules if m.startswith('dinov2.') and m.count('.') >= 1}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "['config', 'utils']"


def test_one_did_you_mean_in_the_package():
    """Key suggestions are made in one place (dinov2/config/keys.py); other loaders call it."""
    users = sorted(
        str(path.relative_to(REPO_ROOT))
        for path in (REPO_ROOT / "dinov2").rglob("*.py")
        if "difflib" in set(_imported_modules(path))
    )
    assert users == ["dinov2/config/keys.py"]
