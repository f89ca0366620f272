"""Tests for retrieval.eval.metrics against hand-computed values and an independent reference."""

from __future__ import annotations

import logging
import os
import pickle
from pathlib import Path

import numpy as np
import pytest

from retrieval.eval.metrics import (
    average_precision,
    compute_map,
    evaluate_oxford,
    evaluate_revisited,
    generic_map,
    gldv2_gap,
    gldv2_map_at_k,
    holidays_groundtruth,
    holidays_map,
    revisited_protocols,
    ukbench_map,
    ukbench_ns_score,
)

# --------------------------------------------------------------------------------------------
# Independent reference: walk the ranking, build the precision/recall curve point by point and
# integrate it with np.trapezoid from (recall 0, precision 1). Linear interpolation between
# consecutive points is exactly revisitop's trapezoid rule.
# --------------------------------------------------------------------------------------------


def reference_query(ranking, ok, junk, kappas):
    """AP and P@k of one query, computed from the explicit PR curve."""
    ok, junk = set(int(i) for i in ok), set(int(i) for i in junk)
    recall, precision, hit_ranks = [0.0], [1.0], []
    seen = 0
    for idx in ranking:
        if int(idx) in junk:
            continue
        seen += 1
        if int(idx) in ok:
            hit_ranks.append(seen)
        recall.append(len(hit_ranks) / len(ok))
        precision.append(len(hit_ranks) / seen)
    ap = float(np.trapezoid(precision, recall))
    all_found = len(hit_ranks) == len(ok)
    pks = []
    for k in kappas:
        cut = min(k, hit_ranks[-1]) if all_found else k
        pks.append(sum(r <= cut for r in hit_ranks) / cut)
    return ap, pks


def random_case(rng, truncate):
    """Random ranks (n_queries, n_ranked) and gnd; some queries without positives."""
    n_db = int(rng.integers(4, 40))
    n_q = int(rng.integers(1, 6))
    ranks = np.stack([rng.permutation(n_db) for _ in range(n_q)])
    if truncate:
        ranks = ranks[:, : int(rng.integers(1, n_db + 1))]
    gnd = []
    for _ in range(n_q):
        labels = rng.choice(3, size=n_db, p=[0.6, 0.25, 0.15])  # 0 other, 1 ok, 2 junk
        if rng.random() < 0.15:
            labels[labels == 1] = 0
        gnd.append({"ok": np.flatnonzero(labels == 1), "junk": np.flatnonzero(labels == 2)})
    return ranks, gnd, n_db


# --------------------------------------------------------------------------------------------
# average_precision
# --------------------------------------------------------------------------------------------


def test_average_precision_hand_values():
    # positives at 0 and 2 of 2: (1 + 1)/2 * 1/2 + (1/2 + 2/3)/2 * 1/2 = 1/2 + 7/24 = 19/24
    assert average_precision([0, 2], 2) == pytest.approx(19 / 24)
    # one of two positives, at 1: (0/1 + 1/2)/2 * 1/2 = 1/8
    assert average_precision([1], 2) == pytest.approx(1 / 8)
    assert average_precision([0, 1, 2], 3) == pytest.approx(1.0)
    assert average_precision([], 5) == 0.0


def test_average_precision_is_not_plain_step_ap():
    # step (non-interpolated) AP of [0, 2] would be (1/1 + 2/3)/2 = 5/6, not 19/24
    assert average_precision(np.array([0, 2]), 2) != pytest.approx(5 / 6)


@pytest.mark.parametrize(
    ("positions", "n", "message"),
    [
        ([0, 2], 0, "n_positives must be a positive integer"),
        ([2, 1], 2, "strictly increasing"),
        ([-1], 2, "non-negative"),
        ([0, 1, 2], 2, "n_positives must count every positive"),
        ([0.5], 2, "1-D integer array"),
    ],
)
def test_average_precision_rejects_bad_input(positions, n, message):
    with pytest.raises(ValueError, match=message):
        average_precision(np.asarray(positions), n)


# --------------------------------------------------------------------------------------------
# compute_map: junk, empty queries, precision quirk, truncation
# --------------------------------------------------------------------------------------------

