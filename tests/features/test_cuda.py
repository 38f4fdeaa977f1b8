"""dinov2.features on a GPU: CUDA extraction and exact k-NN equal the CPU path (run with ``pytest -m cuda``)."""

from __future__ import annotations

import pytest
import torch

from dinov2.features import exact_knn, extract, extract_features
from tests.eval.test_utils import CountingModel, ToyDataset
from tests.features.test_extract import TokensModel
from tests.features.test_knn import _brute_force, _tied_problem

pytestmark = pytest.mark.cuda


def test_cuda_extraction_equals_cpu():
    device = torch.device("cuda")
    dataset = ToyDataset(37, unlabelled={5})
    cpu = extract(TokensModel(), dataset, batch_size=8, progress=False)
    gpu = extract(TokensModel().to(device), dataset, batch_size=8, progress=False)
    assert all(v.device.type == "cuda" for v in gpu.outputs.values())
    for key in cpu.outputs:
        torch.testing.assert_close(gpu.outputs[key].cpu(), cpu.outputs[key], rtol=1e-4, atol=1e-4)
    assert gpu.labels.cpu().tolist() == cpu.labels.tolist()
    features, _ = extract_features(CountingModel().to(device), dataset, 8, 2, gather_on_cpu=True, progress=False)
    assert features.device.type == "cpu"


def test_cuda_exact_knn_ties_and_chunks():
    queries, database = _tied_problem()
    _, indices = exact_knn(queries.cuda(), database.cuda(), 7)
    _, expected = _brute_force(queries, database, 7)
    assert torch.equal(indices.cpu(), expected)  # ties to the lower index on the GPU too
    big_q, big_db = torch.randn(3000, 256, device="cuda"), torch.randn(50000, 256, device="cuda")
    s1, i1 = exact_knn(big_q, big_db, 20, normalize=True)
    s2, i2 = exact_knn(big_q, big_db, 20, normalize=True, chunk_size=128)
    assert torch.equal(i1, i2)
    torch.testing.assert_close(s1, s2)
