"""The curation pipeline config: presets load, strict keys with close-key hints, value checks."""

from __future__ import annotations

import pytest

import dinov2.configs as configs
from dinov2.curation.config import CurationConfigError, load_curation_config

PRESETS = [c for c in configs.available_configs() if c.startswith("curation/")]
REQUIRED = ["pool.dataset=ImageFolder:root=/data/pool", "embed.pretrained_weights=w.pth"]


def test_presets_exist():
    assert set(PRESETS) >= {"curation/lvd142m", "curation/hierarchical_1m", "curation/small"}


@pytest.mark.parametrize("name", PRESETS)
def test_every_preset_loads_once_its_required_values_are_given(name, tmp_path):
    opts = REQUIRED + (["retrieval.queries.in22k.dataset=ImageFolder:root=/q"] if name == "curation/lvd142m" else [])
    cfg = load_curation_config(f"configs/{name}.yaml", opts, output_dir=str(tmp_path))
    assert cfg.output_dir == str(tmp_path) and cfg.pool.dataset == "ImageFolder:root=/data/pool"
    with pytest.raises(CurationConfigError, match="missing mandatory value"):
        load_curation_config(name, [], output_dir=str(tmp_path))  # a bare packaged name works too


def test_paper_numbers_of_the_lvd142m_preset(tmp_path):
    opts = REQUIRED + ["retrieval.queries.in22k.dataset=x"]
    cfg = load_curation_config("curation/lvd142m", opts, output_dir=str(tmp_path))
    assert (cfg.dedup.k, cfg.dedup.threshold, cfg.relative_dedup.threshold) == (64, 0.6, 0.45)
    retrieval = cfg.retrieval
    assert (retrieval.n_clusters, retrieval.min_queries, retrieval.per_cluster, retrieval.cap) == (
        100_000,
        3,
        10_000,
        1_000_000,
    )
    assert retrieval.queries["in22k"].k == 4


def test_unknown_keys_name_the_closest_valid_ones(tmp_path):
    with pytest.raises(CurationConfigError, match=r"unknown key 'dedup.treshold'; did you mean 'dedup.threshold'"):
        load_curation_config(None, [*REQUIRED, "dedup.treshold=0.5"], output_dir=str(tmp_path))
    with pytest.raises(
        CurationConfigError, match=r"'retrieval.queries.in1k.kk'; did you mean 'retrieval.queries.<name>.k'"
    ):
        load_curation_config(
            None,
            [*REQUIRED, "retrieval.queries.in1k.dataset=x", "retrieval.queries.in1k.kk=3"],
            output_dir=str(tmp_path),
        )
    yaml = tmp_path / "c.yaml"
    yaml.write_text("kmeans:\n  n_cluster: [10]\n")
    with pytest.raises(CurationConfigError, match=r"(?s)c\.yaml.*'kmeans.n_cluster'; did you mean 'kmeans.n_clusters'"):
        load_curation_config(str(yaml), REQUIRED, output_dir=str(tmp_path))


def test_bad_values_are_reported_together(tmp_path):
    opts = [*REQUIRED, "dedup.threshold=1.5", "device=tpu", "kmeans.enabled=true", "kmeans.n_clusters=[10,2]"]
    with pytest.raises(CurationConfigError) as error:
        load_curation_config(None, opts, output_dir=str(tmp_path))
    message = str(error.value)
    assert "dedup.threshold: got 1.5" in message and "device: got 'tpu'" in message
    assert "one value per level" in message and "sample.target_size" in message
    with pytest.raises(CurationConfigError, match="dedup.k"):
        load_curation_config(None, [*REQUIRED, "dedup.k=many"], output_dir=str(tmp_path))
    with pytest.raises(CurationConfigError, match="output_dir: required"):
        load_curation_config(None, REQUIRED)
