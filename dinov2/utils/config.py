"""The one config loader: defaults (``ssl_default_config.yaml``) <- config file <- command-line ``key=value``.

Rules (see the README section "Configuration"):

- a key that is not in the default config, in the file or on the command line, is an error naming the key and
  the closest valid keys;
- values are checked (:func:`dinov2.utils.config_validation.validate_config`) before any heavy work;
- ``optim.lr`` is derived from ``optim.base_lr`` by ``optim.scaling_rule`` (:func:`apply_scaling_rules_to_cfg`);
- :func:`setup` writes the resolved config to ``<output_dir>/config.yaml``.

Released entry points kept with their names: ``get_cfg_from_args``, ``apply_scaling_rules_to_cfg``,
``write_config``, ``default_setup``, ``setup``; ``get_args_parser`` is the released training parser, shared by the
train and launcher scripts.
"""

from __future__ import annotations

import argparse
import difflib
import logging
import math
import os
import pathlib
from collections.abc import Sequence
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

import dinov2.distributed as distributed
from dinov2.configs import CONFIG_DIR, DEFAULT_CONFIG_NAME, available_configs, load_config
from dinov2.utils.cli import ArgumentParser, UnsupportedFlag
from dinov2.utils.config_validation import ConfigValueError, validate_config

__all__ = [
    "ConfigKeyError",
    "ConfigValueError",
    "apply_scaling_rules_to_cfg",
    "check_keys",
    "default_setup",
    "fresh_default_config",
    "get_args_parser",
    "get_cfg_from_args",
    "load_cfg",
    "merge_onto_defaults",
    "parse_overrides",
    "resolve_config_file",
    "setup",
    "validate_config",
    "write_config",
]

logger = logging.getLogger("dinov2")

_EVAL_HELP = "released flag that never did anything: only the empty value is accepted (see --eval-only)"
_EVAL_INSTEAD = (
    "--eval-only exports the teacher of the latest checkpoint to <output-dir>/eval/manual_<iteration>/; evaluate an "
    "export with dinov2-eval-knn, dinov2-eval-linear or dinov2-eval-log-regression (python -m dinov2.eval.knn ...) "
    "--config-file <output-dir>/config.yaml --pretrained-weights <export>/teacher_checkpoint.pth"
)


class ConfigKeyError(ValueError):
    """A config file or command-line override names a key that the default config does not have."""


def _dotted_paths(tree: Any, prefix: str = "") -> list[str]:
    """Every section and leaf of a nested dict as a dotted path (``"optim"``, ``"optim.lr"``, ...)."""
    paths = []
    if isinstance(tree, dict):
        for key, value in tree.items():
            path = f"{prefix}{key}"
            paths.append(path)
            paths += _dotted_paths(value, path + ".")
    return paths


def _suggestions(path: str, valid: list[str]) -> list[str]:
    """Closest valid dotted keys to ``path``: same-looking last component in any section first, then whole paths."""
    ancestors = {path.rsplit(".", k)[0] for k in range(1, path.count(".") + 1)}
    valid = [p for p in valid if p not in ancestors]
    leaf = path.rsplit(".", 1)[-1]
    leaves = sorted({p.rsplit(".", 1)[-1] for p in valid})
    found = []
    for close_leaf in difflib.get_close_matches(leaf, leaves, n=2, cutoff=0.75):
        found += [p for p in valid if p.rsplit(".", 1)[-1] == close_leaf]
    found += difflib.get_close_matches(path, valid, n=3, cutoff=0.6)
    return list(dict.fromkeys(found))[:5]


def _unknown_keys(tree: dict, reference: dict, prefix: str = "") -> tuple[list[str], list[str]]:
    """(unknown dotted keys, sections given a plain value) of ``tree`` compared with ``reference``."""
    unknown, not_sections = [], []
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if key not in reference:
            unknown.append(path)
        elif isinstance(reference[key], dict):
            if isinstance(value, dict):
                sub_unknown, sub_sections = _unknown_keys(value, reference[key], path + ".")
                unknown += sub_unknown
                not_sections += sub_sections
            else:
                not_sections.append(path)
        elif isinstance(value, dict):
            unknown += [f"{path}.{k}" for k in value]
    return unknown, not_sections


def check_keys(cfg: DictConfig, defaults: DictConfig, source: str) -> None:
    """Raise :class:`ConfigKeyError` if ``cfg`` has a key that ``defaults`` lacks (``source`` names ``cfg``)."""
    tree = OmegaConf.to_container(cfg, resolve=False)
    reference = OmegaConf.to_container(defaults, resolve=False)
    unknown, not_sections = _unknown_keys(tree, reference)
    if not unknown and not not_sections:
        return
    valid = _dotted_paths(reference)
    lines = []
    for path in unknown:
        close = _suggestions(path, valid)
        hint = f"; did you mean {' or '.join(repr(p) for p in close)}?" if close else ""
        lines.append(f"  - unknown key {path!r}{hint}")
    lines += [f"  - {path!r} is a section of the config, it cannot be set to a single value" for path in not_sections]
    raise ConfigKeyError(
        f"{source}: {len(lines)} invalid key(s) (every key must exist in {DEFAULT_CONFIG_NAME}.yaml):\n"
        + "\n".join(lines)
    )


