"""k-NN: equality with a brute-force reference (neighbours, ties, weights), few-shot draws, sharding, errors."""

import math

import pytest
import torch

from dinov2.eval.knn import (
    KnnIndex,
    few_shot_k_list,
    format_knn_results,
    knn_class_scores,
    released_knn_results,
    sample_few_shot_indices,
)
from dinov2.features.knn_scoring import eval_knn  # the protocol on features (dinov2.eval.knn's is model-level)
from tests.dist_helpers import run_distributed

T = 0.07


def dyadic_unit_vectors(n, seed, dim=16, nonzeros=4):
    """Unit vectors with 4 entries of +-0.5: every dot product is an exact multiple of 1/4 in float32,
    whatever the summation order, so sharded / chunked / brute-force similarities are bitwise equal,
    and exact ties are frequent."""
    g = torch.Generator().manual_seed(seed)
    x = torch.zeros(n, dim)
    for i in range(n):
        cols = torch.randperm(dim, generator=g)[:nonzeros]
        x[i, cols] = 0.5 * (2 * torch.randint(0, 2, (nonzeros,), generator=g) - 1).float()
    return x


def make_problem(n_train=60, n_val=13, num_classes=5, seed=0, ties=True):
    """Dyadic vectors with duplicated train rows (exact ties), or Gaussian ones (no ties) when ties=False."""
    g = torch.Generator().manual_seed(seed + 1)
    if ties:
        train, val = dyadic_unit_vectors(n_train, seed), dyadic_unit_vectors(n_val, seed + 2)
        train[n_train // 2 :] = train[: n_train - n_train // 2].clone()  # duplicated rows: exact ties everywhere
    else:
        train, val = torch.randn(n_train, 16, generator=g), torch.randn(n_val, 16, generator=g)
    train_labels = torch.randint(0, num_classes, (n_train,), generator=g)
    val_labels = torch.randint(0, num_classes, (n_val,), generator=g)
    return train, train_labels, val, val_labels


def brute_force(train, train_labels, val, k_max, nb_knn, num_classes):
    """Python reference: sort each query's train samples by (-similarity, index), vote with softmax weights."""
    sims_all = (val.double() @ train.double().T).tolist()
    neighbours, scores = [], {k: torch.zeros(len(val), num_classes, dtype=torch.float64) for k in nb_knn}
    for q, row in enumerate(sims_all):
        order = sorted(range(len(row)), key=lambda j: (-row[j], j))[:k_max]
        neighbours.append(order)
        top = torch.tensor([row[j] for j in order], dtype=torch.float64)
        weights = torch.softmax(top / T, dim=0)
        for k in nb_knn:
            for i in range(k):
                scores[k][q, train_labels[order[i]]] += weights[i]
    return torch.tensor(neighbours), scores


@pytest.mark.parametrize("chunk_size", [None, 4])
def test_search_and_votes_equal_brute_force_with_ties(chunk_size):
    train, train_labels, val, _ = make_problem()
    nb_knn = [1, 3, 10, 20]
    index = KnnIndex(train, train_labels, chunk_size=chunk_size)
    sims, indices, labels = index.search(val, max(nb_knn))
    ref_neighbours, ref_scores = brute_force(train, train_labels, val, max(nb_knn), nb_knn, 5)
    assert torch.equal(indices, ref_neighbours)
    assert torch.equal(labels, train_labels[ref_neighbours])
    torch.testing.assert_close(sims, (val @ train.T).gather(1, ref_neighbours), rtol=0, atol=0)
    scores = knn_class_scores(sims, labels, nb_knn, T, num_classes=5)
    for k in nb_knn:
        torch.testing.assert_close(scores[k].double(), ref_scores[k], rtol=1e-6, atol=1e-7)


def test_result_independent_of_train_order_given_ties_by_index():
    """Ties go to the lower train index: reversing the train set changes picks exactly as predicted."""
    train = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    labels = torch.tensor([0, 1, 2, 3])
    _, idx, lab = KnnIndex(train, labels).search(torch.tensor([[1.0, 0.0]]), 2)
    assert idx.tolist() == [[0, 1]] and lab.tolist() == [[0, 1]]
    _, idx, lab = KnnIndex(train.flip(0), labels.flip(0)).search(torch.tensor([[1.0, 0.0]]), 2)
    assert idx.tolist() == [[0, 2]] and lab.tolist() == [[3, 1]]


def test_votes_use_softmax_over_max_k_without_renormalising():
    sims = torch.tensor([[0.9, 0.8, 0.1]])
    labels = torch.tensor([[2, 0, 2]])
    scores = knn_class_scores(sims, labels, [1, 3], temperature=0.1, num_classes=3)
    w = torch.softmax(sims / 0.1, dim=1)[0]
    torch.testing.assert_close(scores[1][0], torch.stack([w.new_tensor(0.0), w.new_tensor(0.0), w[0]]))
    torch.testing.assert_close(scores[3][0], torch.stack([w[1], w.new_tensor(0.0), w[0] + w[2]]))


def test_few_shot_draw_matches_released_sampling():
    labels = torch.tensor([3, 0, 1, 3, 3, 0, 1, 1, 1, 3, 0, 3])
    for seed in range(3):
        ours = sample_few_shot_indices(labels, 2, seed=seed)
        with torch.random.fork_rng():  # released filter_train: global seed, one randperm per class in order
            torch.manual_seed(seed)
            released = [
                (labels == c).nonzero().squeeze(1)[torch.randperm(int((labels == c).sum()))[:2]]
                for c in torch.unique(labels)
            ]
        assert ours.tolist() == sorted(torch.cat(released).tolist())
    assert torch.bincount(labels[sample_few_shot_indices(labels, 10, seed=0)]).tolist() == [3, 4, 0, 5]
    assert not torch.equal(sample_few_shot_indices(labels, 1, 0), sample_few_shot_indices(labels, 1, 1))
    assert few_shot_k_list([10, 20, 100, 200], 16) == [10, 16]
    assert few_shot_k_list([10, 20], 1) == [1]


def test_eval_knn_few_shot_tries_and_mean_match_reference():
    # Gaussian features: no exact or near ties, so float64 reference scores rank classes like ours
    train, train_labels, val, val_labels = make_problem(n_train=80, n_val=20, ties=False)
    results = eval_knn(
        train, train_labels, val, val_labels, nb_knn=[1, 3, 20], n_per_class_list=[-1, 4], n_tries=3, temperature=T
    )
    assert list(results) == ["full", "4 per class"]
    assert list(results["4 per class"]["mean"]) == [1, 3, 4]
    for setting, subsets in [("full", [None]), ("4 per class", [0, 1, 2])]:
        k_list = list(results[setting]["mean"])
        for t, seed in enumerate(subsets):
            sub = torch.arange(80) if seed is None else sample_few_shot_indices(train_labels, 4, seed)
            normed_train, normed_val = [torch.nn.functional.normalize(x, dim=1) for x in (train[sub], val)]
            _, ref_scores = brute_force(normed_train, train_labels[sub], normed_val, max(k_list), k_list, 5)
            for k in k_list:
                target_score = ref_scores[k].gather(1, val_labels[:, None])
                above = ref_scores[k] > target_score
                tied_before = (ref_scores[k] == target_score) & (torch.arange(5) < val_labels[:, None])
                expected = 100.0 * ((above | tied_before).sum(1) < 1).double().mean().item()
                assert results[setting]["tries"][t][k]["top-1"].item() == pytest.approx(expected, abs=1e-4)
        for k in k_list:
            tries = [tr[k]["top-5"] for tr in results[setting]["tries"]]
            assert results[setting]["mean"][k]["top-5"].item() == pytest.approx(torch.stack(tries).mean().item())
    flat = released_knn_results(results)
    assert flat["('full', 20) Top 1"] == pytest.approx(results["full"]["mean"][20]["top-1"].item())
    assert "('4 per class', 4) Top 5" in flat
    table = format_knn_results(results)
    assert "4 per class" in table and "top-1 std" in table


def test_separable_clusters_are_classified_perfectly():
    g = torch.Generator().manual_seed(0)
    centers = torch.randn(4, 32, generator=g)
    train_labels, val_labels = torch.arange(200) % 4, torch.arange(40) % 4
    train = centers[train_labels] + 0.1 * torch.randn(200, 32, generator=g)
    val = centers[val_labels] + 0.1 * torch.randn(40, 32, generator=g)
    results = eval_knn(train, train_labels, val, val_labels, nb_knn=[10, 20])
    assert results["full"]["mean"][10]["top-1"].item() == 100.0
    shuffled = eval_knn(train, train_labels, val, val_labels[torch.randperm(40, generator=g)], nb_knn=[10])
    assert shuffled["full"]["mean"][10]["top-1"].item() < 60.0


def test_clear_errors():
    train, train_labels, val, val_labels = make_problem(n_train=12)
    with pytest.raises(ValueError, match="k=20 nearest neighbours.*only 12 samples"):
        eval_knn(train, train_labels, val, val_labels, nb_knn=[20])
    with pytest.raises(ValueError, match="train labels must be .*-1 means the split has no labels"):
        eval_knn(train, torch.full_like(train_labels, -1), val, val_labels, nb_knn=[2])
    with pytest.raises(ValueError, match="val labels must be"):
        eval_knn(train, train_labels, val, val_labels - 10, nb_knn=[2])
    with pytest.raises(ValueError, match="k=5 is larger than the 3 train samples drawn for '5 per class'"):
        eval_knn(train[:3], torch.tensor([0, 0, 1]), val, val_labels % 2, nb_knn=[10], n_per_class_list=[5])
    with pytest.raises(ValueError, match="n_per_class must be >= 1"):
        eval_knn(train, train_labels, val, val_labels, nb_knn=[2], n_per_class_list=[0])


def _sharded_worker(rank, world_size):
    train, train_labels, val, val_labels = make_problem(n_train=9, n_val=11)
    split = [3, 8]  # uneven query shards
    lo, hi = (0, split[0]) if rank == 0 else (split[0], 11)
    # shards of 5 and 4 train samples: smaller than k = 7, exercising the padded merge
    index = KnnIndex.from_full(train, train_labels, chunk_size=2)
    sims, idx, labels = index.search(val[lo:hi], 7)
    results = eval_knn(
        train, train_labels, val[lo:hi], val_labels[lo:hi], nb_knn=[1, 3, 7], n_per_class_list=[-1, 1], n_tries=2
    )
    flat = released_knn_results(results)
    return {"sims": sims.tolist(), "idx": idx.tolist(), "labels": labels.tolist(), "flat": flat}


def test_two_process_sharded_search_equals_single_process():
    outputs = run_distributed(_sharded_worker, 2)
    train, train_labels, val, val_labels = make_problem(n_train=9, n_val=11)
    sims, idx, labels = KnnIndex(train, train_labels).search(val, 7)
    assert sum((o["idx"] for o in outputs), []) == idx.tolist()
    assert sum((o["labels"] for o in outputs), []) == labels.tolist()
    assert sum((o["sims"] for o in outputs), []) == sims.tolist()
    single = released_knn_results(
        eval_knn(train, train_labels, val, val_labels, nb_knn=[1, 3, 7], n_per_class_list=[-1, 1], n_tries=2)
    )
    for output in outputs:  # every rank reports the global accuracies
        assert output["flat"].keys() == single.keys()
        for key, value in single.items():
            assert math.isclose(output["flat"][key], value, abs_tol=1e-4), key
