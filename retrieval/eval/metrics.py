"""Retrieval metrics of the standard benchmark protocols, in plain numpy.

Conventions shared by every function here:

* ``ranks`` is an integer array of shape ``(n_queries, n_ranked)``: row ``i`` lists database
  indices for query ``i``, best first. revisitop stores the transpose, ``(n_db, n_queries)``;
  pass ``ranks.T`` when coming from there. Rows may be truncated to the top ``k``
  (``n_ranked < n_db``); pass ``n_db`` then, so ground-truth indices can be range-checked.
  Rows must not repeat an index (not checked: it would cost a sort per row).
* Positives missing from a truncated row count as not retrieved.
* :func:`average_precision` and :func:`compute_map` return fractions in [0, 1], like revisitop.
  The protocol-level functions return percentages, as papers report them, except the UKBench
  N-S score, which lies in [0, 4].
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Hashable, Mapping, Sequence
from pathlib import PurePath
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

logger = logging.getLogger(__name__)

GroundTruth = Mapping[str, Any]
"""One query's ground truth: ``{'ok': indices, 'junk': indices}`` ('junk' optional)."""

_PROTOCOLS = {"easy": "E", "medium": "M", "hard": "H"}


# --------------------------------------------------------------------------------------------
# Input checks
# --------------------------------------------------------------------------------------------


def _check_ranks(ranks: ArrayLike, n_queries: int, n_db: int | None) -> tuple[np.ndarray, int]:
    """Validate a ``(n_queries, n_ranked)`` ranks array; return it and the database size."""
    arr = np.asarray(ranks)
    if arr.ndim != 2:
        raise ValueError(
            f"ranks must be a 2-D array of shape (n_queries, n_ranked); got shape {arr.shape}"
        )
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(
            f"ranks must hold integer database indices; got dtype {arr.dtype} "
            "(rank with np.argsort, or cast with .astype(np.int64))"
        )
    if arr.shape[0] != n_queries:
        raise ValueError(
            f"ranks has {arr.shape[0]} rows but the ground truth describes {n_queries} queries; "
            "ranks must be (n_queries, n_ranked) — revisitop's (n_db, n_queries) layout needs "
            "ranks.T"
        )
    if n_db is None:
        n_db = arr.shape[1]
    elif arr.shape[1] > n_db:
        raise ValueError(f"ranks has {arr.shape[1]} columns, more than n_db={n_db}")
    if arr.size:
        bad = (arr < 0) | (arr >= n_db)
        if bad.any():
            q, col = np.argwhere(bad)[0]
            raise ValueError(
                f"ranks row {q} (query {q}) holds database index {arr[q, col]} outside "
                f"[0, {n_db}); pass n_db=<database size> if ranks are truncated"
            )
    return arr, n_db


def _indices(values: Any, where: str, n_db: int) -> np.ndarray:
    """Return ``values`` as a 1-D int64 array of database indices, checked against ``n_db``."""
    arr = np.asarray(values)
    if arr.size == 0:
        return np.empty(0, dtype=np.int64)
    if arr.ndim != 1 or not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(
            f"{where} must be a flat list of integer database indices; "
            f"got shape {arr.shape}, dtype {arr.dtype}"
        )
    bad = (arr < 0) | (arr >= n_db)
    if bad.any():
        raise ValueError(
            f"{where} has database index {arr[bad][0]} outside [0, {n_db}); ground-truth indices "
            "must index the ranked database (if ranks are truncated to the top k, pass "
            "n_db=<database size>)"
        )
    return arr.astype(np.int64, copy=False)


