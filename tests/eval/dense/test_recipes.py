"""The dense probes' recipes are packaged configs: they live in ``configs/eval/<task>/`` next to the other packaged
configs, every recipe the probes name resolves, and the package data of a (non-editable) build includes them."""

from __future__ import annotations

import re

import pytest

import dinov2.configs as configs
from dinov2.eval.dense import probe as dense_probe
from dinov2.eval.depth import probe as depth_probe
from dinov2.eval.segmentation import probe as segmentation_probe
from dinov2.run.eval import depth as depth_launcher
from dinov2.run.eval import segmentation as segmentation_launcher
from tests.conftest import REPO_ROOT

PROBES = {"segmentation": (segmentation_probe, segmentation_launcher), "depth": (depth_probe, depth_launcher)}


def _named_recipes(task: str) -> set[str]:
    """The recipes a probe names: its default, those its docstrings and its launcher's show, and its head types."""
    probe, launcher = PROBES[task]
    names = {probe.get_args_parser().get_default("recipe")}
    for doc in (probe.__doc__, launcher.__doc__):
        for choice in re.findall(r"--recipe ([\w|]+)", doc):
            names.update(choice.split("|"))
    names.update(getattr(probe, "HEAD_BLOCKS", {}))  # segmentation: recipe name = head type
    return names


@pytest.mark.parametrize("task", sorted(PROBES))
def test_every_named_recipe_resolves_from_the_packaged_configs(task):
    probe, _ = PROBES[task]
    assert probe.CONFIG_DIR == dense_probe.recipe_dir(task) == configs.CONFIG_DIR / "eval" / task
    packaged = {name.removeprefix(f"eval/{task}/") for name in configs.available_configs()}
    named = _named_recipes(task)
    assert len(named) >= 2 and named <= packaged
    for name in named:
        cfg = dense_probe.load_recipe(probe.CONFIG_DIR, name)
        assert cfg == dense_probe.load_recipe(probe.CONFIG_DIR, str(configs.config_path(f"eval/{task}/{name}")))


def test_recipes_are_package_data_of_a_build():
    """What setuptools packages (pyproject: namespace package discovery through the ``dinov2/configs`` link, the
    ``*.yaml`` package data) includes every recipe, as in a non-editable wheel."""
    setuptools = pytest.importorskip("setuptools", reason="setuptools (the build backend) reads pyproject.toml")
    from setuptools.config.pyprojecttoml import read_configuration

    settings = read_configuration(REPO_ROOT / "pyproject.toml", expand=False)["tool"]["setuptools"]
    packages = setuptools.find_namespace_packages(where=str(REPO_ROOT), include=settings["packages"]["find"]["include"])
    assert (REPO_ROOT / "dinov2" / "configs").resolve() == configs.CONFIG_DIR
    for task in PROBES:
        recipes = sorted(dense_probe.recipe_dir(task).glob("*.yaml"))
        assert "defaults.yaml" in {p.name for p in recipes}
        assert f"dinov2.configs.eval.{task}" in packages
        assert any(all(p.match(pattern) for p in recipes) for pattern in settings["package-data"]["*"])
