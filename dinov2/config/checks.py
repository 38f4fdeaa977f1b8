"""Value checks of a merged config, run before any heavy work, and the registry they are kept in.

A check is a function ``check(c: Checker)`` that reads dotted keys through the :class:`Checker` and records every
problem; :func:`validate_config` runs all registered checks and raises one :class:`ConfigValueError` listing them
all, each line naming the key, the value and what is allowed.

Checks whose choices come from a registry live beside that registry and register themselves here when imported
(``dinov2/models/config_checks.py``: archs and FFN layers, ``dinov2/loss/config_checks.py``: centrings,
``dinov2/data/config_checks.py``: data devices, ``dinov2/distributed/config_checks.py``: sharding strategies), so a
new registry entry is accepted without a second list to edit, and this package imports nothing above ``utils/``.
:data:`REGISTRY_CHECKS` names them: :func:`validate_config` imports any of them not imported yet (by name, when a
config is validated: plugins of this package, not imports of it), and validating without one is an error, never a
silent pass.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable, Sequence
from numbers import Real
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

__all__ = [
    "REGISTRY_CHECKS",
    "Checker",
    "ConfigValueError",
    "is_int",
    "is_number",
    "register_check",
    "registered_checks",
    "validate_config",
]

MISSING = object()

# Modules that register the checks of a training config against their registries (named, not imported statically:
# they sit above this package; validate_config imports them when a config is validated).
REGISTRY_CHECKS = (
    "dinov2.data.config_checks",
    "dinov2.distributed.config_checks",
    "dinov2.loss.config_checks",
    "dinov2.models.config_checks",
)


class ConfigValueError(ValueError):
    """A config value is out of range or of the wrong type; the message lists every such value."""


def is_int(v: Any) -> bool:
    """An integer, not a bool."""
    return isinstance(v, int) and not isinstance(v, bool)


def is_number(v: Any) -> bool:
    """A finite real number, not a bool."""
    return isinstance(v, Real) and not isinstance(v, bool) and math.isfinite(v)


class Checker:
    """Accumulates error lines; each ``check`` method reads one dotted key of ``cfg`` and returns its value
    (:data:`MISSING` when the key is absent or its value was rejected)."""

    def __init__(self, cfg: DictConfig, defaults_name: str = "ssl_default_config.yaml"):
        self.cfg = cfg
        self.defaults_name = defaults_name
        self.errors: list[str] = []

    def get(self, key: str) -> Any:
        value = OmegaConf.select(self.cfg, key, default=MISSING)
        if value is MISSING:
            self.errors.append(f"{key}: missing (it is a key of {self.defaults_name}; do not delete it)")
        elif isinstance(value, (DictConfig, ListConfig)):
            value = OmegaConf.to_container(value, resolve=True)
        return value

    def fail(self, key: str, value: Any, expected: str) -> None:
        self.errors.append(f"{key}: got {value!r}, expected {expected}")

    def check(self, key: str, ok: Callable[[Any], bool], expected: str) -> Any:
        value = self.get(key)
        if value is not MISSING and not ok(value):
            self.fail(key, value, expected)
            return MISSING
        return value

    def integer(self, key: str, minimum: int) -> Any:
        return self.check(key, lambda v: is_int(v) and v >= minimum, f"an integer >= {minimum}")

    def number(self, key: str, low: float = -math.inf, high: float = math.inf, high_open: bool = False) -> Any:
        def ok(v):
            return is_number(v) and low <= v and (v < high if high_open else v <= high)

        bracket = ")" if high_open else "]"
        return self.check(key, ok, f"a number in [{low}, {high}{bracket}")

    def boolean(self, key: str) -> Any:
        return self.check(key, lambda v: isinstance(v, bool), "true or false")

    def string(self, key: str, allow_empty: bool = True) -> Any:
        what = "a string" if allow_empty else "a non-empty string"
        return self.check(key, lambda v: isinstance(v, str) and (allow_empty or v != ""), what)

    def choice(self, key: str, choices: Sequence[str]) -> Any:
        return self.check(key, lambda v: v in choices, f"one of {list(choices)}")

    def unit_range(self, key: str) -> Any:
        """A ``[min, max]`` pair with ``0 <= min <= max <= 1`` (mask ratios, crop scales)."""

        def ok(v):
            return (
                isinstance(v, (list, tuple))
                and len(v) == 2
                and all(is_number(x) and 0.0 <= x <= 1.0 for x in v)
                and v[0] <= v[1]
            )

        return self.check(key, ok, "a pair [min, max] with 0 <= min <= max <= 1")

    def raise_errors(self, title: str, error: type[Exception] = ConfigValueError) -> None:
        """Raise ``error`` listing every recorded problem under ``title``, if there is one."""
        if self.errors:
            lines = "\n".join(f"  - {e}" for e in self.errors)
            raise error(f"{title} ({len(self.errors)} problem(s)):\n{lines}")


Check = Callable[[Checker], None]
_CHECKS: dict[str, Check] = {}


def register_check(name: str, check: Check) -> Check:
    """Run ``check`` in every :func:`validate_config` (``name``: the registering module; registering a name again
    replaces its check). Returns ``check``."""
    _CHECKS[name] = check
    return check


def registered_checks() -> list[str]:
    """Names of the registered checks, in registration order."""
    return list(_CHECKS)


def validate_config(cfg: DictConfig) -> None:
    """Raise :class:`ConfigValueError` listing every invalid value of a merged training config.

    The modules of :data:`REGISTRY_CHECKS` not imported yet are imported first (``dinov2.config`` used on its own
    validates every key too); ``RuntimeError`` if one of them still has not registered its checks.
    """
    for name in REGISTRY_CHECKS:
        if name not in _CHECKS:
            importlib.import_module(name)  # registers its check on import
    missing = [name for name in REGISTRY_CHECKS if name not in _CHECKS]
    if missing:
        raise RuntimeError(
            f"the value checks of {missing} are not registered although imported: each must call register_check "
            "with its module name"
        )
    checker = Checker(cfg)
    for check in _CHECKS.values():
        check(checker)
    checker.raise_errors("invalid config")