TOY_RANKS = np.array(
    [
        [5, 3, 0, 4, 1, 2],
        [0, 1, 2, 3, 4, 5],
        [0, 1, 2, 3, 4, 5],
    ]
)
TOY_GND = [
    {"ok": [0, 1], "junk": [3]},
    {"ok": [], "junk": [2]},
    {"ok": [0]},
]


def test_compute_map_junk_removal_and_empty_query():
    mean_ap, aps, mean_pk, pks = compute_map(TOY_RANKS, TOY_GND, kappas=(1, 2, 5, 10))
    # query 0: junk 3 removed -> [5, 0, 4, 1, 2]; positives at 1 and 3:
    #   (0/1 + 1/2)/2 * 1/2 + (1/3 + 2/4)/2 * 1/2 = 1/8 + 5/24 = 1/3
    # (without junk removal positions 2 and 4 would give 1/12 + 13/80 = 59/240)
    assert aps[0] == pytest.approx(1 / 3)
    assert np.isnan(aps[1]) and np.isnan(pks[1]).all()
    assert aps[2] == pytest.approx(1.0)
    # the empty query is left out of the mean: (1/3 + 1) / 2
    assert mean_ap == pytest.approx(2 / 3)
    # query 0 hits at 1-based 2 and 4 -> cut-off min(k, 4):
    #   P@1 = 0/1, P@2 = 1/2, P@5 = 2/4 (quirk; 2/5 otherwise), P@10 = 2/4
    np.testing.assert_allclose(pks[0], [0.0, 0.5, 0.5, 0.5])
    # query 2 has its only positive first: quirk gives P@k = 1/1 for every k
    np.testing.assert_allclose(pks[2], [1.0, 1.0, 1.0, 1.0])
    np.testing.assert_allclose(mean_pk, [0.5, 0.75, 0.75, 0.75])


def test_compute_map_truncated_ranks():
    truncated = TOY_RANKS[:, :3]
    # without n_db the database size is taken from the row length, so index 5 is flagged
    with pytest.raises(ValueError, match=r"row 0 \(query 0\).*index 5 outside \[0, 3\); pass n_db"):
        compute_map(truncated, TOY_GND)
    _, aps, _, pks = compute_map(truncated, TOY_GND, kappas=(1, 2, 5), n_db=6)
    # query 0: [5, 3, 0] -> [5, 0]; positive 1 is beyond the cut and counts as not retrieved:
    #   (0/1 + 1/2)/2 * 1/2 = 1/8 < 1/3 of the full ranking
    assert aps[0] == pytest.approx(1 / 8)
    # a positive is missing, so the cut-off stays k: P@1 = 0, P@2 = 1/2 (exact, k <= 2 kept),
    # P@5 = 1/5 is only a lower bound of the full-ranking 2/4
    np.testing.assert_allclose(pks[0], [0.0, 0.5, 0.2])
    # query 2 has its positive within the top 3: identical to the full ranking
    assert aps[2] == pytest.approx(1.0)


def test_truncated_ap_equals_full_ap_iff_all_positives_within_k():
    rng = np.random.default_rng(3)
    for _ in range(100):
        ranks, gnd, n_db = random_case(rng, truncate=False)
        k = int(rng.integers(1, n_db + 1))
        _, full, _, _ = compute_map(ranks, gnd, ())
        _, trunc, _, _ = compute_map(ranks[:, :k], gnd, (), n_db=n_db)
        for q, g in enumerate(gnd):
            if len(g["ok"]) == 0:
                continue
            inside = np.isin(g["ok"], ranks[q, :k]).all()
            assert (trunc[q] == pytest.approx(full[q])) == inside
            assert trunc[q] <= full[q] + 1e-12


