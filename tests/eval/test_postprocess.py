"""Tests for αQE and DBA against hand-computed toy cases and a dense reference."""

from __future__ import annotations

import numpy as np
import pytest

from retrieval.eval.metrics import compute_map
from retrieval.eval.postprocess import alpha_query_expansion, database_augmentation
from retrieval.index import search

# 2-D toy: query q = (0.8, 0.6); database e1, e2, u = (0.6, 0.8).
# Similarities to q: e1 0.8, e2 0.6, u 0.48 + 0.48 = 0.96, so the top 2 are u then e1.
TOY_QUERY = np.array([[0.8, 0.6]], dtype=np.float32)
TOY_DB = np.array([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]], dtype=np.float32)


def unit(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm."""
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def dense_reference(queries, database, k, alpha, exclude_self=False):
    """αQE/DBA from the full similarity matrix and a full argsort (small inputs only)."""
    queries, database = unit(queries.astype(np.float64)), unit(database.astype(np.float64))
    sims = queries @ database.T
    if exclude_self:
        np.fill_diagonal(sims, -np.inf)
    out = queries.copy()
    for i, row in enumerate(sims):
        for j in np.argsort(-row)[:k]:
            out[i] += max(row[j], 0.0) ** alpha * database[j]
    return unit(out)


@pytest.mark.parametrize(
    ("alpha", "expected"),
    [
        # q + 0.96 u + 0.8 e1 = (0.8 + 0.576 + 0.8, 0.6 + 0.768) = (2.176, 1.368);
        # norm sqrt(4.734976 + 1.871424) = sqrt(6.6064) = 2.570292.
        (1.0, [0.846596, 0.532235]),
        # weights 0.96^3 = 0.884736 and 0.8^3 = 0.512:
        # (0.8 + 0.5308416 + 0.512, 0.6 + 0.7077888) = (1.8428416, 1.3077888); norm 2.259729.
        (3.0, [0.815514, 0.578737]),
        # average QE: q + u + e1 = (2.4, 1.4); norm sqrt(7.72) = 2.778489.
        (0.0, [0.863779, 0.503871]),
    ],
)
def test_aqe_hand_computed_2d(alpha, expected):
    out = alpha_query_expansion(TOY_QUERY, TOY_DB, k=2, alpha=alpha)
    assert out.dtype == np.float32 and out.shape == (1, 2)
    np.testing.assert_allclose(out, [expected], atol=1e-5)


def test_aqe_k1_uses_only_the_best_neighbour():
    # q + 0.96 u = (0.8 + 0.576, 0.6 + 0.768) = (1.376, 1.368); norm 1.940330.
    out = alpha_query_expansion(TOY_QUERY, TOY_DB, k=1, alpha=1.0)
    np.testing.assert_allclose(out, [[0.709159, 0.705036]], atol=1e-5)


def test_dba_hand_computed_3d():
    # Database e1, e2, v = (0.6, 0.8, 0), e3; k = 1, alpha = 1, a row never picks itself.
    db = np.array([[1, 0, 0], [0, 1, 0], [0.6, 0.8, 0], [0, 0, 1]], dtype=np.float32)
    out = database_augmentation(db, k=1, alpha=1.0)
    expected = [
        # e1: best other row v (0.6): e1 + 0.6 v = (1.36, 0.48, 0); norm sqrt(2.08) = 1.442221
        [0.942990, 0.332820, 0.0],
        # e2: best other row v (0.8): e2 + 0.8 v = (0.48, 1.64, 0); norm sqrt(2.92) = 1.708801
        [0.280899, 0.959737, 0.0],
        # v: best other row e2 (0.8): v + 0.8 e2 = (0.6, 1.6, 0); norm sqrt(2.92)
        [0.351123, 0.936329, 0.0],
        # e3: every other row has similarity 0, so weight 0^1 = 0: unchanged
        [0.0, 0.0, 1.0],
    ]
    np.testing.assert_allclose(out, expected, atol=1e-5)


def test_negative_similarities_get_zero_weight():
    # q = e1; the best database row (-0.6, 0.8) has similarity -0.6, clipped to weight 0 for
    # alpha > 0. Average QE (alpha = 0) still adds it: (1 - 0.6, 0.8) = (0.4, 0.8) -> norm 0.894427.
    q = np.array([[1.0, 0.0]], dtype=np.float32)
    db = np.array([[-0.6, 0.8], [-0.8, -0.6]], dtype=np.float32)
    np.testing.assert_allclose(alpha_query_expansion(q, db, k=1, alpha=3.0), q, atol=1e-7)
    np.testing.assert_allclose(
        alpha_query_expansion(q, db, k=1, alpha=0.0), [[0.447214, 0.894427]], atol=1e-6
    )


def test_alpha_zero_is_average_query_expansion():
    rng = np.random.default_rng(0)
    db = unit(rng.standard_normal((200, 16)))
    queries = unit(db[:10] + 0.3 * rng.standard_normal((10, 16)))
    k = 5
    _, ranks = search(db, queries, k=k)
    average = unit(unit(queries) + db[ranks].sum(axis=1))  # plain mean of query and neighbours
    np.testing.assert_allclose(alpha_query_expansion(queries, db, k=k, alpha=0), average, atol=1e-5)


@pytest.mark.parametrize("alpha", [0.0, 1.0, 3.0])
def test_matches_dense_reference_on_random_data(alpha):
    rng = np.random.default_rng(1)
    db = rng.standard_normal((300, 24)).astype(np.float32)
    queries = rng.standard_normal((40, 24)).astype(np.float32)
    np.testing.assert_allclose(
        alpha_query_expansion(queries, db, k=7, alpha=alpha),
        dense_reference(queries, db, 7, alpha),
        atol=1e-5,
    )
    np.testing.assert_allclose(
        database_augmentation(db, k=4, alpha=alpha),
        dense_reference(db, db, 4, alpha, exclude_self=True),
        atol=1e-5,
    )


def test_chunking_does_not_change_the_result():
    rng = np.random.default_rng(2)
    db = rng.standard_normal((97, 8)).astype(np.float32)
    np.testing.assert_allclose(
        database_augmentation(db, k=3, chunk_size=5), database_augmentation(db, k=3), atol=1e-6
    )
    np.testing.assert_allclose(
        alpha_query_expansion(db[:13], db, k=3, chunk_size=2),
        alpha_query_expansion(db[:13], db, k=3),
        atol=1e-6,
    )


def test_k0_returns_normalised_input_unchanged():
    queries = np.array([[3.0, 4.0], [0.0, -2.0]])
    db = np.array([[1.0, 1.0], [2.0, 0.0], [0.0, 0.0]])  # includes a zero row
    np.testing.assert_allclose(
        alpha_query_expansion(queries, db, k=0), [[0.6, 0.8], [0.0, -1.0]], atol=1e-7
    )
    s = np.sqrt(0.5)
    np.testing.assert_allclose(
        database_augmentation(db, k=0), [[s, s], [1.0, 0.0], [0.0, 0.0]], atol=1e-7
    )


def test_inputs_are_not_modified_and_k_is_clamped():
    db = TOY_DB.copy()
    queries = TOY_QUERY * 5
    out = alpha_query_expansion(queries, db, k=10, alpha=0)  # k > N uses the whole database
    np.testing.assert_array_equal(db, TOY_DB)
    np.testing.assert_array_equal(queries, TOY_QUERY * 5)
    # q + e1 + e2 + u = (2.4, 2.4) -> (1, 1) / sqrt(2)
    np.testing.assert_allclose(out, [[np.sqrt(0.5), np.sqrt(0.5)]], atol=1e-6)
    # DBA with k > N - 1: every row sums all rows -> (1.6, 1.8) / norm 2.408319
    np.testing.assert_allclose(
        database_augmentation(db, k=10, alpha=0), [[0.664364, 0.747409]] * 3, atol=1e-5
    )


def test_dba_with_more_duplicates_than_neighbours():
    # Four equal rows a = (0.6, 0.8): a row's k + 1 = 2 results may all be copies other than
    # itself, so one of them is dropped instead. a + 1 * a normalises back to a. Row b = (0, 1):
    # best other row has similarity 0.8: (0, 1) + 0.8 a = (0.48, 1.64) -> (0.280899, 0.959737).
    db = np.array([[0.6, 0.8]] * 4 + [[0.0, 1.0]], dtype=np.float32)
    out = database_augmentation(db, k=1, alpha=1.0)
    np.testing.assert_allclose(out, [[0.6, 0.8]] * 4 + [[0.280899, 0.959737]], atol=1e-5)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"k": -1}, "k must be"), ({"alpha": -1.0}, "alpha must be"), ({"k": 1.5}, "k must be")],
)
def test_invalid_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        alpha_query_expansion(TOY_QUERY, TOY_DB, **kwargs)


def test_dimension_mismatch():
    with pytest.raises(ValueError, match="dimension"):
        alpha_query_expansion(np.ones((1, 3)), TOY_DB)
    with pytest.raises(ValueError, match="N x D"):
        database_augmentation(np.ones(4))


def test_aqe_and_dba_improve_map_on_noisy_clusters():
    # 30 clusters of 8 database images each in 32-D; queries are noisier views of the centres.
    rng = np.random.default_rng(3)
    n_clusters, per_cluster, dim = 30, 8, 32
    centres = unit(rng.standard_normal((n_clusters, dim)))
    labels = np.repeat(np.arange(n_clusters), per_cluster)
    db = unit(centres[labels] + 0.15 * rng.standard_normal((labels.size, dim)))
    queries = unit(centres + 0.25 * rng.standard_normal((n_clusters, dim)))
    gnd = [{"ok": np.flatnonzero(labels == c)} for c in range(n_clusters)]

    def mean_ap(q: np.ndarray, d: np.ndarray) -> float:
        return compute_map(search(d, q)[1], gnd)[0]

    baseline = mean_ap(queries, db)
    expanded = mean_ap(alpha_query_expansion(queries, db, k=3, alpha=3.0), db)
    db_aug = database_augmentation(db, k=3, alpha=3.0)
    both = mean_ap(alpha_query_expansion(queries, db_aug, k=3, alpha=3.0), db_aug)
    # Seed 3 gives 0.773 -> 0.886 (αQE) -> 0.946 (DBA + αQE); other seeds gain 7-11 points too.
    assert 0.6 < baseline < 0.9  # a case with room to improve, not already solved
    assert expanded > baseline + 0.05
    assert both > expanded + 0.03


def test_other_index_types_are_used_for_the_neighbour_search():
    # On 200 points HNSW finds the exact neighbours, and weights use exact similarities anyway.
    rng = np.random.default_rng(4)
    db = rng.standard_normal((200, 16)).astype(np.float32)
    queries = rng.standard_normal((20, 16)).astype(np.float32)
    np.testing.assert_allclose(
        alpha_query_expansion(queries, db, k=3, index_type="hnsw"),
        alpha_query_expansion(queries, db, k=3),
        atol=1e-6,
    )
    with pytest.raises(ValueError, match="Unknown index type"):
        database_augmentation(db, k=3, index_type="bogus")
