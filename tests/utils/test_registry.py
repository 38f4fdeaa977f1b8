"""The one registry type (archs, model families, hub names)."""

from __future__ import annotations

import pytest

from dinov2.utils.registry import Registry


def test_a_registry_reads_like_a_dict_and_refuses_a_taken_name():
    registry = Registry("thing", {"a": 1})
    assert dict(registry) == {"a": 1} and "a" in registry and len(registry) == 1
    assert registry.register("b", 2) == 2 and registry["b"] == 2
    assert registry.register("b", 2) == 2  # the same entry again is fine
    with pytest.raises(ValueError, match="thing 'b' is already registered"):
        registry.register("b", 3)
    assert registry.register("b", 3, exist_ok=True) == 2  # the first one stays
    registry.unregister("b")
    with pytest.raises(KeyError, match="thing 'b' is not registered"):
        registry.unregister("b")


def test_registered_restores_the_table_even_when_the_body_raises():
    registry = Registry("thing", {"a": 1})
    with pytest.raises(RuntimeError), registry.registered("b", 2):
        assert registry["b"] == 2
        registry.register("c", 3)
        raise RuntimeError("body failed")
    assert dict(registry) == {"a": 1}


def test_a_check_may_refuse_an_entry_before_it_is_added():
    def positive(table, name, entry):
        if entry <= 0:
            raise ValueError(f"{name} must be positive")

    registry = Registry("thing", check=positive)
    with pytest.raises(ValueError, match="x must be positive"):
        registry.register("x", -1)
    assert "x" not in registry