def _query_gnd(gnd_q: GroundTruth, q: int, n_db: int) -> tuple[np.ndarray, np.ndarray]:
    """Validated positive and junk indices of query ``q``."""
    if not isinstance(gnd_q, Mapping) or "ok" not in gnd_q:
        raise ValueError(f"gnd[{q}] must be a mapping with an 'ok' list of positive indices")
    ok = _indices(gnd_q["ok"], f"gnd[{q}]['ok']", n_db)
    junk = _indices(gnd_q.get("junk", ()), f"gnd[{q}]['junk']", n_db)
    if np.unique(ok).size != ok.size:
        raise ValueError(f"gnd[{q}]['ok'] lists an index more than once; remove duplicates")
    both = np.intersect1d(ok, junk)
    if both.size:
        raise ValueError(
            f"gnd[{q}]: index {both[0]} is in both 'ok' and 'junk'; an image is either one"
        )
    return ok, junk


def _check_kappas(kappas: Sequence[int]) -> tuple[int, ...]:
    """Validate the precision cut-offs."""
    out = tuple(int(k) for k in kappas)
    if any(k < 1 for k in out) or any(k != kk for k, kk in zip(out, kappas, strict=True)):
        raise ValueError(f"kappas must be positive integers; got {tuple(kappas)}")
    return out


# --------------------------------------------------------------------------------------------
# revisitop protocol
# --------------------------------------------------------------------------------------------


def average_precision(positive_positions: ArrayLike, n_positives: int) -> float:
    """Trapezoidal average precision, exactly as revisitop's ``compute_ap``.

    ``positive_positions`` are the sorted 0-based positions of the retrieved positives (junk
    already removed). The j-th of them (0-based) at position r adds a trapezoid of width
    ``1 / n_positives`` between the precision just before it, ``j / r`` (1 when r == 0), and
    just after it, ``(j + 1) / (r + 1)``. Positives that were never retrieved add nothing.
    """
    if int(n_positives) != n_positives or n_positives < 1:
        raise ValueError(f"n_positives must be a positive integer; got {n_positives}")
    pos = np.asarray(positive_positions)
    if pos.size == 0:
        return 0.0
    if pos.ndim != 1 or not np.issubdtype(pos.dtype, np.integer):
        raise ValueError(
            f"positive_positions must be a 1-D integer array; got shape {pos.shape}, "
            f"dtype {pos.dtype}"
        )
    if pos[0] < 0 or np.any(np.diff(pos) <= 0):
        raise ValueError("positive_positions must be non-negative and strictly increasing")
    if pos.size > n_positives:
        raise ValueError(
            f"{pos.size} positive positions given but n_positives={n_positives}; "
            "n_positives must count every positive"
        )
    pos = pos.astype(np.float64)
    found_before = np.arange(pos.size, dtype=np.float64)
    prec_before = np.divide(found_before, pos, out=np.ones_like(pos), where=pos > 0)
    prec_after = (found_before + 1.0) / (pos + 1.0)
    return float(np.sum(prec_before + prec_after) / (2.0 * n_positives))


def _positive_positions(row: np.ndarray, ok: np.ndarray, junk: np.ndarray) -> np.ndarray:
    """0-based positions of the positives in ``row`` once junk images are taken out of it."""
    kept = row[~np.isin(row, junk)] if junk.size else row
    return np.flatnonzero(np.isin(kept, ok))


def _precision_at(positions: np.ndarray, n_positives: int, kappas: tuple[int, ...]) -> np.ndarray:
    """Precision at each cut-off with revisitop's denominator quirk."""
    hits_at = positions + 1  # 1-based
    # revisitop quirk: the cut-off is min(k, position of the last positive), so a query whose
    # positives all sit within the top k gets precision 1 at k, not n_positives / k (two
    # positives at ranks 1 and 2 give P@10 = 2/2). A positive missing from a truncated row
    # lies beyond it, so the cut-off stays k; this is exact for k <= the row's non-junk length
    # and a lower bound otherwise.
    last = hits_at[-1] if positions.size == n_positives else np.inf
    out = np.empty(len(kappas))
    for j, k in enumerate(kappas):
        cut = min(last, k)
        out[j] = np.count_nonzero(hits_at <= cut) / cut
    return out


