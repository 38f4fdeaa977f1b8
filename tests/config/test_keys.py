"""Strict keys: the one "did you mean", named sets of dataclass configs, sections given a plain value."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import pytest
from omegaconf import OmegaConf

from dinov2.config import ANY_NAME, ConfigKeyError, check_keys, did_you_mean, dotted_paths, key_problems, schema_tree

REFERENCE = {
    "optim": {"lr": 0.1, "n_clusters": 3},
    "kmeans": {"n_clusters": [1], "n_iters": 5},
    "train": {"seed": 0},
}
VALID = dotted_paths(REFERENCE)


def test_dotted_paths_list_sections_and_leaves():
    assert VALID[:3] == ["optim", "optim.lr", "optim.n_clusters"]
    assert VALID[3:] == ["kmeans", "kmeans.n_clusters", "kmeans.n_iters", "train", "train.seed"]


@pytest.mark.parametrize(
    "path, first",
    [
        ("kmeans.n_cluster", "kmeans.n_clusters"),  # same section first, though optim's comes first in the tree
        ("optim.n_cluster", "optim.n_clusters"),
        ("train.lr", "optim.lr"),  # the same key in another section
        ("optm", "optim"),  # a top-level typo
    ],
)
def test_did_you_mean_puts_the_closest_key_first(path, first):
    assert did_you_mean(path, VALID).startswith(f"did you mean {first!r}")


def test_did_you_mean_is_empty_without_a_close_key_and_never_suggests_an_ancestor():
    assert did_you_mean("zzzzzz", VALID) == ""
    assert "'train'?" not in did_you_mean("train.sed", VALID) and "'train.seed'" in did_you_mean("train.sed", VALID)


def test_check_keys_lists_every_problem_with_source_and_rule():
    layer = OmegaConf.create({"optim": {"lrr": 1}, "train": 3, "kmeans": {"n_iters": {"x": 1}}})
    with pytest.raises(ConfigKeyError) as info:
        check_keys(layer, REFERENCE, "config file 'a.yaml'", rule="keys of REFERENCE")
    message = str(info.value)
    assert message.startswith("config file 'a.yaml': 3 invalid key(s) (keys of REFERENCE):\n")
    assert "  - unknown key 'optim.lrr'; did you mean 'optim.lr'" in message
    assert "  - unknown key 'kmeans.n_iters.x'" in message
    assert "  - 'train' is a section of the config, it cannot be set to a single value" in message
    check_keys(OmegaConf.create({"optim": {"lr": 2}}), OmegaConf.create(REFERENCE), "ok")  # valid: no error


def test_check_keys_raises_the_callers_error_class():
    class MyError(ValueError):
        pass

    with pytest.raises(MyError, match="unknown key 'nope'"):
        check_keys({"nope": 1}, REFERENCE, "overrides", error=MyError)


@dataclass
class Item:
    dataset: str = ""
    k: int = 4


@dataclass
class Section:
    threshold: float = 0.5
    items: dict[str, Item] = field(default_factory=dict)


@dataclass
class Schema:
    seed: int = 0
    section: Section = field(default_factory=Section)
    sizes: list[int] = field(default_factory=list)


def test_schema_tree_of_a_dataclass_has_named_sets():
    assert schema_tree(Schema) == {
        "seed": None,
        "section": {"threshold": None, "items": {ANY_NAME: {"dataset": None, "k": None}}},
        "sizes": None,
    }
    assert dataclasses.is_dataclass(Schema)


def test_named_sets_take_any_name_and_suggest_the_generic_key():
    tree = schema_tree(Schema)
    check_keys({"section": {"items": {"a": {"k": 1}, "b": {"dataset": "x"}}}}, tree, "ok")
    unknown, not_sections = key_problems({"section": {"items": {"a": {"kk": 1}, "b": 2}}}, tree)
    assert [path for path, _ in unknown] == ["section.items.a.kk"]
    assert unknown[0][1].startswith("did you mean 'section.items.<name>.k'")
    assert not_sections == ["section.items.b"]
