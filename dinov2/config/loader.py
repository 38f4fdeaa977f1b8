"""Loading: defaults <- config file <- command-line ``key=value``, with strict keys, for every config of the project.

- :func:`resolve_config_file`: a path, a released path (``dinov2/configs/train/vitl14.yaml``) or a packaged name
  (``train/vitl14``) -> the file; other packaged folders (the dense probe recipes) pass their own folder;
- :func:`load_layers`: that file (a mapping) and the overrides (:func:`parse_overrides`) as ``(layer, source)``;
- :func:`merge_checked`: the layers' keys checked against the defaults (:func:`dinov2.config.keys.check_keys`),
  then merged, later wins;
- :func:`merge_training_layers`: the training layers onto DINOv2's ``ssl_default_config.yaml`` or, for a DINOv3
  config, DINOv3's ``ssl_default_config_dinov3.yaml`` (:mod:`dinov2.config.dinov3`);
- :func:`load_dataclass_config`: a config whose schema is a dataclass (curation, dino.txt): the above onto its
  defaults, an ``--output-dir`` layer, the object built, ``output_dir`` made absolute;
- :func:`load_cfg`: the training config: the above, ``train.output_dir`` made
  absolute, interpolations resolved, values validated (:func:`dinov2.config.checks.validate_config`);
- :func:`apply_scaling_rules` derives ``optim.lr``; :func:`write_config` writes the run's ``config.yaml``.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import pathlib
from collections.abc import Callable, Sequence
from typing import NamedTuple, TypeVar

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from dinov2.config.checks import Checker, ConfigValueError, validate_config
from dinov2.config.dinov3 import (
    DINOV3_DEFAULT_CONFIG_NAME,
    UnimplementedConfigError,
    dinov3_reference,
    is_dinov3_config,
    is_dinov3_form,
    to_trainer_form,
    unimplemented_settings,
    without_null_specs,
)
from dinov2.config.keys import ConfigKeyError, check_keys, schema_tree
from dinov2.config.ssl_checks import SCALING_RULES

logger = logging.getLogger("dinov2")

# The packaged YAML folder (``dinov2/configs``, the released location). Found from here rather than imported from
# ``dinov2.configs``, whose released ``load_and_merge_config`` calls this loader: the import goes one way only.
CONFIG_DIR = (pathlib.Path(__file__).resolve().parents[1] / "configs").resolve()
DEFAULT_CONFIG_NAME = "ssl_default_config"

Layer = tuple[DictConfig, str]  # a config layer and the words that name it in errors ("config file 'a.yaml'")


class ConfigFolder(NamedTuple):
    """A folder of packaged YAML configs, and how errors name its files and show the right forms."""

    root: pathlib.Path = CONFIG_DIR
    what: str = "config file"  # a file of this folder, in errors
    exclude: tuple[str, ...] = ()  # names not listed as choices (a defaults file)
    like: str = f"{DEFAULT_CONFIG_NAME}.yaml"  # a well-formed file
    example: str = "optim.epochs=10"  # a well-formed override


PACKAGED = ConfigFolder()  # dinov2/configs: training, evaluation and curation configs


def packaged_names(folder: ConfigFolder = PACKAGED) -> list[str]:
    """Names of the YAML files of a packaged folder, e.g. ``["eval/vitb14_pretrain", ..., "train/vitl14"]``."""
    names = (str(p.relative_to(folder.root).with_suffix("")) for p in folder.root.rglob("*.yaml"))
    return sorted(name for name in names if name not in folder.exclude)


def resolve_config_file(config_file: str | os.PathLike, folder: ConfigFolder = PACKAGED) -> pathlib.Path:
    """Path of a config file; released paths (``dinov2/configs/train/vitl14.yaml``) fall back to our copies.

    Order: the path as given (absolute or relative to the working directory); then, for a path containing
    ``dinov2/configs/`` or starting with ``configs/``, the packaged file under that name; then a bare packaged name
    (``train/vitl14``, with or without ``.yaml``) in ``folder``. The error lists the packaged names.
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
        packaged = folder.root / (name if name.endswith(".yaml") else name + ".yaml")
        if packaged.is_file():
            return packaged
    raise FileNotFoundError(
        f"{folder.what} {str(config_file)!r} not found (looked relative to {os.getcwd()} and in the packaged folder "
        f"{folder.root}); packaged: {', '.join(packaged_names(folder))}"
    )


