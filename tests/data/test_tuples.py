"""Mining on arrays: diverse hard negatives, the start-up check, positives, sampling, statistics."""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest
import torch

from retrieval.data import tuples as tp
from retrieval.data.formats import write_positives_sidecar
from retrieval.data.tuples import (
    candidates_from_csr,
    choose_positives,
    epoch_generator,
    mine_hard_negatives,
    mining_statistics,
    sample_epoch,
    validate_mining_setup,
)
from retrieval.losses import contrastive_loss, triplet_loss

# --------------------------------------------------------------------------------------------------
# Hard negatives
# --------------------------------------------------------------------------------------------------


def naive_walk(query_desc, pool_desc, query_clusters, pool_clusters, nnum):
    """Reference: full ranking (similarity desc, then index), one negative per other cluster."""
    sims = (query_desc @ pool_desc.T).tolist()
    out = []
    for i, row in enumerate(sims):
        seen, taken = {int(query_clusters[i])}, []
        for j in sorted(range(len(row)), key=lambda j: (-row[j], j)):
            if int(pool_clusters[j]) not in seen:
                seen.add(int(pool_clusters[j]))
                taken.append(j)
                if len(taken) == nnum:
                    break
        out.append(taken)
    return torch.tensor(out, dtype=torch.long)


def test_diversity_rule_on_hand_built_pool():
    # Query along x; pool positions 0..5 with known similarities and clusters.
    query = torch.tensor([[1.0, 0.0]])
    sims = [0.99, 0.95, 0.9, 0.8, 0.7, 0.1]
    clusters = [7, 3, 3, 5, 3, 9]  # 7 is the query's own cluster
    pool = torch.tensor([[s, math.sqrt(1 - s * s)] for s in sims])
    idx, val = mine_hard_negatives(query, pool, [7], clusters, nnum=3)
    # Skip 0 (own cluster), take 1 (cluster 3), skip 2 and 4 (cluster 3 again), take 3 then 5.
    assert idx.tolist() == [[1, 3, 5]]
    assert idx.dtype == torch.long
    torch.testing.assert_close(val, torch.tensor([[0.95, 0.8, 0.1]]))


def test_ties_broken_by_pool_index_even_across_the_topk_width():
    # 100 identical pool images, all tied: a full sort keeps pool order, so the answer is 1, 2, 3
    # (0 shares the query's cluster) although topk of the first width may return any tied ones.
    pool = torch.ones(100, 4)
    query = torch.ones(2, 4)
    idx, _ = mine_hard_negatives(query, pool, [0, 50], list(range(100)), nnum=3)
    assert idx.tolist() == [[1, 2, 3], [0, 1, 2]]


def test_widening_when_top_of_ranking_is_own_cluster():
    # 40 near-duplicates of the query's landmark outrank everything: the first width sees only
    # them and repeats of cluster 1, so the search must widen to reach clusters 2 and 3.
    query = torch.tensor([[1.0, 0.0]])
    rows, clusters = [], []
    for k in range(40):
        rows.append([1.0 - 1e-3 * k, 0.0])
        clusters.append(0)
    for k in range(20):
        rows.append([0.9 - 1e-3 * k, 0.0])
        clusters.append(1)
    rows += [[0.5, 0.0], [0.4, 0.0], [0.3, 0.0]]
    clusters += [2, 3, 2]
    idx, val = mine_hard_negatives(query, torch.tensor(rows), [0], clusters, nnum=3)
    assert idx.tolist() == [[40, 60, 61]]
    torch.testing.assert_close(val, torch.tensor([[0.9, 0.5, 0.4]]))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_identical_to_naive_walk_on_random_float_descriptors(seed):
    g = torch.Generator().manual_seed(seed)
    query = torch.nn.functional.normalize(torch.randn(40, 16, generator=g), dim=1)
    pool = torch.nn.functional.normalize(torch.randn(300, 16, generator=g), dim=1)
    qc = torch.randint(0, 30, (40,), generator=g)
    pc = torch.randint(0, 30, (300,), generator=g)
    idx, val = mine_hard_negatives(query, pool, qc, pc, nnum=5, chunk_size=64)
    assert torch.equal(idx, naive_walk(query, pool, qc, pc, 5))
    torch.testing.assert_close(val, (query @ pool.T).gather(1, idx))


