"""The loader: file resolution in any packaged folder, overrides, layers checked then merged, config.yaml."""

from __future__ import annotations

import dataclasses
import math
import os

import pytest
from omegaconf import OmegaConf

import dinov2.utils.config  # noqa: F401  (registers the registry checks for load_cfg)
from dinov2.config import (
    PACKAGED,
    ConfigFolder,
    ConfigKeyError,
    ConfigValueError,
    apply_scaling_rules,
    load_cfg,
    load_dataclass_config,
    load_layers,
    merge_checked,
    packaged_names,
    parse_overrides,
    resolve_config_file,
    write_config,
)


@pytest.fixture
def recipes(tmp_path):
    root = tmp_path / "recipes"
    root.mkdir()
    (root / "defaults.yaml").write_text("optim:\n  lr: 0.1\n  betas: [0.9, 0.99]\nhead:\n  type: linear\n")
    (root / "fast.yaml").write_text("optim:\n  lr: 1.0\n")
    return ConfigFolder(root, "recipe", exclude=("defaults",), like="defaults.yaml", example="optim.lr=0.01")


def test_a_folder_resolves_names_and_lists_its_choices(recipes, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert packaged_names(recipes) == ["fast"]
    assert resolve_config_file("fast", recipes) == recipes.root / "fast.yaml"
    assert resolve_config_file("fast.yaml", recipes) == recipes.root / "fast.yaml"
    with pytest.raises(FileNotFoundError, match=r"recipe 'slow' not found .*packaged: fast$"):
        resolve_config_file("slow", recipes)
    assert "train/vitl14" in packaged_names(PACKAGED)


def test_layers_are_checked_then_merged_later_wins(recipes):
    defaults = OmegaConf.load(recipes.root / "defaults.yaml")
    layers = load_layers("fast", ["optim.betas=[0.5,0.5]"], recipes)
    assert [source for _, source in layers] == [f"recipe {str(recipes.root / 'fast.yaml')!r}", "command-line overrides"]
    cfg = merge_checked(defaults, layers)
    assert cfg.optim.lr == 1.0 and list(cfg.optim.betas) == [0.5, 0.5] and cfg.head.type == "linear"
    assert list(defaults.optim.betas) == [0.9, 0.99]  # the defaults are not changed
    with pytest.raises(ConfigKeyError, match=r"command-line overrides: 1 invalid key\(s\) \(recipe keys\)"):
        merge_checked(defaults, load_layers(None, ["optim.lrr=1"], recipes), rule="recipe keys")


def test_malformed_files_and_overrides_raise_the_callers_error(recipes):
    (recipes.root / "list.yaml").write_text("- a\n")
    with pytest.raises(KeyError, match=r"recipe '.*list\.yaml' must hold a mapping of keys \(like defaults\.yaml\)"):
        load_layers("list", [], recipes, error=KeyError)
    with pytest.raises(ValueError, match=r"path\.key=value \(e\.g\. optim\.lr=0\.01\), got \['optim\.lr'\]"):
        parse_overrides(["optim.lr"], recipes, error=ValueError)


def test_write_config_round_trip(tmp_path):
    cfg = apply_scaling_rules(load_cfg(opts=["optim.base_lr=0.004"], output_dir=str(tmp_path)), world_size=4)
    assert cfg.optim.lr == 0.004 * math.sqrt(64 * 4 / 1024.0)
    path = write_config(cfg, tmp_path / "run")
    assert OmegaConf.load(path) == cfg
    cfg.optim.scaling_rule = "linear"
    with pytest.raises(ConfigValueError, match=r"optim\.scaling_rule: got 'linear', expected one of"):
        apply_scaling_rules(cfg, world_size=1)


@dataclasses.dataclass
class _Section:
    k: int = 8


@dataclasses.dataclass
class _ToolConfig:
    """A tool's config as a dataclass (as curation and dino.txt have)."""

    section: _Section = dataclasses.field(default_factory=_Section)
    name: str = "a"
    output_dir: str = ""


class _ToolConfigError(ValueError):
    pass


def test_a_dataclass_config_loads_through_the_one_loader(tmp_path, monkeypatch):
    folder = ConfigFolder(tmp_path, "tool config", like="tool.yaml", example="section.k=3")
    (tmp_path / "tool.yaml").write_text("section:\n  k: 4\nname: b\n")
    monkeypatch.chdir(tmp_path)
    load = dict(schema=_ToolConfig, folder=folder, error=_ToolConfigError)
    cfg = load_dataclass_config(config_file="tool", opts=["section.k=5"], output_dir="out", **load)
    assert cfg == _ToolConfig(_Section(5), "b", os.path.join(str(tmp_path), "out"))  # file <- overrides <- --output-dir
    assert load_dataclass_config(config_file=None, opts=[], output_dir=None, **load) == _ToolConfig()
    with pytest.raises(_ToolConfigError, match=r"unknown key 'section.kk'; did you mean 'section.k'\?") as info:
        load_dataclass_config(config_file=None, opts=["section.kk=1"], output_dir=None, **load)
    assert "the fields of _ToolConfig in tests/config/test_loader.py" in str(info.value)
    with pytest.raises(_ToolConfigError, match="(?s)invalid tool config value: .*full_key: section.k"):
        load_dataclass_config(config_file=None, opts=["section.k=abc"], output_dir=None, **load)


def test_a_dataclass_config_s_value_checks_run_in_the_loader_and_report_every_problem_at_once(tmp_path):
    folder = ConfigFolder(tmp_path, "tool config", like="tool.yaml", example="section.k=3")

    def check(checker, cfg):
        checker.check("section.k", lambda v: v >= 1, "an integer >= 1")

    load = dict(schema=_ToolConfig, folder=folder, error=_ToolConfigError, check=check)
    with pytest.raises(_ToolConfigError, match=r"invalid tool config \(2 problem\(s\)\)") as info:
        load_dataclass_config(config_file=None, opts=["section.k=0"], output_dir=None, **load)
    assert "section.k" in str(info.value) and "output_dir: required (--output-dir" in str(info.value)
    cfg = load_dataclass_config(config_file=None, opts=[], output_dir=str(tmp_path / "out"), **load)
    assert cfg.output_dir == str(tmp_path / "out")