def read_config_file(
    path: str | os.PathLike, folder: ConfigFolder = PACKAGED, error: type[Exception] = ConfigKeyError
) -> DictConfig:
    """A YAML file holding a mapping of keys (an empty file is an empty config); else ``error`` naming it."""
    cfg = OmegaConf.load(path)
    if not isinstance(cfg, DictConfig):
        raise error(f"{folder.what} {str(path)!r} must hold a mapping of keys (like {folder.like})")
    return cfg


def parse_overrides(
    opts: Sequence[str] | None, folder: ConfigFolder = PACKAGED, error: type[Exception] = ConfigKeyError
) -> DictConfig:
    """Command-line ``path.key=value`` overrides as a config (values parsed as YAML, e.g. ``[0.1,0.5]``)."""
    opts = list(opts or [])
    bad = [o for o in opts if "=" not in o or o.startswith("=")]
    if bad:
        raise error(
            f"command-line overrides must look like path.key=value (e.g. {folder.example}), got {bad}; "
            "options such as --output-dir must come before the overrides"
        )
    try:
        return OmegaConf.from_dotlist(opts)
    except OmegaConfBaseException as e:
        raise error(f"cannot parse command-line overrides {opts}: {e}") from e


def load_layers(
    config_file: str | os.PathLike | None,
    opts: Sequence[str] | None,
    folder: ConfigFolder = PACKAGED,
    error: type[Exception] = ConfigKeyError,
) -> list[Layer]:
    """``[(file, "<what> '<path>'"), (overrides, "command-line overrides")]``, the file left out when not given.

    The file is resolved in ``folder`` (:func:`resolve_config_file`) and must hold a mapping; ``error`` is raised
    for a file that does not and for malformed overrides.
    """
    layers = []
    if config_file:
        path = resolve_config_file(config_file, folder)
        layers.append((read_config_file(path, folder, error), f"{folder.what} {str(path)!r}"))
    layers.append((parse_overrides(opts, folder, error), "command-line overrides"))
    return layers


def merge_checked(
    defaults: DictConfig,
    layers: Sequence[Layer],
    reference: dict | DictConfig | None = None,
    rule: str = f"every key must exist in {DEFAULT_CONFIG_NAME}.yaml",
    error: type[Exception] = ConfigKeyError,
) -> DictConfig:
    """Check every layer's keys against ``reference`` (default: ``defaults``), then merge them onto ``defaults``."""
    for layer, source in layers:
        check_keys(layer, defaults if reference is None else reference, source, rule, error)
    return OmegaConf.merge(defaults, *(layer for layer, _ in layers))


Schema = TypeVar("Schema")


def load_dataclass_config(
    schema: type[Schema],
    config_file: str | os.PathLike | None,
    opts: Sequence[str] | None,
    output_dir: str | os.PathLike | None,
    folder: ConfigFolder,
    error: type[Exception],
    check: Callable[[Checker, Schema], None] | None = None,
) -> Schema:
    """A config whose schema is the dataclass ``schema`` (with an ``output_dir`` field): its defaults <-
    ``config_file`` (resolved in ``folder``) <- ``opts`` <- ``output_dir`` (``--output-dir``), every key checked
    against the dataclass's fields (closest valid keys suggested), the object built and its ``output_dir`` made
    absolute. ``error`` is raised for unknown keys, malformed files and overrides, and values of the wrong type.

    With ``check``: the values are checked too, ``check(checker, cfg)`` recording the schema's own problems in a
    :class:`~dinov2.config.checks.Checker` and an empty ``output_dir`` being one; every problem is then raised at
    once as ``error``."""
    layers = load_layers(config_file, opts, folder, error)
    if output_dir:
        layers.append((OmegaConf.create({"output_dir": str(output_dir)}), "--output-dir"))
    source = schema.__module__.replace(".", "/") + ".py"
    rule = f"the keys of a {folder.what} are the fields of {schema.__name__} in {source}"
    try:
        merged = merge_checked(OmegaConf.structured(schema), layers, schema_tree(schema), rule, error)
        cfg = OmegaConf.to_object(merged)
    except OmegaConfBaseException as problem:
        raise error(f"invalid {folder.what} value: {problem}") from None
    cfg.output_dir = os.path.abspath(os.path.expanduser(cfg.output_dir)) if cfg.output_dir else ""
    if check is not None:
        checker = Checker(OmegaConf.structured(cfg), defaults_name=schema.__name__)
        check(checker, cfg)
        if not cfg.output_dir:
            checker.errors.append("output_dir: required (--output-dir or output_dir: in the file)")
        checker.raise_errors(f"invalid {folder.what}", error)
    return cfg


def fresh_default_config() -> DictConfig:
    """A new copy of ``ssl_default_config.yaml`` (never the shared ``dinov2_default_config`` object)."""
    return OmegaConf.load(CONFIG_DIR / f"{DEFAULT_CONFIG_NAME}.yaml")