def test_compute_map_matches_reference_on_random_cases():
    rng = np.random.default_rng(0)
    kappas = (1, 3, 5, 10)
    for trial in range(300):
        ranks, gnd, n_db = random_case(rng, truncate=trial % 2 == 1)
        mean_ap, aps, mean_pk, pks = compute_map(ranks, gnd, kappas, n_db=n_db)
        ref_aps, ref_pks = [], []
        for q, g in enumerate(gnd):
            if len(g["ok"]) == 0:
                continue
            ap, pk = reference_query(ranks[q], g["ok"], g["junk"], kappas)
            assert aps[q] == pytest.approx(ap)
            # P@k of the reference is exact only for k within the kept (non-junk) row
            kept = np.count_nonzero(~np.isin(ranks[q], g["junk"]))
            for j, k in enumerate(kappas):
                if k <= kept or ranks.shape[1] == n_db:
                    assert pks[q, j] == pytest.approx(pk[j])
            ref_aps.append(ap)
            ref_pks.append(pk)
        if ref_aps:
            assert mean_ap == pytest.approx(np.mean(ref_aps))
            if ranks.shape[1] == n_db:
                np.testing.assert_allclose(mean_pk, np.mean(ref_pks, axis=0))
        else:
            assert np.isnan(mean_ap)


def test_compute_map_all_queries_empty_is_nan_with_warning(caplog):
    with caplog.at_level(logging.WARNING, logger="retrieval.eval.metrics"):
        mean_ap, aps, mean_pk, _ = compute_map(np.array([[0, 1]]), [{"ok": []}], (1,))
    assert np.isnan(mean_ap) and np.isnan(aps).all() and np.isnan(mean_pk).all()
    assert "no query has any positive" in caplog.text


@pytest.mark.parametrize(
    ("ranks", "gnd", "message"),
    [
        (np.arange(4), [{"ok": [0]}], r"2-D array of shape \(n_queries, n_ranked\)"),
        (np.zeros((4, 1), dtype=int), [{"ok": [0]}], r"4 rows .* 1 queries.*ranks\.T"),
        (np.array([[0.0, 1.0]]), [{"ok": [0]}], "integer database indices"),
        (np.array([[0, 1], [1, 7]]), [{"ok": [0]}] * 2, r"row 1 \(query 1\).*index 7"),
        (np.array([[0, 1], [1, 0]]), [{"ok": [0]}, {"ok": [2]}], r"gnd\[1\]\['ok'\].*index 2"),
        (np.array([[0, 1]]), [{"junk": [0]}], r"gnd\[0\] must be a mapping with an 'ok'"),
        (np.array([[0, 1]]), [{"ok": [0, 0]}], r"gnd\[0\]\['ok'\] lists an index more"),
        (np.array([[0, 1]]), [{"ok": [1], "junk": [1]}], r"gnd\[0\]: index 1 is in both"),
        (np.array([[0, 1]]), [{"ok": [[0]]}], r"gnd\[0\]\['ok'\] must be a flat list"),
    ],
)
def test_compute_map_rejects_bad_input(ranks, gnd, message):
    with pytest.raises(ValueError, match=message):
        compute_map(ranks, gnd)


def test_compute_map_rejects_bad_kappas_and_n_db():
    with pytest.raises(ValueError, match="kappas must be positive integers"):
        compute_map(np.array([[0, 1]]), [{"ok": [0]}], kappas=(0,))
    with pytest.raises(ValueError, match="more than n_db=1"):
        compute_map(np.array([[0, 1]]), [{"ok": [0]}], n_db=1)


# --------------------------------------------------------------------------------------------
# Revisited protocol
# --------------------------------------------------------------------------------------------


def test_revisited_protocols_lists():
    gnd = [{"easy": [1, 2], "hard": [3], "junk": [4]}, {"easy": [], "hard": [0], "junk": []}]
    p = revisited_protocols(gnd)
    assert sorted(p["easy"][0]["ok"]) == [1, 2] and sorted(p["easy"][0]["junk"]) == [3, 4]
    assert sorted(p["medium"][0]["ok"]) == [1, 2, 3] and sorted(p["medium"][0]["junk"]) == [4]
    assert sorted(p["hard"][0]["ok"]) == [3] and sorted(p["hard"][0]["junk"]) == [1, 2, 4]
    assert p["easy"][1]["ok"].size == 0 and p["easy"][1]["junk"].tolist() == [0]
    assert p["hard"][1]["junk"].dtype.kind == "i"  # empty lists do not turn indices into floats


def test_revisited_protocols_names_missing_key():
    with pytest.raises(ValueError, match=r"gnd\[0\] has no 'hard' list"):
        revisited_protocols([{"easy": [0], "junk": []}])