@pytest.mark.parametrize("seed", [0, 1])
def test_identical_to_naive_walk_with_ties_chunks_and_widening(seed, monkeypatch):
    # Integer descriptors make similarities exact (same in any chunk) and full of ties; a pool
    # dominated by the queries' cluster forces widening.
    widths = []
    ranked_top = tp._ranked_top

    def spy(sims, width):
        widths.append(width)
        return ranked_top(sims, width)

    monkeypatch.setattr(tp, "_ranked_top", spy)
    g = torch.Generator().manual_seed(seed)
    query = torch.randint(-1, 2, (30, 4), generator=g).float()
    pool = torch.randint(-1, 2, (400, 4), generator=g).float()
    qc = torch.zeros(30, dtype=torch.long)
    pc = torch.where(
        torch.rand(400, generator=g) < 0.85, 0, torch.randint(1, 9, (400,), generator=g)
    )
    idx, val = mine_hard_negatives(query, pool, qc, pc, nnum=5, chunk_size=7)
    assert torch.equal(idx, naive_walk(query, pool, qc, pc, 5))
    assert torch.equal(val, (query @ pool.T).gather(1, idx))
    assert max(widths) > min(widths), "the toy should need a wider top-k for some queries"
    # The rule itself: never the query's cluster, never two from one cluster.
    chosen = pc[idx]
    assert (chosen != 0).all()
    assert all(len(set(row)) == 5 for row in chosen.tolist())


def test_mining_error_when_pool_lacks_clusters():
    pool = torch.eye(4)
    with pytest.raises(ValueError, match=r"covers only 2 other clusters.*data\.poolsize"):
        mine_hard_negatives(torch.eye(4)[:1], pool, [0], [0, 1, 2, 1], nnum=3)


def test_mining_input_errors():
    with pytest.raises(ValueError, match="same network"):
        mine_hard_negatives(torch.ones(2, 3), torch.ones(5, 4), [0, 1], [0] * 5, nnum=1)
    with pytest.raises(ValueError, match="one cluster per descriptor"):
        mine_hard_negatives(torch.ones(2, 3), torch.ones(5, 3), [0], [0] * 5, nnum=1)


# --------------------------------------------------------------------------------------------------
# Start-up validation
# --------------------------------------------------------------------------------------------------


def small_split():
    return {
        "cids": [f"im{i}" for i in range(6)],
        "cluster": [0, 0, 1, 1, 2, 3],
        "qidxs": [0, 2],
        "pidxs": [1, 3],
    }


def test_validate_mining_setup_accepts_a_good_split():
    validate_mining_setup(small_split(), nnum=3, poolsize=6, qsize=2, candidates=[[(1, 5)]] * 6)


@pytest.mark.parametrize(
    ("change", "kwargs", "message"),
    [
        ({"cluster": None}, {}, r"missing 'cluster'.*sfm_db_from_labels"),
        ({"cluster": [0, 1]}, {}, r"'cluster' has 2 entries for 6 'cids'"),
        ({"qidxs": [], "pidxs": []}, {}, "at least one pair"),
        ({"pidxs": [1, 9]}, {}, r"'pidxs' holds indices outside \[0, 6\)"),
        ({"pidxs": [0, 3]}, {}, "pairs an image with itself"),
        ({}, {"nnum": 0}, r"data\.nnum must be >= 1; got 0"),
        ({}, {"qsize": 0}, r"data\.qsize must be >= 1; got 0"),
        ({}, {"poolsize": 0}, r"data\.poolsize=0 is smaller than data\.nnum=3"),
        ({}, {"nnum": 4}, r"4 clusters but data\.nnum=4"),
        ({}, {"poolsize": 2}, r"data\.poolsize=2 is smaller than data\.nnum=3"),
        ({}, {"candidates": [[(1, 5)], [], []]}, r"no candidate positives.*\[2\]"),
    ],
)
def test_validate_mining_setup_errors(change, kwargs, message):
    split = small_split() | change
    args = {"nnum": 3, "poolsize": 6} | kwargs
    with pytest.raises(ValueError, match=message):
        validate_mining_setup(split, **args)


