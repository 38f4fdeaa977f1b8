"""Conventions shared by every ``dinov2`` command line (the ``dinov2-*`` console scripts and ``python -m ...``).

- :class:`ArgumentParser` shows each option's default in ``--help`` (:class:`HelpFormatter`); sub-commands made
  with ``add_subparsers`` inherit it.
- :func:`add_output_dir`: ``--output-dir`` with the released spelling ``--output_dir`` as an alias.
- :func:`add_overrides`: trailing ``key=value`` config overrides, collected into ``args.opts`` together with
  ``--opts key=value ...`` (:func:`add_opts_flag`: the released evaluation flag, kept as an alias). Parse with
  ``parser.parse_intermixed_args`` so that options may also follow the overrides.
- Flags a command cannot work without are declared ``required``: a missing one is argparse's usage error (exit
  code 2, the usage line and the flag's name), never a traceback from later code. :func:`usage_errors` turns the
  errors of checks made right after parsing (a config key, a missing file) into the same kind of usage error.
- :func:`check_writable_dir`: an output folder that cannot be created or written into is a usage error naming the
  folder and its flag, found right after parsing, before anything is computed or downloaded.
- :class:`UnsupportedFlag`: a released flag that never did anything stays accepted with its no-op value; any other
  value is a usage error naming what to use instead.
- :data:`NO_CONFIG_NOTE`: the ``--help`` epilog of commands that have no config, hence nothing to override.
- :func:`default_prog`: usage lines name the program as started (``python -m dinov2.eval.knn``, ``dinov2-eval-knn``).
- :func:`call_with_args`: an entry point's ``main(args)`` forwards the parsed flags to the library function of the
  same parameter names.

Console-script targets (``[project.scripts]`` in ``pyproject.toml``) take no argument, parse ``sys.argv`` and
return the exit status.
"""

from __future__ import annotations

import argparse
import contextlib
import enum
import inspect
import os
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "NO_CONFIG_NOTE",
    "ArgumentParser",
    "HelpFormatter",
    "UnsupportedFlag",
    "add_opts_flag",
    "add_output_dir",
    "add_overrides",
    "call_with_args",
    "check_writable_dir",
    "default_prog",
    "usage_errors",
]

NO_CONFIG_NOTE = "This command has no config: there are no key=value overrides;\neverything is set by the options."