def test_evaluate_revisited_hand_example():
    ranks = np.array([[3, 1, 0, 2]])
    gnd = [{"easy": [0], "hard": [2], "junk": [1]}]
    res = evaluate_revisited(ranks, gnd, kappas=(1, 5))
    # E: ok [0], junk [1, 2] -> [3, 0]: AP = (0 + 1/2)/2 = 1/4; P@5 cut-off 2 -> 1/2
    # M: ok [0, 2], junk [1] -> [3, 0, 2]: AP = 1/8 + 7/24 = 5/12; P@5 cut-off 3 -> 2/3
    # H: ok [2], junk [1, 0] -> [3, 2]: AP = 1/4; P@5 -> 1/2
    expected = {
        "E/mAP": 25.0, "E/mP@1": 0.0, "E/mP@5": 50.0,
        "M/mAP": 500 / 12, "M/mP@1": 0.0, "M/mP@5": 200 / 3,
        "H/mAP": 25.0, "H/mP@1": 0.0, "H/mP@5": 50.0,
    }  # fmt: skip
    assert res.keys() == expected.keys()
    for key, value in expected.items():
        assert res[key] == pytest.approx(value), key


REVISITOP_DIR = Path(
    os.environ.get("RETRIEVAL_REVISITOP_DATA", Path.home() / ".cache" / "retrieval" / "revisitop")
).expanduser()

PUBLISHED_R101_GEM = {
    "roxford5k": {"E/mAP": 84.81, "M/mAP": 64.67, "H/mAP": 38.47},
    "rparis6k": {"E/mAP": 92.12, "M/mAP": 77.20, "H/mAP": 56.32},
}


@pytest.mark.parametrize("dataset", sorted(PUBLISHED_R101_GEM))
def test_revisitop_published_r101_gem_numbers(dataset):
    features = REVISITOP_DIR / f"{dataset}_resnet_rsfm120k_gem.mat"
    gnd_file = REVISITOP_DIR / f"gnd_{dataset}.pkl"
    missing = [p.name for p in (features, gnd_file) if not p.is_file()]
    if missing:
        pytest.skip(
            f"revisitop example data missing in {REVISITOP_DIR} ({', '.join(missing)}): download "
            "the features from http://cmp.felk.cvut.cz/revisitop/data/features/ and the gnd "
            f"pickle from http://cmp.felk.cvut.cz/revisitop/data/datasets/{dataset}/, or set "
            "RETRIEVAL_REVISITOP_DATA"
        )
    sio = pytest.importorskip("scipy.io")
    mat = sio.loadmat(features)
    scores = mat["X"].T @ mat["Q"]  # (n_db, n_queries)
    ranks = np.argsort(-scores, axis=0).T
    with open(gnd_file, "rb") as f:
        gnd = pickle.load(f)["gnd"]  # trusted published file; a restricted loader comes later
    res = evaluate_revisited(ranks, gnd)
    for key, value in PUBLISHED_R101_GEM[dataset].items():
        assert round(res[key], 2) == pytest.approx(value), key


# --------------------------------------------------------------------------------------------
# Oxford / generic
# --------------------------------------------------------------------------------------------


def test_evaluate_oxford_and_generic_map():
    gnd = [{"ok": [0, 1], "junk": [3]}, {"ok": [0], "junk": []}]
    ranks = TOY_RANKS[[0, 2]]
    # (1/3 + 1) / 2 in percent
    assert evaluate_oxford(ranks, gnd) == pytest.approx(200 / 3)
    assert generic_map(ranks, [[0, 1], [0]], [[3], []]) == pytest.approx(200 / 3)
    # without junk: query 0 positives at 2 and 4 -> 59/240
    assert generic_map(ranks, [[0, 1], [0]]) == pytest.approx(50 * (59 / 240 + 1))


def test_generic_map_junk_length_mismatch():
    with pytest.raises(ValueError, match="junk has 1 entries but positives has 2"):
        generic_map(TOY_RANKS[:2], [[0], [1]], [[2]])


# --------------------------------------------------------------------------------------------
# INRIA Holidays
# --------------------------------------------------------------------------------------------

