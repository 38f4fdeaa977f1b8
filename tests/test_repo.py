"""Repository-level checks: the README's commands, CI, packaging and lint."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from tests.conftest import REPO_ROOT


def _readme_commands() -> list[str]:
    text = (REPO_ROOT / "README.md").read_text()
    block = re.search(r"```bash\n(.*?)```", text, re.S)
    assert block, "README.md must start with a bash block holding the two newcomer commands"
    return [line.split("#")[0].strip() for line in block.group(1).strip().splitlines()]


def test_readme_starts_with_install_and_test_commands():
    install_and_run, test = _readme_commands()[:2]
    assert install_and_run.startswith("pip install")
    assert "pytest" in test


def test_ci_runs_the_readme_commands():
    install_and_run, test = _readme_commands()[:2]
    install = install_and_run.split("&&")[0].strip()  # CI installs; the main job runs in the tests
    ci = (REPO_ROOT / ".ci" / "run").read_text()
    assert install.replace("pip install", "python -m pip install") in ci
    assert test in ci


def test_configs_folder_is_reachable_from_package():
    import dinov2.configs as configs

    assert configs.CONFIG_DIR == (REPO_ROOT / "configs").resolve()


@pytest.mark.skipif(shutil.which("ruff") is None, reason="ruff not installed (pip install -e '.[dev]')")
def test_ruff_clean():
    result = subprocess.run(["ruff", "check", str(REPO_ROOT)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
