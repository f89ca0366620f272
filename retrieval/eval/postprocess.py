"""Descriptor post-processing: alpha query expansion (αQE) and database-side augmentation (DBA).

Both follow Radenović et al. (TPAMI 2018): a vector is replaced by the L2-normalised sum of itself
(weight 1) and its top-k database neighbours, neighbour ``j`` weighted by ``max(s_j, 0) ** alpha``
where ``s_j`` is its cosine similarity; ``alpha = 0`` is plain average query expansion.
Neighbours come from a FAISS index (:mod:`retrieval.index`), searched in chunks, so no dense
N x N similarity matrix is ever built. Weights use the exact similarities even when the index is
approximate (IVF-PQ, HNSW): the index only picks the neighbours.
"""

from __future__ import annotations

import logging

import faiss
import numpy as np

from retrieval.index import build_index

log = logging.getLogger(__name__)

# Bytes of gathered neighbour descriptors (chunk x k x D float32) held at once.
_CHUNK_BYTES = 256 * 2**20


def alpha_query_expansion(
    queries: np.ndarray,
    database: np.ndarray,
    k: int = 2,
    alpha: float = 3.0,
    *,
    index_type: str = "flat",
    chunk_size: int | None = None,
    **index_args: object,
) -> np.ndarray:
    """αQE: each query becomes the weighted sum of itself and its top-k database neighbours."""
    queries, database = _normalised(queries, "queries"), _normalised(database, "database")
    _check_args(k, alpha, queries, database)
    k = min(int(k), database.shape[0])
    if k == 0:
        return queries
    index = build_index(database, index_type, **index_args)
    return _expand(queries, database, index, k, alpha, chunk_size, exclude_self=False)


def database_augmentation(
    database: np.ndarray,
    k: int = 2,
    alpha: float = 3.0,
    *,
    index_type: str = "flat",
    chunk_size: int | None = None,
    **index_args: object,
) -> np.ndarray:
    """DBA: each database row becomes the weighted sum of itself and its top-k other rows."""
    database = _normalised(database, "database")
    _check_args(k, alpha, database, database)
    k = min(int(k), database.shape[0] - 1)
    if k <= 0:
        return database
    index = build_index(database, index_type, **index_args)
    return _expand(database, database, index, k, alpha, chunk_size, exclude_self=True)


def _normalised(x: np.ndarray, name: str) -> np.ndarray:
    """A float32 copy of N x D rows scaled to unit L2 norm (zero rows stay zero)."""
    x = np.array(x, dtype=np.float32, order="C", copy=True)
    if x.ndim != 2:
        raise ValueError(f"{name} must be an N x D array of row descriptors; got shape {x.shape}")
    return _normalise_inplace(x)


def _normalise_inplace(x: np.ndarray) -> np.ndarray:
    """Scale the rows of ``x`` to unit L2 norm in place (zero rows stay zero); return ``x``."""
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    np.divide(x, norms, out=x, where=norms > 0)
    return x


def _check_args(k: int, alpha: float, queries: np.ndarray, database: np.ndarray) -> None:
    """Reject negative k or alpha and mismatched descriptor dimensions."""
    if int(k) != k or k < 0:
        raise ValueError(f"k must be a non-negative integer; got {k}")
    if not alpha >= 0:
        raise ValueError(f"alpha must be >= 0; got {alpha}")
    if queries.shape[1] != database.shape[1]:
        raise ValueError(
            f"queries have dimension {queries.shape[1]} but the database has {database.shape[1]}"
        )


def _expand(
    vectors: np.ndarray,
    database: np.ndarray,
    index: faiss.Index,
    k: int,
    alpha: float,
    chunk_size: int | None,
    exclude_self: bool,
) -> np.ndarray:
    """Weighted neighbour sums of ``vectors``, chunk by chunk; DBA rows skip themselves."""
    n, d = vectors.shape
    if chunk_size is None:
        chunk_size = max(1, _CHUNK_BYTES // (4 * (k + 1) * d))
    out = np.empty_like(vectors)
    for start in range(0, n, chunk_size):
        chunk = vectors[start : start + chunk_size]
        if exclude_self:
            # One extra neighbour, since a database row normally finds itself first.
            _, ranks = index.search(chunk, k + 1)
            ranks = _drop_self(ranks, np.arange(start, start + len(chunk)))
        else:
            _, ranks = index.search(chunk, k)
        out[start : start + len(chunk)] = _weighted_sum(chunk, database, ranks, alpha)
    log.debug("expanded %d vectors with k=%d neighbours, alpha=%g", n, k, alpha)
    return _normalise_inplace(out)


def _drop_self(ranks: np.ndarray, own: np.ndarray) -> np.ndarray:
    """Remove each row's own index from its k + 1 neighbours, or its last one if absent."""
    drop = ranks == own[:, None]
    # With duplicated rows or an approximate index a row may not find itself.
    missing = ~drop.any(axis=1)
    drop[missing, -1] = True
    return ranks[~drop].reshape(ranks.shape[0], ranks.shape[1] - 1)


def _weighted_sum(
    chunk: np.ndarray, database: np.ndarray, ranks: np.ndarray, alpha: float
) -> np.ndarray:
    """Each row plus its neighbours weighted by max(exact similarity, 0) ** alpha."""
    found = ranks >= 0  # FAISS pads with -1 when an approximate index finds fewer than k
    neighbours = database[np.where(found, ranks, 0)]  # chunk x k x D
    similarity = np.einsum("nd,nkd->nk", chunk, neighbours)
    weights = np.maximum(similarity, 0) ** np.float32(alpha)
    weights[~found] = 0
    return chunk + np.einsum("nk,nkd->nd", weights, neighbours)