HOLIDAYS_NAMES = ["jpg/100000.jpg", "jpg/100001.jpg", "jpg/100002.jpg", "100100.jpg", "100101.jpg"]


def test_holidays_groundtruth_from_names():
    gnd = holidays_groundtruth(HOLIDAYS_NAMES)
    assert gnd == [{"query": 0, "ok": [1, 2]}, {"query": 3, "ok": [4]}]


@pytest.mark.parametrize(
    ("names", "message"),
    [
        (["100000.jpg", "abc.jpg"], r"'abc\.jpg' is not like"),
        (["100000.jpg", "100101.jpg"], r"group 1001 has images but no query image 100100\.jpg"),
    ],
)
def test_holidays_groundtruth_rejects_bad_names(names, message):
    with pytest.raises(ValueError, match=message):
        holidays_groundtruth(names)


def test_holidays_map_hand_example():
    gnd = holidays_groundtruth(HOLIDAYS_NAMES)
    ranks = np.array([[1, 3, 0, 2, 4], [0, 3, 4, 1, 2]])
    # query 0: its own image at position 2 is dropped -> [1, 3, 2, 4]; positives at 0 and 2:
    #   AP = 1/2 + 7/24 = 19/24 (trapezoids; the step AP would be 5/6)
    # query 3: [0, 3, 4, ...] -> [0, 4, ...]; its positive at 1: AP = (0 + 1/2)/2 = 1/4
    assert holidays_map(ranks, gnd) == pytest.approx(100 * (19 / 24 + 1 / 4) / 2)


def test_holidays_map_needs_query_index():
    with pytest.raises(ValueError, match=r"gnd\[0\] has no 'query'"):
        holidays_map(np.array([[0, 1]]), [{"ok": [1]}])


# --------------------------------------------------------------------------------------------
# UKBench
# --------------------------------------------------------------------------------------------


def test_ukbench_ns_score_hand_example():
    labels = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    ranks = np.array(
        [
            [0, 1, 2, 3, 4, 5, 6, 7],  # 4 same-label in the top 4
            [1, 0, 4, 2, 3, 5, 6, 7],  # 3
            [2, 4, 5, 6, 0, 1, 3, 7],  # 1 (only the query itself)
            [4, 5, 6, 7, 0, 1, 2, 3],  # 0
            [4, 5, 6, 7, 0, 1, 2, 3],  # 4
            [5, 4, 0, 1, 6, 7, 2, 3],  # 2
            [6, 7, 4, 0, 1, 2, 3, 5],  # 3
            [7, 0, 1, 2, 3, 4, 5, 6],  # 1
        ]
    )
    assert ukbench_ns_score(ranks, labels) == pytest.approx((4 + 3 + 1 + 0 + 4 + 2 + 3 + 1) / 8)


def test_ukbench_ns_score_needs_top_4():
    with pytest.raises(ValueError, match="at least the top 4"):
        ukbench_ns_score(np.array([[0, 1, 2]] * 4), [0, 0, 0, 0])


def test_ukbench_map_hand_example():
    labels = [0, 0, 1, 1]
    ranks = np.array([[0, 2, 1, 3], [1, 0, 2, 3], [3, 2, 0, 1], [0, 1, 2, 3]])
    # q0: [2, 1, 3] -> AP 1/4;  q1: [0, 2, 3] -> 1;  q2: query at position 1 dropped ->
    # [3, 0, 1] -> 1;  q3: [0, 1, 2] -> positive at 2: (0 + 1/3)/2 = 1/6
    assert ukbench_map(ranks, labels) == pytest.approx(100 * (1 / 4 + 1 + 1 + 1 / 6) / 4)


def test_ukbench_map_matches_reference_on_random_rankings():
    rng = np.random.default_rng(1)
    labels = np.repeat(np.arange(5), 4)
    ranks = np.stack([rng.permutation(20) for _ in range(20)])
    ref = []
    for q in range(20):
        ok = [i for i in range(20) if labels[i] == labels[q] and i != q]
        ref.append(reference_query(ranks[q], ok, [q], ())[0])
    assert ukbench_map(ranks, labels) == pytest.approx(100 * np.mean(ref))


# --------------------------------------------------------------------------------------------
# Google Landmarks v2
# --------------------------------------------------------------------------------------------