def test_validate_mining_setup_names_prefix_and_warns_on_clipping(caplog):
    with pytest.raises(ValueError, match=r"train\.poolsize"):
        validate_mining_setup(small_split(), nnum=3, poolsize=1, prefix="train")
    with caplog.at_level(logging.WARNING, logger="retrieval.data.tuples"):
        validate_mining_setup(small_split(), nnum=3, poolsize=60, qsize=10)
    assert "data.poolsize=60 exceeds the 6 training images" in caplog.text
    assert "data.qsize=10 exceeds the 2 query-positive pairs" in caplog.text


# --------------------------------------------------------------------------------------------------
# Positives
# --------------------------------------------------------------------------------------------------


CANDIDATES = [
    [(1, 10), (2, 50), (3, 40), (4, 5), (0, 99)],  # image 0 (listing itself, which is ignored)
    [(0, 10)],
    [(5, 7), (6, 7), (7, 7)],  # image 2: tied inliers
]


def test_fixed_positive_is_the_database_pair():
    assert choose_positives("fixed", [0, 2], [1, 6]).tolist() == [1, 6]


def test_random_topk_inliers_picks_among_the_best_and_is_seeded():
    q = [0] * 300
    got = choose_positives(
        "random_topk_inliers", q, q, CANDIDATES, topk=2, generator=torch.Generator().manual_seed(0)
    )
    assert set(got.tolist()) == {2, 3}  # 50 and 40 inliers; never itself
    top1 = choose_positives("random_topk_inliers", q, q, CANDIDATES, topk=1)
    assert set(top1.tolist()) == {2}
    ties = choose_positives("random_topk_inliers", [2] * 100, [5] * 100, CANDIDATES, topk=2)
    assert set(ties.tolist()) == {5, 6}  # equal inliers keep the sidecar order
    # Longer list (a mapping this time): six with 2 inliers, then the first two listed with 1.
    many = {9: [(100 + k, 2 if k % 7 == 0 else 1) for k in range(40)]}
    got = choose_positives("random_topk_inliers", [9] * 400, [9] * 400, many, topk=8)
    assert set(got.tolist()) == {100, 107, 114, 121, 128, 135, 101, 102}

    def draw(seed):
        g = torch.Generator().manual_seed(seed)
        return choose_positives("random_topk_inliers", q, q, CANDIDATES, topk=4, generator=g)

    assert torch.equal(draw(3), draw(3))
    assert not torch.equal(draw(3), draw(4))


def test_hardest_positive_is_least_similar_candidate():
    # Query 0 = [1, 0]: candidates 1..4 have similarity 0.8, 0, 0.6, 0.9 -> hardest is 2.
    # Query 2 = [0, 1]: candidates 5, 6, 7 have similarity 1, 0, 0.8 -> hardest is 6.
    desc = torch.tensor(
        [[1, 0], [0.8, 0.6], [0, 1], [0.6, 0.8], [0.9, math.sqrt(0.19)], [0, 1], [1, 0], [0.6, 0.8]]
    )
    query_desc = desc[[0, 2]]
    kwargs = {"query_desc": query_desc, "candidates": CANDIDATES}
    got = choose_positives("hardest", [0, 2], [1, 5], desc_lookup=desc, **kwargs)
    assert got.tolist() == [2, 6]

    asked = []

    def lookup(indices):
        asked.append(sorted(indices.tolist()))
        return desc[indices]

    got = choose_positives("hardest", [0, 2], [1, 5], desc_lookup=lookup, **kwargs)
    assert got.tolist() == [2, 6]
    assert asked == [[1, 2, 3, 4, 5, 6, 7]]  # one lookup of the distinct candidates, not itself


def test_positive_strategy_errors():
    with pytest.raises(ValueError, match="fixed, random_topk_inliers, hardest"):
        choose_positives("closest", [0], [1])
    with pytest.raises(ValueError, match="needs the candidate positives sidecar"):
        choose_positives("random_topk_inliers", [0], [1])
    with pytest.raises(ValueError, match="needs query_desc"):
        choose_positives("hardest", [0], [1], CANDIDATES)
    with pytest.raises(ValueError, match="Query image 3 has no candidate positives"):
        choose_positives("random_topk_inliers", [3], [1], CANDIDATES)


