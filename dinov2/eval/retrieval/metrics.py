"""The revisited Oxford / Paris evaluation (Radenović et al., CVPR 2018): mAP and mP@k with junk images ignored.

:func:`compute_map` takes and returns what the protocol's reference evaluation does:

- ``ranks`` [n_database, n_queries]: column q lists database indices (0-based) by decreasing similarity to query q
  (a truncated ranking, fewer rows, is allowed: positives missing from it add nothing to the AP);
- ``gnd``: one dict per query with ``ok`` (positive database indices) and optionally ``junk`` (ignored ones);
- returns ``(map, aps, pr, prs)``: mean AP over the queries that have positives, AP per query (NaN without
  positives), mean precision at each of ``kappas`` and the per-query values [n_queries, len(kappas)].

Junk images are removed from the ranking (each positive moves up by the number of junk images ranked before it),
AP is the trapezoid rule over the positives' adjusted positions, and precision at k uses the protocol's
definition: with 1-based positions ``pos``, ``k' = min(max(pos), k)`` and ``P = #(pos <= k') / k'`` (so a query
whose positives all rank within the first k is divided by the last positive's rank, not by k).

:func:`protocol_ground_truth` builds the Easy / Medium / Hard ``gnd`` from the ``easy`` / ``hard`` / ``junk``
lists of the released files, and :func:`evaluate_protocols` scores all three.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

__all__ = ["PROTOCOLS", "DEFAULT_KAPPAS", "compute_ap", "compute_map", "protocol_ground_truth", "evaluate_protocols"]

PROTOCOLS = ("easy", "medium", "hard")
DEFAULT_KAPPAS = (1, 5, 10)


def compute_ap(positions: np.ndarray, n_positives: int) -> float:
    """Average precision of positives at 0-based ``positions`` (sorted, junk already removed) out of
    ``n_positives`` (trapezoid rule between the precisions just before and at each positive)."""
    positions = np.asarray(positions, dtype=np.float64)
    j = np.arange(len(positions), dtype=np.float64)  # positives ranked before this one
    before = np.divide(j, positions, out=np.ones_like(j), where=positions > 0)  # precision just before (1 at rank 0)
    at = (j + 1) / (positions + 1)
    return float(((before + at) / 2).sum() / n_positives)


def _indices(entry: Mapping, key: str) -> np.ndarray:
    return np.asarray(entry.get(key, []), dtype=np.int64).reshape(-1)


def _adjusted_positions(column: np.ndarray, ok: np.ndarray, junk: np.ndarray) -> np.ndarray:
    """0-based positions of the positives in ``column`` once the junk images ranked before each are removed."""
    is_junk = np.isin(column, junk)
    positions = np.flatnonzero(np.isin(column, ok))
    junk_before = np.concatenate([[0], np.cumsum(is_junk)])[positions]  # junk strictly before each positive
    return positions - junk_before


def compute_map(
    ranks: np.ndarray, gnd: Sequence[Mapping], kappas: Sequence[int] = ()
) -> tuple[float, np.ndarray, np.ndarray, np.ndarray]:
    """``(map, aps, pr, prs)`` of ``ranks`` [n_database, n_queries] against ``gnd`` (see the module docstring)."""
    ranks = np.asarray(ranks)
    if ranks.ndim != 2 or ranks.shape[1] != len(gnd):
        raise ValueError(
            f"ranks must be [n_database, n_queries={len(gnd)}] (one column per ground-truth entry), got shape "
            f"{list(ranks.shape)}; transpose a [n_queries, n_database] ranking"
        )
    n_queries = len(gnd)
    aps = np.zeros(n_queries)
    prs = np.zeros((n_queries, len(kappas)))
    empty = 0
    for q, entry in enumerate(gnd):
        ok = _indices(entry, "ok")
        if len(ok) == 0:  # no positive: left out of the means
            aps[q], prs[q] = np.nan, np.nan
            empty += 1
            continue
        positions = _adjusted_positions(ranks[:, q], ok, _indices(entry, "junk"))
        aps[q] = compute_ap(positions, len(ok))
        if len(positions):  # 1-based; a truncated ranking may hold no positive at all (precision 0)
            one_based = positions + 1
            for i, k in enumerate(kappas):
                kq = min(int(one_based.max()), int(k))
                prs[q, i] = (one_based <= kq).sum() / kq
    counted = n_queries - empty
    if counted == 0:
        return float("nan"), aps, np.full(len(kappas), np.nan), prs
    return float(np.nansum(aps) / counted), aps, np.nansum(prs, axis=0) / counted, prs


def protocol_ground_truth(gnd: Sequence[Mapping], protocol: str) -> list[dict[str, np.ndarray]]:
    """``ok`` / ``junk`` per query for ``protocol``: easy (ok = easy; junk = junk + hard), medium (ok = easy + hard;
    junk = junk) or hard (ok = hard; junk = junk + easy), from entries with ``easy``, ``hard``, ``junk``."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}; choose one of {', '.join(PROTOCOLS)}")
    out = []
    for entry in gnd:
        easy, hard, junk = (_indices(entry, key) for key in ("easy", "hard", "junk"))
        ok, ignored = {
            "easy": (easy, np.concatenate([junk, hard])),
            "medium": (np.concatenate([easy, hard]), junk),
            "hard": (hard, np.concatenate([junk, easy])),
        }[protocol]
        out.append({"ok": ok, "junk": ignored})
    return out


def evaluate_protocols(
    ranks: np.ndarray, gnd: Sequence[Mapping], kappas: Sequence[int] = DEFAULT_KAPPAS
) -> dict[str, dict]:
    """``{protocol: {"mAP": %, "mP@k": {k: %}, "AP": [% per query]}}`` for Easy, Medium and Hard."""
    results = {}
    for protocol in PROTOCOLS:
        mean_ap, aps, pr, _ = compute_map(ranks, protocol_ground_truth(gnd, protocol), kappas)
        results[protocol] = {
            "mAP": 100.0 * mean_ap,
            "mP@k": {int(k): 100.0 * float(p) for k, p in zip(kappas, pr)},
            "AP": [100.0 * float(a) for a in aps],
        }
    return results