def test_gldv2_map_at_k_hand_example():
    solution = {"a": ["x", "y"], "b": ["z"], "c": [], "e": ["x", "y"]}
    predictions = {
        "a": ["x", "q", "y"],
        "b": ["q", "q", "z"],
        "c": ["x"],
        "d": ["x"],
        "e": ["x", "x", "y"],
    }
    # a: hits at 1 and 3 -> (1/1 + 2/3) / min(2, 100) = 5/6
    # b: the repeated "q" is skipped but keeps its slot, "z" is at 3 -> (1/3) / 1
    # e: the repeated relevant "x" counts once -> (1/1 + 2/3) / 2 = 5/6 (not (1 + 1 + 1) / 2)
    # c (empty solution) and d (not in solution) are ignored
    assert gldv2_map_at_k(predictions, solution) == pytest.approx(100 * (5 / 6 + 1 / 3 + 5 / 6) / 3)
    # k = 2: a -> (1/1) / min(2, 2); b -> "z" beyond k -> 0; e -> (1/1) / 2
    assert gldv2_map_at_k(predictions, solution, k=2) == pytest.approx(100 / 3)


def test_gldv2_map_at_k_denominator_and_missing_prediction():
    # 3 relevant, k = 2, both slots right: (1 + 1) / min(3, 2) = 1; "m" has no prediction -> 0
    solution = {"q": [1, 2, 3], "m": [1]}
    assert gldv2_map_at_k({"q": np.array([2, 1, 3])}, solution, k=2) == pytest.approx(50.0)


def test_gldv2_map_at_k_matches_definition_on_arrays():
    rng = np.random.default_rng(2)
    ranks = np.stack([rng.permutation(300) for _ in range(8)])
    solution = {q: rng.choice(300, size=int(rng.integers(0, 150)), replace=False) for q in range(8)}
    expected = []
    for q, relevant in solution.items():
        if len(relevant) == 0:
            continue
        rel = np.isin(ranks[q, :100], relevant)
        prec = np.cumsum(rel) / np.arange(1, 101)
        expected.append((prec * rel).sum() / min(len(relevant), 100))
    got = gldv2_map_at_k(dict(enumerate(ranks)), solution)
    assert got == pytest.approx(100 * np.mean(expected))


def test_gldv2_map_at_k_rejects_bad_input():
    with pytest.raises(ValueError, match="solution has no query with relevant images"):
        gldv2_map_at_k({"a": [1]}, {"a": []})
    with pytest.raises(ValueError, match="k must be a positive integer"):
        gldv2_map_at_k({"a": [1]}, {"a": [1]}, k=0)


def test_gldv2_gap_hand_example():
    pred = np.array([1, 2, 3, 4, 5])
    conf = np.array([0.9, 0.8, 0.7, 0.6, 0.5])
    true = np.array([1, 9, 3, -1, 5])
    # sorted by confidence: right, wrong, right, non-landmark (wrong), right
    # sum of precisions at the right ones = 1/1 + 2/3 + 3/5; 4 queries have a landmark
    expected = 100 * (1 + 2 / 3 + 3 / 5) / 4
    assert gldv2_gap(pred, conf, true) == pytest.approx(expected)
    perm = np.array([3, 0, 4, 2, 1])
    assert gldv2_gap(pred[perm], conf[perm], true[perm]) == pytest.approx(expected)


def test_gldv2_gap_non_landmark_and_ties():
    # predicting -1 for a non-landmark query is still wrong
    assert gldv2_gap([-1, 2], [0.9, 0.1], [-1, 2]) == pytest.approx(100 * (1 / 2) / 1)
    # equal confidences keep query order: wrong then right -> (1/2) / 2
    assert gldv2_gap([1, 2], [0.5, 0.5], [9, 2]) == pytest.approx(25.0)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (([1, 2], [0.5], [1, 2]), "one entry per query"),
        (([1], [np.nan], [1]), r"NaN \(query 0\)"),
        (([1], [0.5], [-1]), "no query has a ground-truth landmark"),
    ],
)
def test_gldv2_gap_rejects_bad_input(args, message):
    with pytest.raises(ValueError, match=message):
        gldv2_gap(*args)
