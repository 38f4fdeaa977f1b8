"""The one config loader of the project: defaults <- config file <- command-line ``key=value``, strict keys with
the closest valid keys suggested, value checks kept beside the registries they check, the run's ``config.yaml``.

Used by training (``ssl_default_config.yaml``, :func:`load_cfg`), the teacher configs of distillation, the dense
probe recipes, and the curation and dino.txt configs (dataclasses: :func:`load_dataclass_config`). Imports nothing
above ``utils/``: registries register their value checks here (:func:`register_check`). ``dinov2.utils.config`` is
the released path: it re-exports this package, imports the registry checks and keeps ``setup`` / ``default_setup``.

- ``keys``: :class:`ConfigKeyError`, :func:`check_keys`, :func:`did_you_mean`, :func:`schema_tree`;
- ``checks``: :class:`ConfigValueError`, :class:`Checker`, :func:`register_check`, :func:`validate_config`;
- ``ssl_checks``: the training config's checks that need no registry;
- ``dinov3``: DINOv3's configs as released: when DINOv3's defaults apply, its forms, the keys not implemented;
- ``loader``: :func:`resolve_config_file`, :func:`parse_overrides`, :func:`load_layers`, :func:`merge_checked`,
  :func:`load_dataclass_config`, :func:`merge_training_layers`, :func:`load_cfg`, :func:`apply_scaling_rules`,
  :func:`write_config`.
"""

from dinov2.config.checks import (
    REGISTRY_CHECKS,
    Checker,
    ConfigValueError,
    register_check,
    registered_checks,
    validate_config,
)
from dinov2.config.dinov3 import (
    DINOV3_DEFAULT_CONFIG_NAME,
    UnimplementedConfigError,
    is_dinov3_config,
    register_student_family,
)
from dinov2.config.keys import (
    ANY_NAME,
    ConfigKeyError,
    check_keys,
    did_you_mean,
    dotted_paths,
    key_problems,
    schema_tree,
)
from dinov2.config.loader import (
    CONFIG_DIR,
    DEFAULT_CONFIG_NAME,
    PACKAGED,
    SCALING_RULES,
    ConfigFolder,
    apply_scaling_rules,
    fresh_default_config,
    fresh_dinov3_default_config,
    get_cfg_from_args,
    load_cfg,
    load_dataclass_config,
    load_layers,
    merge_checked,
    merge_onto_defaults,
    merge_training_layers,
    packaged_names,
    parse_overrides,
    read_config_file,
    resolve_config_file,
    write_config,
)

__all__ = [
    "ANY_NAME",
    "CONFIG_DIR",
    "DEFAULT_CONFIG_NAME",
    "DINOV3_DEFAULT_CONFIG_NAME",
    "PACKAGED",
    "REGISTRY_CHECKS",
    "SCALING_RULES",
    "Checker",
    "ConfigFolder",
    "ConfigKeyError",
    "ConfigValueError",
    "UnimplementedConfigError",
    "apply_scaling_rules",
    "check_keys",
    "did_you_mean",
    "dotted_paths",
    "key_problems",
    "fresh_default_config",
    "fresh_dinov3_default_config",
    "get_cfg_from_args",
    "load_cfg",
    "load_dataclass_config",
    "load_layers",
    "merge_checked",
    "merge_onto_defaults",
    "merge_training_layers",
    "is_dinov3_config",
    "register_student_family",
    "packaged_names",
    "parse_overrides",
    "read_config_file",
    "resolve_config_file",
    "register_check",
    "registered_checks",
    "schema_tree",
    "validate_config",
    "write_config",
]