def fresh_dinov3_default_config() -> DictConfig:
    """A new copy of ``ssl_default_config_dinov3.yaml`` (DINOv3's defaults, in its released form)."""
    return OmegaConf.load(CONFIG_DIR / f"{DINOV3_DEFAULT_CONFIG_NAME}.yaml")


def merge_training_layers(layers: Sequence[Layer]) -> DictConfig:
    """The training config of ``layers`` merged onto the defaults they ask for, keys checked.

    DINOv2's ``ssl_default_config.yaml``, or DINOv3's ``ssl_default_config_dinov3.yaml`` when the layers hold a
    DINOv3-family student, a ``schedules`` section or a DINOv3-only key
    (:func:`dinov2.config.dinov3.is_dinov3_config`); a DINOv3 config
    is then turned into the trainer's keys (:func:`dinov2.config.dinov3.to_trainer_form`) and its settings that
    we do not implement raise one :class:`~dinov2.config.dinov3.UnimplementedConfigError` naming them all.
    """
    defaults, v3_defaults = fresh_default_config(), fresh_dinov3_default_config()
    if not is_dinov3_config([layer for layer, _ in layers], defaults, v3_defaults):
        return merge_checked(defaults, layers)
    rule = (
        f"every key must exist in {DINOV3_DEFAULT_CONFIG_NAME}.yaml, the defaults of a DINOv3 config "
        "(a DINOv3-family student, a schedules section, or a key only DINOv3 has)"
    )
    reference = dinov3_reference(v3_defaults, defaults)
    for layer, source in layers:
        check_keys(without_null_specs(layer), reference, source, rule)
    cfg = OmegaConf.merge(v3_defaults, *(layer for layer, _ in layers))
    unimplemented = unimplemented_settings(cfg)
    if unimplemented:
        lines = "\n".join(f"  - {line}" for line in unimplemented)
        sources = ", ".join(source for _, source in layers)
        raise UnimplementedConfigError(
            f"{sources}: {len(unimplemented)} DINOv3 setting(s) this trainer does not implement (set them to the "
            f"implemented value or remove them):\n{lines}"
        )
    return to_trainer_form(cfg, [layer for layer, _ in layers])


def merge_onto_defaults(*overrides: DictConfig, source: str = "config") -> DictConfig:
    """Merge configs (later wins) onto the defaults they ask for (:func:`merge_training_layers`), keys checked."""
    return merge_training_layers([(override, source) for override in overrides])


def load_cfg(
    config_file: str | os.PathLike | None = None,
    opts: Sequence[str] | None = None,
    output_dir: str | os.PathLike | None = None,
    validate: bool = True,
) -> DictConfig:
    """Defaults <- ``config_file`` <- ``opts`` (``key=value``) <- ``output_dir``, resolved and validated.

    The defaults are DINOv2's or, for a DINOv3 config, DINOv3's (:func:`merge_training_layers`). ``output_dir``,
    when given, sets ``train.output_dir``; the final ``train.output_dir`` is made absolute.
    Interpolations (``${train.output_dir}``) are resolved. Raises :class:`ConfigKeyError` for unknown keys and
    :class:`ConfigValueError` for bad values.
    """
    layers = load_layers(config_file, opts)
    cfg = merge_training_layers(layers)
    # A layer setting optim.lr alone (a run's own config.yaml holds both: the scaled lr is derived again)
    setting_lr = any(
        OmegaConf.select(layer, "optim.lr") not in (None, 0) and OmegaConf.select(layer, "optim.base_lr") is None
        for layer, _ in layers
    )
    if setting_lr and not is_dinov3_form(cfg):  # DINOv3's optim.lr is its base learning rate
        logger.warning("optim.lr is derived from optim.base_lr by optim.scaling_rule: set optim.base_lr instead")
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


def apply_scaling_rules(cfg: DictConfig, world_size: int) -> DictConfig:
    """Set ``optim.lr`` from ``optim.base_lr`` for ``world_size`` processes (in place; returns ``cfg``).

    ``sqrt_wrt_1024``: ``lr = base_lr * sqrt(batch_size_per_gpu * world_size / 1024)``. A DINOv3 config has
    ``base_lr = 4 * (its optim.lr)``, or 4 with ``schedules`` (``lr`` is then the factor of the lr schedule).
    """
    rule = cfg.optim.scaling_rule
    if rule not in SCALING_RULES:
        raise ConfigValueError(f"optim.scaling_rule: got {rule!r}, expected one of {list(SCALING_RULES)}")
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
