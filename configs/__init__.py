"""The packaged YAML configs (this folder is ``dinov2/configs`` once installed, as in the released code).

``load_config("train/vitl16_short")`` returns the YAML file as an OmegaConf object;
``load_and_merge_config("eval/vitl14_pretrain")`` merges it onto the defaults (checking its keys);
``dinov2_default_config`` is the default training config (``ssl_default_config.yaml``), read on first access.
"""

from __future__ import annotations

import functools
import pathlib

from omegaconf import DictConfig, OmegaConf

CONFIG_DIR = pathlib.Path(__file__).parent.resolve()
DEFAULT_CONFIG_NAME = "ssl_default_config"

__all__ = ["CONFIG_DIR", "config_path", "load_config", "load_and_merge_config", "dinov2_default_config"]


def available_configs() -> list[str]:
    """Names of every packaged config, e.g. ``["eval/vitb14_pretrain", ..., "train/vitl14"]``."""
    return sorted(str(p.relative_to(CONFIG_DIR).with_suffix("")) for p in CONFIG_DIR.rglob("*.yaml"))


def config_path(config_name: str) -> pathlib.Path:
    """Path of a packaged config given its name relative to this folder, with or without ``.yaml``."""
    name = config_name if config_name.endswith(".yaml") else config_name + ".yaml"
    path = CONFIG_DIR / name
    if not path.is_file():
        raise FileNotFoundError(f"no packaged config {config_name!r} in {CONFIG_DIR}; available: {available_configs()}")
    return path


def load_config(config_name: str) -> DictConfig:
    """Load a packaged config by name, e.g. ``"ssl_default_config"`` or ``"train/vitl14"``."""
    return OmegaConf.load(config_path(config_name))


@functools.cache
def _default_config() -> DictConfig:
    return load_config(DEFAULT_CONFIG_NAME)


def load_and_merge_config(config_name: str) -> DictConfig:
    """A packaged config merged onto a fresh copy of the defaults (released API).

    Unlike the release, a key that the default config lacks raises a ``ConfigKeyError`` naming it.
    """
    from dinov2.config import merge_onto_defaults  # deferred: dinov2.config imports this module

    return merge_onto_defaults(load_config(config_name), source=str(config_path(config_name)))


def __getattr__(name: str):
    # ``dinov2_default_config`` is a module attribute in the release; reading the YAML lazily keeps imports free
    # of file reads. It is one shared object (as in the release): copy it before changing it.
    if name == "dinov2_default_config":
        return _default_config()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
