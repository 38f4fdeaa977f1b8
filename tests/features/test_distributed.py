"""2 processes against 1 (started once for both modules): extraction gathers every output of every image in
dataset order on every rank (uneven shards, a rank without images, loaders with uneven batches, the released
loader); sharded exact k-NN equals one process, and local k-NN inside a process group stays local."""

from __future__ import annotations

import pytest
import torch

from dinov2.data import DatasetWithEnumeratedTargets, SamplerType, make_data_loader
from dinov2.features import exact_knn, extract, extract_features_with_dataloader
from dinov2.features.extract import UnreadableImagesError, extract_features
from tests.dist_helpers import run_distributed
from tests.eval.test_utils import CountingModel, ToyDataset
from tests.features.test_extract import DamagedToyDataset, TokensModel, _reference
from tests.features.test_knn import _tied_problem


def _released_loader(dataset, batch_size):
    return make_data_loader(
        dataset=DatasetWithEnumeratedTargets(dataset), batch_size=batch_size, num_workers=0, shuffle=False,
        drop_last=False, sampler_type=SamplerType.DISTRIBUTED,
    )  # fmt: skip


def _extract_worker(rank, world_size):
    out = {}
    for n in (5, 1):  # uneven shards (3 + 2 images); one image: rank 1 has none and learns the shapes from rank 0
        dataset = ToyDataset(n, unlabelled={0})
        out[n] = extract(TokensModel(), dataset, batch_size=2, progress=False)
        out[f"local {n}"] = extract(TokensModel(), dataset, batch_size=2, gather=False, progress=False)
    dataset = ToyDataset(7)
    # batches of different sizes per rank and a rank with fewer batches: rank 0 takes 4 images, rank 1 three
    parts = [range(0, 2), range(2, 4)] if rank == 0 else [range(4, 7)]
    loader = [(dataset.images[list(p)], (torch.tensor(list(p)), torch.tensor(list(p)) % 3)) for p in parts]
    out["loader"] = extract_features_with_dataloader(CountingModel(), loader, 7)
    out["released"] = extract_features_with_dataloader(CountingModel(), _released_loader(dataset, 2), 7)
    # unreadable images on both ranks (0: index 2; 1: indices 1 and 3, all of its images)
    out["dropped"] = extract(TokensModel(), DamagedToyDataset(5, bad={1, 2, 3}), batch_size=2, progress=False)
    try:  # every rank refuses, naming every file
        extract_features(CountingModel(), DamagedToyDataset(5, bad={1, 2, 3}), 2, 0, progress=False)
    except UnreadableImagesError as error:
        out["refused"] = str(error)
    return out


def _check_extraction(outputs):
    for n in (5, 1):
        dataset = ToyDataset(n, unlabelled={0})
        expected = _reference(dataset)
        for rank, out in enumerate(outputs):
            for key in expected:
                torch.testing.assert_close(out[n].outputs[key], expected[key].float())
            assert out[n].labels.tolist() == [-1] + [i % 3 for i in range(1, n)]
            local = out[f"local {n}"]
            assert local.indices.tolist() == list(range(rank, n, 2))
            if local.indices.numel():
                torch.testing.assert_close(local.outputs["cls"], expected["cls"][rank::2])
    with torch.no_grad():
        features = CountingModel()(ToyDataset(7).images)
    for out in outputs:
        for key in ("loader", "released"):
            torch.testing.assert_close(out[key][0], features)
            assert out[key][1].tolist() == [i % 3 for i in range(7)]
    expected = _reference(ToyDataset(5))["cls"][[0, 4]]
    for out in outputs:
        assert out["dropped"].indices.tolist() == [0, 4] and out["dropped"].dropped.tolist() == [1, 2, 3]
        torch.testing.assert_close(out["dropped"].outputs["cls"], expected)
        assert "3 of 5 images are unreadable (img1.jpg, img2.jpg, img3.jpg)" in out["refused"]


def _knn_worker(rank, world_size):
    queries, database = _tied_problem(seed=3)
    mine = slice(0, 4) if rank == 0 else slice(4, 9)  # uneven query shards
    shard = torch.tensor_split(database, world_size)[rank]  # 20 rows each, smaller than k = 25: padded merge
    sharded = exact_knn(queries[mine], shard, 25, sharded=True, chunk_size=3)
    # without sharding, each rank searches its own matrix: no collective, so rank-dependent calls cannot hang
    local = exact_knn(queries[: rank + 1], shard, 3) if rank == 0 else exact_knn(queries, shard, 2)
    return sharded, local


def _check_knn(outputs):
    queries, database = _tied_problem(seed=3)
    sims, indices = exact_knn(queries, database, 25)
    assert torch.equal(torch.cat([o[0][1] for o in outputs]), indices)
    assert torch.equal(torch.cat([o[0][0] for o in outputs]), sims)
    shards = torch.tensor_split(database, 2)
    for rank, (count, k) in enumerate([(1, 3), (9, 2)]):
        assert torch.equal(outputs[rank][1][1], exact_knn(queries[:count], shards[rank], k)[1])


def _worker(rank, world_size):
    return _extract_worker(rank, world_size), _knn_worker(rank, world_size)


@pytest.mark.slow
def test_two_processes_extract_and_search_like_one():
    outputs = run_distributed(_worker, 2)
    _check_extraction([out[0] for out in outputs])
    _check_knn([out[1] for out in outputs])
