"""The value-check registry: registry checks registered beside their registries, every problem reported at once,
and a training config is never validated without the registry checks."""

from __future__ import annotations

import subprocess
import sys

import pytest
from omegaconf import OmegaConf

import dinov2.utils.config  # noqa: F401  (the released path registers every registry check)
from dinov2.config import REGISTRY_CHECKS, Checker, ConfigValueError, load_cfg, register_check, registered_checks
from dinov2.config.checks import _CHECKS
from dinov2.loss.teacher_centering import CENTERINGS
from tests.conftest import REPO_ROOT


def test_registry_checks_are_registered_by_their_modules():
    assert set(REGISTRY_CHECKS) <= set(registered_checks())
    assert "dinov2.config.ssl_checks" in registered_checks()


def test_a_new_registry_entry_is_accepted_without_editing_the_checks(monkeypatch):
    with pytest.raises(ConfigValueError, match="train.centering: got 'mine', expected one of"):
        load_cfg(opts=["train.centering=mine"])
    monkeypatch.setitem(CENTERINGS, "mine", object)
    assert load_cfg(opts=["train.centering=mine"]).train.centering == "mine"


def test_a_registered_check_runs_with_the_others(monkeypatch):
    monkeypatch.setitem(_CHECKS, "tests.config", lambda c: c.integer("train.seed", minimum=5))
    with pytest.raises(ConfigValueError) as info:
        load_cfg(opts=["train.seed=1", "optim.epochs=0"])
    message = str(info.value)
    assert "2 problem(s)" in message
    assert "train.seed: got 1, expected an integer >= 5" in message and "optim.epochs: got 0" in message


def test_register_check_replaces_a_check_of_the_same_name(monkeypatch):
    monkeypatch.setattr("dinov2.config.checks._CHECKS", dict(_CHECKS))
    first = register_check("tests.config", lambda c: c.fail("a", 1, "x"))
    second = register_check("tests.config", lambda c: None)
    assert first is not second and registered_checks().count("tests.config") == 1
    load_cfg()  # only the second, silent check runs


def test_checker_reports_missing_keys_and_raises_the_callers_error():
    class MyError(ValueError):
        pass

    c = Checker(OmegaConf.create({"a": {"b": 2}}), defaults_name="mine.yaml")
    assert c.integer("a.b", minimum=0) == 2
    c.number("a.c")
    c.choice("a.b", ["x"])
    with pytest.raises(MyError) as info:
        c.raise_errors("invalid thing", MyError)
    assert str(info.value) == (
        "invalid thing (2 problem(s)):\n"
        "  - a.c: missing (it is a key of mine.yaml; do not delete it)\n"
        "  - a.b: got 2, expected one of ['x']"
    )
    Checker(OmegaConf.create({})).raise_errors("nothing recorded")  # no problem: no error


def test_validating_without_the_registry_checks_is_never_a_silent_pass(monkeypatch):
    """``dinov2.config`` on its own (a fresh process, nothing else imported) validates with every registry check:
    the registering modules are imported when a config is validated; one that does not register is an error."""
    code = (
        "import sys\n"
        "from dinov2.config import load_cfg, registered_checks\n"
        "assert not any(name.startswith('dinov2.models') for name in sys.modules)\n"
        "assert load_cfg(validate=False).student.arch == 'vit_large'\n"
        "try:\n"
        "    load_cfg(opts=['student.arch=vit_nope'])\n"
        "except Exception as e:\n"
        "    print(type(e).__name__, e)\n"
        "print(sorted(registered_checks()))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=True)
    assert "ConfigValueError" in out.stdout and "student.arch: got 'vit_nope'" in out.stdout
    assert all(name in out.stdout for name in REGISTRY_CHECKS)
    monkeypatch.setattr("dinov2.config.checks.REGISTRY_CHECKS", (*REGISTRY_CHECKS, "dinov2.config.keys"))
    with pytest.raises(RuntimeError, match=r"\['dinov2.config.keys'\] are not registered although imported"):
        load_cfg()


def test_dataset_strings_name_a_registered_dataset():
    with pytest.raises(ConfigValueError) as info:
        load_cfg(opts=["train.dataset_path=Imagenet:split=TRAIN", "tracking.knn.val_dataset=Foo:root=/x"])
    message = str(info.value)
    assert "train.dataset_path: got 'Imagenet:split=TRAIN', expected a dataset string" in message
    assert "tracking.knn.val_dataset: got 'Foo:root=/x'" in message and "'ImageNet22k'" in message
    # only the name is checked: the released default lacks its root and extra until the user gives them
    assert load_cfg(opts=["train.dataset_path=ImageNet22k"]).tracking.knn.val_dataset == ""