def compute_map(
    ranks: ArrayLike,
    gnd: Sequence[GroundTruth],
    kappas: Sequence[int] = (1, 5, 10),
    *,
    n_db: int | None = None,
) -> tuple[float, np.ndarray, np.ndarray, np.ndarray]:
    """mAP, per-query AP, mean P@k and per-query P@k, exactly as revisitop's ``compute_map``.

    ``gnd[i]`` has 'ok' (positives) and optionally 'junk' indices; junk images are removed from
    the ranking before positions are counted. Queries without positives get NaN AP and P@k and
    are left out of the means (all NaN if no query has positives). With truncated ranks, a
    query's AP equals its full-ranking AP iff all its positives are within the truncated row.
    """
    ranks, n_db = _check_ranks(ranks, len(gnd), n_db)
    kappas = _check_kappas(kappas)
    aps = np.full(len(gnd), np.nan)
    pks = np.full((len(gnd), len(kappas)), np.nan)
    for q, gnd_q in enumerate(gnd):
        ok, junk = _query_gnd(gnd_q, q, n_db)
        if ok.size == 0:
            continue
        positions = _positive_positions(ranks[q], ok, junk)
        aps[q] = average_precision(positions, ok.size)
        pks[q] = _precision_at(positions, ok.size, kappas)
    valid = ~np.isnan(aps)
    if not valid.any():
        logger.warning("no query has any positive ('ok') image; mAP is undefined (NaN)")
        return float("nan"), aps, np.full(len(kappas), np.nan), pks
    if not valid.all():
        logger.debug("%d queries without positives left out of the mean", (~valid).sum())
    return float(aps[valid].mean()), aps, pks[valid].mean(axis=0), pks


def revisited_protocols(gnd: Sequence[Mapping[str, Any]]) -> dict[str, list[dict[str, np.ndarray]]]:
    """Easy/medium/hard 'ok'/'junk' ground truth from revisitop 'easy'/'hard'/'junk' entries."""

    def part(q: int, key: str) -> np.ndarray:
        if key not in gnd[q]:
            raise ValueError(f"gnd[{q}] has no '{key}' list; revisitop entries need easy/hard/junk")
        values = np.asarray(gnd[q][key])
        return np.empty(0, dtype=np.int64) if values.size == 0 else values.ravel()

    out: dict[str, list[dict[str, np.ndarray]]] = {name: [] for name in _PROTOCOLS}
    for q in range(len(gnd)):
        easy, hard, junk = part(q, "easy"), part(q, "hard"), part(q, "junk")
        out["easy"].append({"ok": easy, "junk": np.concatenate([junk, hard])})
        out["medium"].append({"ok": np.concatenate([easy, hard]), "junk": junk})
        out["hard"].append({"ok": hard, "junk": np.concatenate([junk, easy])})
    return out


def evaluate_revisited(
    ranks: ArrayLike,
    gnd: Sequence[Mapping[str, Any]],
    kappas: Sequence[int] = (1, 5, 10),
    *,
    n_db: int | None = None,
) -> dict[str, float]:
    """ROxford/RParis E/M/H mAP and mP@k in percent, keyed like ``'E/mAP'``, ``'H/mP@10'``."""
    kappas = _check_kappas(kappas)
    results: dict[str, float] = {}
    for name, gnd_t in revisited_protocols(gnd).items():
        tag = _PROTOCOLS[name]
        mean_ap, _, mean_pk, _ = compute_map(ranks, gnd_t, kappas, n_db=n_db)
        results[f"{tag}/mAP"] = 100.0 * mean_ap
        for k, p in zip(kappas, mean_pk, strict=True):
            results[f"{tag}/mP@{k}"] = 100.0 * float(p)
    return results


def evaluate_oxford(
    ranks: ArrayLike, gnd: Sequence[GroundTruth], *, n_db: int | None = None
) -> float:
    """Oxford5k/Paris6k original-protocol mAP in percent; ``gnd[i]`` has 'ok' and 'junk'."""
    return 100.0 * compute_map(ranks, gnd, (), n_db=n_db)[0]


