"""Every command line of the README's ``bash`` blocks parses with the parser of the command it names, and a training
line's config and overrides load: a renamed or removed flag or config key, or a wrong value, in the documentation
fails here (the line runs up to its argument parser only: nothing is built or written)."""

from __future__ import annotations

import argparse
import importlib
import re
import runpy
import shlex
import sys

import pytest

from dinov2.config import load_cfg
from tests.conftest import REPO_ROOT, preserved_logging
from tests.test_cli import SCRIPTS  # the console scripts of pyproject.toml (skips before Python 3.11)

_README = (REPO_ROOT / "README.md").read_text()
_COMMAND = re.compile(r"(python (-m )?dinov2[./]|dinov2-)")
_TRAINING = re.compile(r"^(python dinov2/train/train\.py|python -m dinov2\.train\.train|dinov2-train) ")
_PLACEHOLDER = re.compile(r"\.\.\.|<|\[")  # "...", <config>, [optional flags]: not a whole command line


def readme_commands() -> list[str]:
    """The README's complete command lines of this project (continuations joined, comments and torchrun dropped)."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", _README, re.S):
        for line in re.sub(r"\\\n\s*", " ", block).splitlines():
            line = re.sub(r"^torchrun( --[\w-]+(=| )\S+)* ", "python ", line.split("  #")[0].strip())
            if _COMMAND.match(line) and not _PLACEHOLDER.search(line):
                commands.append(line)
    return commands


class _Parsed(Exception):
    """Raised once the command's parser accepted its arguments: the command goes no further."""


def _stop_after_parsing(monkeypatch) -> None:
    for name in ("parse_args", "parse_intermixed_args"):
        parse = getattr(argparse.ArgumentParser, name)

        def stop(self, *args, _parse=parse, **kwargs):
            raise _Parsed(_parse(self, *args, **kwargs))

        monkeypatch.setattr(argparse.ArgumentParser, name, stop)


def test_the_readme_has_command_lines_to_check():
    commands = readme_commands()
    assert len(commands) >= 30, commands  # 42 today: a change to the extraction would otherwise check nothing
    assert any(c.startswith("dinov2-") for c in commands) and any(" -m " in c for c in commands)


@pytest.mark.parametrize("command", readme_commands())
def test_a_readme_command_line_parses(command, monkeypatch, capsys):
    argv = shlex.split(command)
    if argv[:2] == ["python", "-m"]:
        run, args = (lambda: runpy.run_module(argv[2], run_name="__main__", alter_sys=True)), argv[3:]
    elif argv[0] == "python":
        run, args = (lambda: runpy.run_path(str(REPO_ROOT / argv[1]), run_name="__main__")), argv[2:]
    else:
        module, function = SCRIPTS[argv[0]].split(":")
        run, args = getattr(importlib.import_module(module), function), argv[1:]
    _stop_after_parsing(monkeypatch)
    monkeypatch.setattr(sys, "argv", [argv[0], *args])
    monkeypatch.setattr(sys, "path", list(sys.path))  # run_path of a script may put its folder first
    with preserved_logging(), pytest.raises(_Parsed) as parsed:
        try:
            run()
        except SystemExit as error:
            message = (capsys.readouterr().err.strip().splitlines() or [""])[-1]  # argparse's "error: ..." line
            pytest.fail(f"{command!r} does not parse (exit {error.code}): {message}")
    if _TRAINING.search(command):  # the config and its overrides too: every key and value the line sets
        args = parsed.value.args[0]
        load_cfg(args.config_file, args.opts, args.output_dir or None)
