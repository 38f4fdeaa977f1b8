"""Strict keys: every key of a config layer must exist in a reference tree (the defaults), and an unknown key is
reported with the closest valid keys (the one "did you mean" of the project).

A reference tree is a nested ``dict`` (the defaults as a container); a ``dict`` whose only key is
:data:`ANY_NAME` stands for named sets that take any name (``retrieval.queries.<name>.k``):
:func:`schema_tree` builds such a tree from a dataclass config.
"""

from __future__ import annotations

import dataclasses
import difflib
import typing
from typing import Any

from omegaconf import DictConfig, OmegaConf

__all__ = [
    "ANY_NAME",
    "ConfigKeyError",
    "KeyProblems",
    "check_keys",
    "close_keys",
    "did_you_mean",
    "dotted_paths",
    "find_key_problems",
    "key_problems",
    "schema_tree",
]

ANY_NAME = "<name>"


class ConfigKeyError(ValueError):
    """A config file or command-line override names a key that the defaults do not have."""


def dotted_paths(tree: Any, prefix: str = "") -> list[str]:
    """Every section and leaf of a nested dict as a dotted path (``"optim"``, ``"optim.lr"``, ...)."""
    paths = []
    if isinstance(tree, dict):
        for key, value in tree.items():
            path = f"{prefix}{key}"
            paths.append(path)
            paths += dotted_paths(value, path + ".")
    return paths


def close_keys(path: str, valid: list[str], limit: int = 5) -> list[str]:
    """The valid dotted keys closest to ``path``, best first: a same-looking last component in the same section,
    then in any section (``train.lr`` -> ``optim.lr``), then same-looking whole paths."""
    ancestors = {path.rsplit(".", k)[0] for k in range(1, path.count(".") + 1)}
    valid = [p for p in valid if p not in ancestors]
    parent, _, leaf = path.rpartition(".")
    leaves = sorted({p.rpartition(".")[2] for p in valid})
    same_leaf = []
    for close in difflib.get_close_matches(leaf, leaves, n=2, cutoff=0.75):
        same_leaf += [p for p in valid if p.rpartition(".")[2] == close]
    found = [p for p in same_leaf if p.rpartition(".")[0] == parent] + same_leaf
    found += difflib.get_close_matches(path, valid, n=3, cutoff=0.6)
    return list(dict.fromkeys(found))[:limit]


def did_you_mean(path: str, valid: list[str]) -> str:
    """``"did you mean 'a' or 'b'?"`` for the keys of ``valid`` closest to ``path``, or ``""`` when none is close."""
    close = close_keys(path, valid)
    return f"did you mean {' or '.join(repr(p) for p in close)}?" if close else ""


class KeyProblems(typing.NamedTuple):
    """Keys of a layer that its reference lacks: ``unknown`` as (path, path with ``<name>`` for named sets), and
    ``not_sections``: sections of the reference given a plain value."""

    unknown: list[tuple[str, str]]
    not_sections: list[str]


def find_key_problems(tree: dict, reference: dict, prefix: str = "", generic: str = "") -> KeyProblems:
    """The :class:`KeyProblems` of ``tree`` (a plain nested dict) compared with ``reference``."""
    problems = KeyProblems([], [])
    named = list(reference) == [ANY_NAME]
    for key, value in tree.items():
        path, general = f"{prefix}{key}", f"{generic}{ANY_NAME if named else key}"
        if not named and key not in reference:
            problems.unknown.append((path, general))
            continue
        expected = reference[ANY_NAME if named else key]
        if isinstance(expected, dict):
            if isinstance(value, dict):
                sub = find_key_problems(value, expected, path + ".", general + ".")
                problems.unknown.extend(sub.unknown)
                problems.not_sections.extend(sub.not_sections)
            else:
                problems.not_sections.append(path)
        elif isinstance(value, dict):
            problems.unknown.extend((f"{path}.{k}", f"{general}.{k}") for k in value)
    return problems


def key_problems(cfg: DictConfig | dict, reference: DictConfig | dict) -> tuple[list[tuple[str, str]], list[str]]:
    """``([(unknown key, "did you mean ...?" or ""), ...], [section given a plain value, ...])`` of ``cfg``
    compared with ``reference`` (configs or plain nested dicts)."""
    tree = OmegaConf.to_container(cfg, resolve=False) if isinstance(cfg, DictConfig) else cfg
    if isinstance(reference, DictConfig):
        reference = OmegaConf.to_container(reference, resolve=False)
    unknown, not_sections = find_key_problems(tree, reference)
    valid = dotted_paths(reference) if unknown else []
    return [(path, did_you_mean(general, valid)) for path, general in unknown], not_sections


def check_keys(
    cfg: DictConfig | dict,
    reference: DictConfig | dict,
    source: str,
    rule: str = "every key must exist in ssl_default_config.yaml",
    error: type[Exception] = ConfigKeyError,
) -> None:
    """Raise ``error`` listing every key of ``cfg`` that ``reference`` lacks, each with the closest valid keys.

    ``source`` names ``cfg`` (a file, the command line), ``rule`` says which keys are valid.
    """
    unknown, not_sections = key_problems(cfg, reference)
    if not unknown and not not_sections:
        return
    lines = [f"  - unknown key {path!r}" + (f"; {hint}" if hint else "") for path, hint in unknown]
    lines += [f"  - {path!r} is a section of the config, it cannot be set to a single value" for path in not_sections]
    raise error(f"{source}: {len(lines)} invalid key(s) ({rule}):\n" + "\n".join(lines))


def _item_type(hint: Any) -> Any:
    """The item type of ``dict[str, X]``, else None."""
    return typing.get_args(hint)[1] if typing.get_origin(hint) is dict else None


def schema_tree(cls: type) -> dict:
    """The reference tree of a dataclass config: its fields, nested dataclasses as sections, ``dict[str, X]``
    fields of dataclasses ``X`` as named sets (``{ANY_NAME: tree of X}``); leaves are None."""
    tree: dict[str, Any] = {}
    for name, hint in typing.get_type_hints(cls).items():
        item = _item_type(hint)
        if dataclasses.is_dataclass(hint):
            tree[name] = schema_tree(hint)
        elif item is not None and dataclasses.is_dataclass(item):
            tree[name] = {ANY_NAME: schema_tree(item)}
        else:
            tree[name] = None
    return tree