def generic_map(
    ranks: ArrayLike,
    positives: Sequence[Sequence[int]],
    junk: Sequence[Sequence[int]] | None = None,
    *,
    n_db: int | None = None,
) -> float:
    """mAP in percent (revisitop AP) from per-query positive and optional junk index lists."""
    if junk is not None and len(junk) != len(positives):
        raise ValueError(
            f"junk has {len(junk)} entries but positives has {len(positives)}; give one list "
            "per query (an empty one where there is no junk)"
        )
    gnd = [{"ok": ok, "junk": () if junk is None else junk[q]} for q, ok in enumerate(positives)]
    return 100.0 * compute_map(ranks, gnd, (), n_db=n_db)[0]


# --------------------------------------------------------------------------------------------
# INRIA Holidays
# --------------------------------------------------------------------------------------------


def holidays_groundtruth(image_names: Sequence[str]) -> list[dict[str, Any]]:
    """Holidays queries as ``{'query': db index, 'ok': db indices}`` from image file names.

    Names look like ``123400.jpg``: the image numbered ``NNNN00`` is the query of group
    ``NNNN`` and the group's other images are its positives, as in the official
    ``holidays_images.dat``. Queries come in database order.
    """
    groups: dict[int, list[int]] = {}
    query_of: dict[int, int] = {}
    for idx, name in enumerate(image_names):
        stem = PurePath(name).stem
        if not stem.isdigit():
            raise ValueError(f"Holidays image name {name!r} is not like '123400.jpg'")
        group, member = divmod(int(stem), 100)
        if member == 0:
            query_of[group] = idx
        else:
            groups.setdefault(group, []).append(idx)
    orphans = sorted(set(groups) - set(query_of))
    if orphans:
        raise ValueError(
            f"Holidays group {orphans[0]} has images but no query image {orphans[0]}00.jpg; "
            "pass the full image list"
        )
    order = sorted(query_of, key=query_of.__getitem__)
    return [{"query": query_of[g], "ok": groups.get(g, [])} for g in order]


def holidays_map(
    ranks: ArrayLike, gnd: Sequence[Mapping[str, Any]], *, n_db: int | None = None
) -> float:
    """INRIA Holidays mAP in percent, as the official ``holidays_map.py`` computes it.

    ``gnd[i]`` is ``{'query': db index of the query image, 'ok': db indices}`` (see
    :func:`holidays_groundtruth`). The official script drops the query image from its own
    ranking (shifting later results up by one) and uses the same trapezoidal AP as revisitop,
    not the plain non-interpolated AP, so this is :func:`compute_map` with the query as junk.
    """
    converted = []
    for q, entry in enumerate(gnd):
        if "query" not in entry:
            raise ValueError(f"gnd[{q}] has no 'query' (database index of the query image)")
        converted.append({"ok": entry.get("ok", ()), "junk": [entry["query"]]})
    return 100.0 * compute_map(ranks, converted, (), n_db=n_db)[0]


# --------------------------------------------------------------------------------------------
# UKBench
# --------------------------------------------------------------------------------------------


