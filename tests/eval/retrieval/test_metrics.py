"""The revisited-protocol metrics against an independent loop implementation (junk, empty positives, truncated
rankings, ties), the Easy / Medium / Hard sets, the mP@k definition, and the exact ranking's tie rule."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dinov2.eval.retrieval import compute_map, evaluate_protocols, protocol_ground_truth, rank_database


def _reference_map(ranks, gnd, kappas):
    """Written from the protocol's definition: walk each ranking, skip junk, accumulate trapezoid AP."""
    aps, prs, counted = [], [], 0
    for q, entry in enumerate(gnd):
        ok, junk = set(int(i) for i in entry["ok"]), set(int(i) for i in entry.get("junk", []))
        if not ok:
            aps.append(float("nan"))
            prs.append([float("nan")] * len(kappas))
            continue
        counted += 1
        position, found, ap, hits = 0, 0, 0.0, []  # position: rank once junk is removed (0-based)
        for image in ranks[:, q]:
            image = int(image)
            if image in junk and image not in ok:
                continue
            if image in ok:
                p0 = 1.0 if position == 0 else found / position
                p1 = (found + 1) / (position + 1)
                ap += (p0 + p1) / 2 / len(entry["ok"])
                found += 1
                hits.append(position + 1)
            position += 1
        aps.append(ap)
        row = []
        for k in kappas:
            kq = min(max(hits), k) if hits else k
            row.append(sum(h <= kq for h in hits) / kq)
        prs.append(row)
    aps, prs = np.array(aps), np.array(prs).reshape(len(gnd), len(kappas))
    return np.nansum(aps) / counted, aps, np.nansum(prs, axis=0) / counted, prs


def _random_case(rng, n_db=50, n_q=12, truncate=None):
    ranks = np.stack([rng.permutation(n_db) for _ in range(n_q)], axis=1)
    gnd = []
    for q in range(n_q):
        images = rng.permutation(n_db)
        n_ok = 0 if q % 5 == 0 else int(rng.integers(1, 11))  # every fifth query has no positive
        n_junk = int(rng.integers(0, 6))
        entry = {"ok": images[:n_ok].tolist(), "junk": images[n_ok : n_ok + n_junk].tolist()}
        if q % 3 == 0:
            del entry["junk"]  # junk is optional
        gnd.append(entry)
    return (ranks[:truncate] if truncate else ranks), gnd


@pytest.mark.parametrize("truncate", [None, 20])
def test_compute_map_equals_the_reference_on_random_rankings(truncate):
    rng = np.random.default_rng(0)
    for _ in range(20):
        ranks, gnd = _random_case(rng, truncate=truncate)
        got = compute_map(ranks, gnd, [1, 5, 10])
        expected = _reference_map(ranks, gnd, [1, 5, 10])
        assert abs(got[0] - expected[0]) < 1e-12
        np.testing.assert_allclose(got[1], expected[1], atol=1e-12)
        np.testing.assert_allclose(got[2], expected[2], atol=1e-12)
        np.testing.assert_allclose(got[3], expected[3], atol=1e-12)
        assert np.isnan(got[1][0]) and np.isnan(got[3][0]).all()  # query 0 has no positive


def test_junk_is_removed_from_the_ranking_and_empty_queries_are_left_out():
    ranks = np.array([[3, 0, 1, 2]]).T  # one query: 3 (junk), 0 (positive), 1, 2 (positive)
    mean_ap, aps, _, _ = compute_map(ranks, [{"ok": [0, 2], "junk": [3]}])
    assert aps[0] == pytest.approx((1 + 1) / 2 / 2 + (1 / 2 + 2 / 3) / 2 / 2)
    both = compute_map(np.concatenate([ranks, ranks], axis=1), [{"ok": [0, 2], "junk": [3]}, {"ok": []}])
    assert both[0] == pytest.approx(mean_ap) and np.isnan(both[1][1])
    assert compute_map(ranks, [{"ok": [0], "junk": [3]}])[0] == 1.0


def test_mean_precision_at_k_uses_the_last_positive_rank():
    ranks = np.arange(30)[:, None]
    assert compute_map(ranks, [{"ok": [0]}], [10])[2][0] == 1.0  # one positive at rank 1
    assert compute_map(ranks, [{"ok": [0, 3]}], [5])[2][0] == 2 / 4  # ranks 1 and 4: divided by 4, not 5
    assert compute_map(ranks, [{"ok": [0, 3, 19]}], [5])[2][0] == 2 / 5


def test_protocol_sets():
    gnd = [{"easy": [0, 1], "hard": [2], "junk": [3]}]
    sets = {p: protocol_ground_truth(gnd, p)[0] for p in ("easy", "medium", "hard")}
    assert sorted(sets["easy"]["ok"]) == [0, 1] and sorted(sets["easy"]["junk"]) == [2, 3]
    assert sorted(sets["medium"]["ok"]) == [0, 1, 2] and sorted(sets["medium"]["junk"]) == [3]
    assert sorted(sets["hard"]["ok"]) == [2] and sorted(sets["hard"]["junk"]) == [0, 1, 3]
    ranks = np.array([[0, 1, 3, 2, 4]]).T  # easy images first, then junk, then the hard one
    scores = evaluate_protocols(ranks, gnd)
    assert scores["hard"]["mAP"] == 100.0 and scores["easy"]["mAP"] == 100.0
    assert scores["medium"]["mAP"] == 100.0  # the junk image is skipped
    scores = evaluate_protocols(np.array([[2, 4, 0, 1, 3]]).T, gnd)  # the hard image first, a negative next
    assert scores["hard"]["mAP"] == 100.0 and scores["easy"]["mAP"] < 100.0 and scores["medium"]["mAP"] < 100.0


def test_ranking_breaks_ties_by_database_index_and_matches_numpy():
    rng = np.random.default_rng(1)
    database = torch.from_numpy(rng.integers(-2, 3, size=(40, 3)).astype(np.float32))  # many exact ties
    queries = torch.from_numpy(rng.integers(-2, 3, size=(6, 3)).astype(np.float32))
    ranks = rank_database(queries, database)
    sims = queries.numpy() @ database.numpy().T
    for q in range(len(queries)):
        expected = np.lexsort((np.arange(40), -sims[q]))  # by -similarity, then index
        assert ranks[:, q].tolist() == expected.tolist()
    gnd = [{"ok": rng.choice(40, 3, replace=False), "junk": rng.choice(40, 2, replace=False)} for _ in range(6)]
    assert compute_map(ranks, gnd)[0] == pytest.approx(_reference_map(ranks, gnd, [])[0], abs=1e-12)
    assert rank_database(queries, database, k=5).shape == (5, 6)


def test_faiss_ranking_equals_exact_without_ties():
    pytest.importorskip("faiss", reason="the faiss backend needs faiss-cpu")
    g = torch.Generator().manual_seed(0)
    database, queries = torch.randn(30, 8, generator=g), torch.randn(4, 8, generator=g)
    assert (rank_database(queries, database, backend="faiss") == rank_database(queries, database)).all()


def test_bad_ranks_shape_names_the_fix():
    with pytest.raises(ValueError, match="transpose"):
        compute_map(np.zeros((3, 5), dtype=int), [{"ok": [0]}] * 3)
