"""Exact k-NN on arbitrary matrices: equality with a brute-force sort by (-similarity, index), inner product or
cosine, chunking, unlabelled databases, local search inside a process group, sharded search equal to one process."""

from __future__ import annotations

import pytest
import torch

from dinov2.features import KnnIndex, exact_knn
from tests.eval.knn.test_knn import dyadic_unit_vectors


def _brute_force(queries, database, k):
    sims = (queries.double() @ database.double().T).tolist()
    order = [sorted(range(len(row)), key=lambda j: (-row[j], j))[:k] for row in sims]
    values = torch.tensor([[row[j] for j in o] for row, o in zip(sims, order)], dtype=torch.float64)
    return values, torch.tensor(order)


def _tied_problem(seed=0):
    database = dyadic_unit_vectors(40, seed) * 2.0  # exact float32 products, many ties
    database[20:] = database[:20].clone()
    return dyadic_unit_vectors(9, seed + 1), database


@pytest.mark.parametrize("chunk_size", [None, 2])
def test_inner_product_top_k_with_ties_to_the_lower_index(chunk_size):
    queries, database = _tied_problem()
    sims, indices = exact_knn(queries, database, 7, chunk_size=chunk_size)
    ref_sims, ref_indices = _brute_force(queries, database, 7)
    assert torch.equal(indices, ref_indices) and sims.dtype == torch.float32
    torch.testing.assert_close(sims.double(), ref_sims, rtol=0, atol=0)
    for row in indices.tolist():  # a duplicated row ranks after its lower-index copy, never without it
        assert all(j - 20 in row[:i] for i, j in enumerate(row) if j >= 20)


def test_inner_product_and_cosine_rank_differently():
    database = torch.tensor([[1.0, 0.0], [3.0, 0.0], [0.0, 1.0]])
    query = torch.tensor([[1.0, 0.0]])
    assert exact_knn(query, database, 2)[1].tolist() == [[1, 0]]  # larger inner product first
    sims, indices = exact_knn(query, database, 2, normalize=True)
    assert indices.tolist() == [[0, 1]] and sims.tolist() == [[1.0, 1.0]]  # equal cosines: lower index first


def test_unlabelled_index_and_errors():
    queries, database = _tied_problem()
    sims, indices, labels = KnnIndex(database, normalize=False).search(queries, 3)
    assert (labels == -1).all() and torch.equal(indices, _brute_force(queries, database, 3)[1])
    empty = KnnIndex(database).search(queries[:0], 3)
    assert [tuple(t.shape) for t in empty] == [(0, 3)] * 3
    with pytest.raises(ValueError, match="k=41 nearest neighbours .* only 40 samples"):
        exact_knn(queries, database, 41)
    with pytest.raises(ValueError, match=r"database must be \[N, D\]"):
        KnnIndex(database, torch.zeros(3))


def test_knn_eval_refuses_a_k_larger_than_the_train_set_before_reading_an_image():
    from dinov2.features.knn_scoring import knn_eval_of_model

    class Unread(torch.utils.data.Dataset):
        def __len__(self):
            return 5

        def __getitem__(self, index):
            raise AssertionError("an image was read")

    fits = r"--nb_knn 10 is larger than the train set \(5 images\); use k <= 5, e.g. --nb_knn 1$"
    with pytest.raises(ValueError, match=fits):
        knn_eval_of_model(torch.nn.Linear(2, 2), Unread(), Unread(), nb_knn=(1, 10), num_workers=0, progress=False)