def _check_labels(ranks: ArrayLike, labels: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Validate all-images-are-queries ranks against per-image labels."""
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise ValueError(f"labels must be 1-D (one label per image); got shape {labels.shape}")
    ranks, _ = _check_ranks(ranks, labels.size, labels.size)
    return ranks, labels


def ukbench_ns_score(ranks: ArrayLike, labels: ArrayLike) -> float:
    """UKBench N-S score: mean number of same-label images in the top 4, query included (0..4).

    Every image is a query: row ``i`` of ``ranks`` ranks the whole database for image ``i``,
    the query itself normally first.
    """
    ranks, labels = _check_labels(ranks, labels)
    if ranks.shape[1] < 4:
        raise ValueError(f"ranks must keep at least the top 4 per query; got {ranks.shape[1]}")
    same = labels[ranks[:, :4]] == labels[:, None]
    return float(same.sum(axis=1).mean())


def ukbench_map(ranks: ArrayLike, labels: ArrayLike) -> float:
    """UKBench leave-one-out mAP in percent: the query is removed from its own ranking.

    Positives are the other images with the query's label; AP is revisitop's trapezoidal AP.
    """
    ranks, labels = _check_labels(ranks, labels)
    _, group_of, counts = np.unique(labels, return_inverse=True, return_counts=True)
    members = np.split(np.argsort(group_of, kind="stable"), np.cumsum(counts)[:-1])
    gnd = [{"ok": members[g][members[g] != q], "junk": [q]} for q, g in enumerate(group_of.ravel())]
    return 100.0 * compute_map(ranks, gnd, ())[0]


# --------------------------------------------------------------------------------------------
# Google Landmarks v2
# --------------------------------------------------------------------------------------------


def gldv2_map_at_k(
    predictions: Mapping[Hashable, Sequence[Hashable]],
    solution: Mapping[Hashable, Collection[Hashable]],
    k: int = 100,
) -> float:
    """Google Landmark Retrieval mAP@k in percent.

    ``predictions`` maps query id -> ranked index ids; ``solution`` maps query id -> relevant
    index ids (``dict(enumerate(ranks))`` works for array rankings). Each query with a
    non-empty solution scores ``sum_{i<=k} P(i) rel(i) / min(n_relevant, k)``; a missing
    prediction scores 0; queries absent from ``solution`` or with an empty one are ignored.
    As in the official code, a repeated prediction is skipped but still takes its position.
    """
    if int(k) != k or k < 1:
        raise ValueError(f"k must be a positive integer; got {k}")
    scored = {q: set(rel) for q, rel in solution.items() if len(rel)}
    if not scored:
        raise ValueError("solution has no query with relevant images; mAP@k is undefined")
    total = 0.0
    for query, relevant in scored.items():
        seen: set[Hashable] = set()
        hits = 0
        ap = 0.0
        for i, item in enumerate(list(predictions.get(query, ()))[:k]):
            if item in seen:
                continue
            seen.add(item)
            if item in relevant:
                hits += 1
                ap += hits / (i + 1)
        total += ap / min(len(relevant), k)
    return 100.0 * total / len(scored)


def gldv2_gap(predicted_labels: ArrayLike, confidences: ArrayLike, true_labels: ArrayLike) -> float:
    """Google Landmark Recognition Global Average Precision (micro AP) in percent.

    One prediction per query. ``true_labels[i] < 0`` marks a query without a landmark: its
    prediction is always wrong, and the sum is normalised by the number of queries that do
    have one. Predictions are sorted by confidence, descending, ties by query index.
    """
    pred = np.asarray(predicted_labels)
    conf = np.asarray(confidences, dtype=np.float64)
    true = np.asarray(true_labels)
    if not pred.ndim == conf.ndim == true.ndim == 1 or not pred.size == conf.size == true.size:
        raise ValueError(
            "predicted_labels, confidences and true_labels must be 1-D with one entry per "
            f"query; got shapes {pred.shape}, {conf.shape}, {true.shape}"
        )
    if np.isnan(conf).any():
        raise ValueError(f"confidences contain NaN (query {np.flatnonzero(np.isnan(conf))[0]})")
    n_landmark = int(np.count_nonzero(true >= 0))
    if n_landmark == 0:
        raise ValueError("no query has a ground-truth landmark (true_labels >= 0); GAP undefined")
    order = np.argsort(-conf, kind="stable")
    correct = (pred[order] == true[order]) & (true[order] >= 0)
    precision = np.cumsum(correct) / np.arange(1, correct.size + 1)
    return 100.0 * float(precision[correct].sum()) / n_landmark
