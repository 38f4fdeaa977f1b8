"""The packaged YAML configs (this folder is ``dinov2/configs`` once installed, as in the released code).

``load_config("train/vitl16_short")`` returns the YAML file as an OmegaConf object.
"""

from __future__ import annotations

import pathlib

from omegaconf import DictConfig, OmegaConf

CONFIG_DIR = pathlib.Path(__file__).parent.resolve()


def config_path(config_name: str) -> pathlib.Path:
    """Path of a packaged config given its name relative to this folder, with or without ``.yaml``."""
    name = config_name if config_name.endswith(".yaml") else config_name + ".yaml"
    path = CONFIG_DIR / name
    if not path.is_file():
        available = sorted(str(p.relative_to(CONFIG_DIR).with_suffix("")) for p in CONFIG_DIR.rglob("*.yaml"))
        raise FileNotFoundError(f"no packaged config {config_name!r} in {CONFIG_DIR}; available: {available}")
    return path


def load_config(config_name: str) -> DictConfig:
    """Load a packaged config by name, e.g. ``"ssl_default_config"`` or ``"train/vitl14"``."""
    return OmegaConf.load(config_path(config_name))