def fresh_default_config() -> DictConfig:
    """A new copy of ``ssl_default_config.yaml`` (never the shared ``dinov2_default_config`` object)."""
    return load_config(DEFAULT_CONFIG_NAME)


def merge_onto_defaults(*overrides: DictConfig, source: str = "config") -> DictConfig:
    """Merge configs (later wins) onto a fresh default config, checking their keys first."""
    defaults = fresh_default_config()
    for override in overrides:
        check_keys(override, defaults, source)
    return OmegaConf.merge(defaults, *overrides)


def resolve_config_file(config_file: str | os.PathLike) -> pathlib.Path:
    """Path of a config file; released paths (``dinov2/configs/train/vitl14.yaml``) fall back to our copies.

    Order: the path as given (absolute or relative to the working directory); then, for a path containing
    ``dinov2/configs/`` or starting with ``configs/``, the packaged file under that name; then a bare packaged name
    (``train/vitl14``, with or without ``.yaml``).
    """
    path = pathlib.Path(config_file).expanduser()
    if path.is_file():
        return path
    text = path.as_posix()
    candidates = [text]
    if "dinov2/configs/" in text:
        candidates.insert(0, text.split("dinov2/configs/", 1)[1])
    elif text.startswith("configs/"):
        candidates.insert(0, text[len("configs/") :])
    for name in candidates:
        packaged = CONFIG_DIR / (name if name.endswith(".yaml") else name + ".yaml")
        if packaged.is_file():
            return packaged
    raise FileNotFoundError(
        f"config file {str(config_file)!r} not found (looked relative to {os.getcwd()} and in the packaged configs "
        f"{CONFIG_DIR}); packaged configs: {available_configs()}"
    )


def parse_overrides(opts: Sequence[str] | None) -> DictConfig:
    """Command-line ``path.key=value`` overrides as a config (values parsed as YAML, e.g. ``[0.1,0.5]``)."""
    opts = list(opts or [])
    bad = [o for o in opts if "=" not in o or o.startswith("=")]
    if bad:
        raise ConfigKeyError(
            f"command-line overrides must look like path.key=value (e.g. optim.epochs=10), got {bad}; "
            "options such as --output-dir must come before the overrides"
        )
    try:
        return OmegaConf.from_dotlist(opts)
    except OmegaConfBaseException as e:
        raise ConfigKeyError(f"cannot parse command-line overrides {opts}: {e}") from e


def load_cfg(
    config_file: str | os.PathLike | None = None,
    opts: Sequence[str] | None = None,
    output_dir: str | os.PathLike | None = None,
    validate: bool = True,
) -> DictConfig:
    """Defaults <- ``config_file`` <- ``opts`` (``key=value``) <- ``output_dir``, resolved and validated.

    ``output_dir``, when given, sets ``train.output_dir``; the final ``train.output_dir`` is made absolute.
    Interpolations (``${train.output_dir}``) are resolved. Raises :class:`ConfigKeyError` for unknown keys and
    :class:`ConfigValueError` for bad values.
    """
    defaults = fresh_default_config()
    layers = []
    if config_file:
        path = resolve_config_file(config_file)
        file_cfg = OmegaConf.load(path)
        if not isinstance(file_cfg, DictConfig):
            raise ConfigKeyError(
                f"config file {str(path)!r} must hold a mapping of keys (like ssl_default_config.yaml)"
            )
        check_keys(file_cfg, defaults, source=f"config file {str(path)!r}")
        layers.append(file_cfg)
    cli = parse_overrides(opts)
    check_keys(cli, defaults, source="command-line overrides")
    layers.append(cli)
    if any(OmegaConf.select(layer, "optim.lr") not in (None, 0) for layer in layers):
        logger.warning("optim.lr is derived from optim.base_lr by optim.scaling_rule: set optim.base_lr instead")
    cfg = OmegaConf.merge(defaults, *layers)
    if output_dir:
        cfg.train.output_dir = str(output_dir)
    cfg.train.output_dir = os.path.abspath(os.path.expanduser(str(cfg.train.output_dir)))
    try:
        OmegaConf.resolve(cfg)
    except OmegaConfBaseException as e:
        raise ConfigValueError(f"cannot resolve an interpolation (${{...}}) in the config: {e}") from e
    if validate:
        validate_config(cfg)
    return cfg