def test_candidates_from_the_sidecar_file(tmp_path):
    path = tmp_path / "positives.npz"
    write_positives_sidecar(path, [[(1, 4), (2, 9)], [], [(0, 3)]])
    with np.load(path) as data:
        cands = candidates_from_csr(data["offsets"], data["indices"], data["inliers"])
    assert [c.tolist() for c in cands] == [[[1, 4], [2, 9]], [], [[0, 3]]]
    got = choose_positives("random_topk_inliers", [0, 2], [1, 0], cands, topk=1)
    assert got.tolist() == [2, 0]


# --------------------------------------------------------------------------------------------------
# Epoch sampling
# --------------------------------------------------------------------------------------------------


def test_sample_epoch_is_deterministic_and_without_replacement():
    a = sample_epoch(50, 20, 1000, 300, torch.Generator().manual_seed(5))
    b = sample_epoch(50, 20, 1000, 300, torch.Generator().manual_seed(5))
    c = sample_epoch(50, 20, 1000, 300, torch.Generator().manual_seed(6))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])
    pairs, pool = a
    assert pairs.shape == (20,) and pool.shape == (300,)
    assert pairs.unique().numel() == 20 and pool.unique().numel() == 300
    assert int(pairs.min()) >= 0 and int(pairs.max()) < 50 and int(pool.max()) < 1000


def test_sample_epoch_clips_and_epoch_generator_depends_on_seed_and_epoch():
    pairs, pool = sample_epoch(5, 20, 8, 300, epoch_generator(0, 1))
    assert sorted(pairs.tolist()) == list(range(5)) and sorted(pool.tolist()) == list(range(8))

    def draw(seed, epoch):
        return sample_epoch(100, 10, 100, 10, epoch_generator(seed, epoch))[0]

    assert torch.equal(draw(0, 3), draw(0, 3))
    assert not torch.equal(draw(0, 3), draw(0, 4))
    assert not torch.equal(draw(0, 3), draw(1, 3))


# --------------------------------------------------------------------------------------------------
# Statistics of mined tuples
# --------------------------------------------------------------------------------------------------


def stats_toy():
    query = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    positive = torch.tensor([[0.0, 1.0], [1.0, 0.0]])
    negatives = torch.tensor([[[-1.0, 0.0], [1.0, 0.0]], [[-1.0, 0.0], [0.0, -1.0]]])
    return query, positive, negatives


def test_mining_statistics_contrastive_hand_values():
    stats = mining_statistics(*stats_toy(), margin=0.7)
    # Tuple 1: d_p = sqrt(2), d_n = 2 and 0 -> 0.5 * 2 + 0.5 * 0.7^2 = 1.245; tuple 2: all zero.
    assert stats["mean_pos_dist"] == pytest.approx(math.sqrt(2) / 2)
    assert stats["mean_neg_dist"] == pytest.approx((2 + 0 + 2 + math.sqrt(2)) / 4)
    assert stats["mean_loss"] == pytest.approx(1.245 / 2)
    assert stats["nonzero_loss_fraction"] == 0.5
    assert stats["active_negative_fraction"] == 0.5


def test_mining_statistics_triplet_hand_values():
    stats = mining_statistics(*stats_toy(), margin=0.1, loss="triplet")
    # Tuple 1: max(0, 0.1 + 2 - 4) + max(0, 0.1 + 2 - 0) = 2.1; tuple 2: 0.1 + 0 - 4, 0.1 - 2 -> 0.
    assert stats["mean_loss"] == pytest.approx(1.05)
    assert stats["nonzero_loss_fraction"] == 0.5
    assert stats["active_negative_fraction"] == 0.5


def test_mining_statistics_agrees_with_the_losses_module():
    g = torch.Generator().manual_seed(0)
    q, p = (torch.nn.functional.normalize(torch.randn(9, 8, generator=g), dim=-1) for _ in "qp")
    n = torch.nn.functional.normalize(torch.randn(9, 3, 8, generator=g), dim=-1)
    cases = (("contrastive", contrastive_loss, 0.85), ("triplet", triplet_loss, 0.5))
    for name, fn, margin in cases:
        stats = mining_statistics(q, p, n, margin=margin, loss=name)
        assert stats["mean_loss"] == pytest.approx(float(fn(q, p, n, margin, "mean")), rel=1e-5)
    with pytest.raises(ValueError, match="valid: contrastive, triplet"):
        mining_statistics(q, p, n, margin=0.1, loss="ap")
    with pytest.raises(ValueError, match="negatives Q x K x D"):
        mining_statistics(q, p, n[:, 0], margin=0.1)