def _shown(value: Any) -> str:
    """A default as it would be typed on the command line (lists space-separated, enums by value)."""
    if isinstance(value, (list, tuple)):
        return " ".join(_shown(v) for v in value)
    if isinstance(value, enum.Enum):
        return str(value.value)
    return os.fspath(value) if isinstance(value, os.PathLike) else str(value)


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Descriptions and epilogs kept as written; ``(default: X)`` after the help of every option that takes a value
    and has a default (not for ``None``, ``""``, empty lists, nor for flags that take no value such as
    ``store_true``, whose default is the flag's absence)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if "%(default)" in text or action.nargs == 0 or default is argparse.SUPPRESS:
            return text
        if default is None or default is False or (isinstance(default, (str, list, tuple)) and len(default) == 0):
            return text
        if isinstance(default, (list, tuple)) and all(v is None for v in default):  # e.g. [None]: nothing given
            return text
        if not action.option_strings and action.nargs not in (argparse.OPTIONAL, argparse.ZERO_OR_MORE):
            return text
        return f"{text} (default: {_shown(default).replace('%', '%%')})"


def default_prog() -> str | None:
    """``python -m <module>`` when this process was started that way (argparse would say ``__main__.py``), else None
    (argparse's default: the script name, e.g. ``dinov2-eval-knn`` for a console script)."""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    if spec is None or not spec.name:
        return None
    name = spec.name[: -len(".__main__")] if spec.name.endswith(".__main__") else spec.name
    return f"python -m {name}"


class ArgumentParser(argparse.ArgumentParser):
    """``argparse.ArgumentParser`` with :class:`HelpFormatter` unless another ``formatter_class`` is given, and
    ``prog`` from :func:`default_prog` unless given."""

    def __init__(self, *args: Any, formatter_class: type[argparse.HelpFormatter] = HelpFormatter, **kwargs: Any):
        if not args and kwargs.get("prog") is None:
            kwargs["prog"] = default_prog()
        super().__init__(*args, formatter_class=formatter_class, **kwargs)


def add_output_dir(parser: argparse.ArgumentParser, help: str = "output directory", **kwargs: Any) -> argparse.Action:
    """``--output-dir`` / ``--output_dir`` (dest ``output_dir``); ``kwargs`` go to ``add_argument`` (default "")."""
    kwargs.setdefault("default", "")
    return parser.add_argument("--output-dir", "--output_dir", dest="output_dir", type=str, help=help, **kwargs)


class _ExtendOpts(argparse.Action):
    """Append the trailing ``key=value`` strings to ``namespace.opts`` (shared with ``--opts``)."""

    def __call__(self, parser, namespace, values, option_string=None):
        namespace.opts = [*(getattr(namespace, "opts", None) or []), *values]


def add_opts_flag(parser: argparse.ArgumentParser, target: str = "the config") -> argparse.Action:
    """``--opts key=value ...`` (dest ``opts``, default ``[]``; repeated flags add up): the released evaluation flag,
    an alias of the trailing overrides of :func:`add_overrides`."""
    return parser.add_argument(
        "--opts",
        nargs="+",
        action="extend",
        default=[],
        metavar="KEY=VALUE",
        help=f"overrides of {target}, e.g. student.arch=vit_base",
    )


def add_overrides(parser: argparse.ArgumentParser, target: str = "the config") -> argparse.Action:
    """Trailing ``key=value`` overrides of ``target``, added to ``args.opts`` after those of ``--opts`` (whatever
    their order on the command line; a later value of a key wins). Declare ``--opts`` (:func:`add_opts_flag`) too.

    A ``key=value`` right after an option that takes several values (``--nb_knn 10 20``) is read as one of those
    values: put overrides after single-valued options, or after ``--opts``.
    """
    return parser.add_argument(
        "overrides",
        nargs="*",
        action=_ExtendOpts,
        default=argparse.SUPPRESS,
        metavar="KEY=VALUE",
        help=f"overrides of {target} after the options, e.g. crops.global_crops_size=518 (values read as YAML; the "
        "same as --opts)",
    )


def call_with_args(function: Callable[..., Any], args: argparse.Namespace, **values: Any) -> Any:
    """``function(**values, **taken)``, where ``taken`` holds, for each other parameter of ``function``, the attribute
    of ``args`` of the same name (a parameter ``args`` lacks keeps its default).

    The flags of an entry point are named after the parameters of the library function it runs, so its ``main(args)``
    only spells out the values that are not plain flags (a renamed or negated flag, the model).
    """
    parameters = inspect.signature(function).parameters
    taken = {name: getattr(args, name) for name in parameters if name not in values and hasattr(args, name)}
    return function(**values, **taken)


def _message(error: BaseException) -> str:
    if isinstance(error, KeyError) and error.args:  # str(KeyError) quotes its message
        return str(error.args[0])
    return str(error)


@contextlib.contextmanager
def usage_errors(
    parser: argparse.ArgumentParser, *errors: type[BaseException], flag: str | None = None
) -> Iterator[None]:
    """Turn ``errors`` raised inside into ``parser.error`` (usage and message on stderr, exit code 2).

    For checks that run right after parsing (a config key, a file that is not there); ``flag`` prefixes the
    message with the flag the value came from.
    """
    try:
        yield
    except errors as error:
        parser.error(f"{flag}: {_message(error)}" if flag else _message(error))


def _unwritable(folder: Path) -> str | None:
    """Why files cannot be written into ``folder`` (created, parents too, if missing), or None when they can.

    The reasons name ``folder``, never the probe file (an ``OSError``'s own text names the file it failed on).
    """
    blocking = next((p for p in (folder, *folder.parents) if p.exists() and not p.is_dir()), None)
    if blocking is not None:  # the folder, or a folder above it, is a file
        return f"cannot create the folder {folder}: {blocking} is a file, not a folder"
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        return f"cannot create the folder {folder}: {error.strerror or error}"
    try:  # permissions alone do not tell (root, ACLs, read-only mounts): write a file
        handle, probe = tempfile.mkstemp(prefix=".write-check-", dir=folder)
    except OSError as error:
        return f"cannot write into the folder {folder}: {error.strerror or error}"
    os.close(handle)
    os.unlink(probe)
    return None


def check_writable_dir(parser: argparse.ArgumentParser, path: str | os.PathLike, flag: str) -> Path:
    """Create folder ``path`` (parents too) and check that files can be written into it; otherwise
    ``parser.error`` (exit code 2) naming ``flag`` and the folder. Call it right after parsing, before any work.

    Returns the folder. For a file flag (``--output F``) pass the file's folder, ``Path(F).parent``.
    """
    folder = Path(os.path.expanduser(os.fspath(path)) or ".")
    reason = _unwritable(folder)
    if reason is not None:
        parser.error(f"{flag}: {reason}; choose a folder you can write to")
    return folder


class UnsupportedFlag(argparse.Action):
    """A released flag that never did anything: its no-op values (``noop``, default ``("",)``) are accepted, any
    other value is a usage error that names ``instead`` (what does what the user wanted)."""

    def __init__(self, option_strings: Sequence[str], dest: str, instead: str, noop: Sequence[Any] = ("",), **kwargs):
        super().__init__(option_strings, dest, **kwargs)
        self.instead = instead
        self.noop = tuple(noop)

    def __call__(self, parser, namespace, values, option_string=None):
        if values not in self.noop:
            message = f"{values!r} is not supported (the flag never did anything): {self.instead}"
            raise argparse.ArgumentError(self, message)
        setattr(namespace, self.dest, values)