def get_cfg_from_args(args: argparse.Namespace) -> DictConfig:
    """Config from parsed arguments (``config_file``, ``opts``, ``output_dir``); sets ``args.output_dir``.

    ``--output-dir`` wins over ``train.output_dir``; without it, ``train.output_dir`` is used (the release used
    the working directory in that case).
    """
    cfg = load_cfg(getattr(args, "config_file", None), getattr(args, "opts", None), getattr(args, "output_dir", None))
    args.output_dir = cfg.train.output_dir
    return cfg


def apply_scaling_rules_to_cfg(cfg: DictConfig, world_size: int | None = None) -> DictConfig:
    """Set ``optim.lr`` from ``optim.base_lr`` (in place; returns ``cfg``).

    ``sqrt_wrt_1024``: ``lr = base_lr * sqrt(batch_size_per_gpu * world_size / 1024)``; ``world_size`` defaults to
    the number of processes of the default process group (1 without one).
    """
    rule = cfg.optim.scaling_rule
    if rule != "sqrt_wrt_1024":
        raise ConfigValueError(f"optim.scaling_rule: got {rule!r}, expected one of ['sqrt_wrt_1024']")
    world_size = distributed.get_global_size() if world_size is None else world_size
    base_lr = cfg.optim.base_lr
    cfg.optim.lr = base_lr * math.sqrt(cfg.train.batch_size_per_gpu * world_size / 1024.0)
    logger.info(f"sqrt scaling learning rate; base: {base_lr}, new: {cfg.optim.lr}")
    return cfg


def write_config(cfg: DictConfig, output_dir: str | os.PathLike, name: str = "config.yaml") -> str:
    """Save ``cfg`` as YAML to ``<output_dir>/<name>`` and return that path."""
    logger.info(OmegaConf.to_yaml(cfg))
    path = os.path.join(output_dir, name)
    os.makedirs(output_dir, exist_ok=True)
    OmegaConf.save(config=cfg, f=path)
    return path


def default_setup(args: argparse.Namespace, seed: int = 0) -> None:
    """Logging to ``args.output_dir``, seeds ``seed + rank``, and the git state and arguments in the log.

    The process group must already exist (the release started it here): the rank and world size are read from it.
    """
    from dinov2.logging import setup_logging
    from dinov2.utils import utils

    setup_logging(output=args.output_dir, level=logging.INFO)
    utils.fix_random_seeds(seed + distributed.get_global_rank())
    logger.info(f"git:\n  {utils.get_sha()}\n")
    logger.info("\n".join(f"{k}: {v}" for k, v in sorted(vars(args).items())))


def setup(args: argparse.Namespace) -> DictConfig:
    """Load and check the config, set up logging and seeds, apply the scaling rule, write ``config.yaml``.

    Seeds are ``train.seed + rank`` (the release always used ``0 + rank``; ``train.seed`` defaults to 0). Only the
    main process writes ``config.yaml``.
    """
    cfg = get_cfg_from_args(args)
    os.makedirs(args.output_dir, exist_ok=True)
    default_setup(args, seed=cfg.train.seed)
    apply_scaling_rules_to_cfg(cfg)
    if distributed.is_main_process():
        write_config(cfg, args.output_dir)
    return cfg


def get_args_parser(
    description: str = "DINOv2 training",
    add_help: bool = True,
    parents: Sequence[argparse.ArgumentParser] | None = None,
) -> argparse.ArgumentParser:
    """The released training command line: ``--config-file --no-resume --eval-only --eval --output-dir opts``, plus
    DINOv3's ``--multi-distillation``.

    Defaults are shown in ``--help``. ``--eval`` is kept for released command lines but did nothing in the release:
    a value other than ``""`` is a usage error naming ``--eval-only`` and the evaluation commands.
    """
    parser = ArgumentParser(description=description, parents=list(parents or []), add_help=add_help)
    parser.add_argument("--config-file", default="", metavar="FILE", help="path to config file")
    parser.add_argument(
        "--no-resume",
        action="store_true",
        help="Whether to not attempt to resume from the checkpoint directory. ",
    )
    parser.add_argument("--eval-only", action="store_true", help="perform evaluation only")
    parser.add_argument("--eval", type=str, default="", action=UnsupportedFlag, instead=_EVAL_INSTEAD, help=_EVAL_HELP)
    parser.add_argument(
        "--multi-distillation",
        action="store_true",
        help="(DINOv3's flag) several students at once; implied by multidistillation.enabled=true in the config",
    )
    parser.add_argument(
        "opts",
        help='Modify config options at the end of the command using "path.key=value", e.g. optim.epochs=10',
        default=None,
        nargs=argparse.REMAINDER,
    )
    parser.add_argument(
        "--output-dir",
        "--output_dir",
        default="",
        type=str,
        help="Output directory to save logs and checkpoints",
    )
    return parser
