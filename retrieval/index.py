"""Nearest-neighbour search over descriptors with FAISS (inner product on L2-normalised rows)."""

from __future__ import annotations

import logging

import faiss
import numpy as np

log = logging.getLogger(__name__)

INDEX_TYPES = ("flat", "ivfpq", "hnsw")
PQ_BITS = 8
PQ_CENTROIDS = 2**PQ_BITS  # each PQ sub-quantiser's codebook, trained by k-means on the database
# faiss-gpu selects at most this many results per query (GPU_MAX_SELECTION_K); a larger k, as a
# full ranking of ROxford's 4,993 images asks, is searched on the CPU instead.
GPU_MAX_K = 2048


def gpu_available() -> bool:
    """Whether this FAISS build has GPU support and sees a GPU."""
    return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


def build_index(
    database: np.ndarray,
    index_type: str = "flat",
    nlist: int | None = None,
    pq_m: int | None = None,
    hnsw_m: int = 32,
    use_gpu: bool | None = None,
) -> faiss.Index:
    """A FAISS inner-product index over N x D database descriptors (on a GPU when FAISS has one)."""
    database = np.ascontiguousarray(database, dtype=np.float32)
    n, d = database.shape
    if index_type == "ivfpq" and not _can_train_ivfpq(n, d, nlist, pq_m):
        index_type = "flat"
    if index_type == "flat":
        index = faiss.IndexFlatIP(d)
    elif index_type == "ivfpq":
        nlist = nlist or max(1, min(int(4 * np.sqrt(n)), n // 39))
        pq_m = pq_m or _largest_divisor(d, limit=64)
        quantizer = faiss.IndexFlatIP(d)
        index = faiss.IndexIVFPQ(quantizer, d, nlist, pq_m, PQ_BITS, faiss.METRIC_INNER_PRODUCT)
        index.train(database)
        index.nprobe = min(nlist, 16)
    elif index_type == "hnsw":
        index = faiss.IndexHNSWFlat(d, hnsw_m, faiss.METRIC_INNER_PRODUCT)
    else:
        raise ValueError(f"Unknown index type {index_type!r}; valid: {', '.join(INDEX_TYPES)}")
    if use_gpu is None:
        use_gpu = gpu_available()
    if use_gpu:
        index = faiss.index_cpu_to_gpu(faiss.StandardGpuResources(), 0, index)
    index.add(database)
    return index


def _can_train_ivfpq(n: int, d: int, nlist: int | None, pq_m: int | None) -> bool:
    """Whether n rows train IVF-PQ; if not, warn that exact search is used (FAISS would abort)."""
    if pq_m is not None and d % pq_m:
        raise ValueError(f"index=ivfpq: pq_m={pq_m} must divide the descriptor dimension {d}")
    minimum = max(PQ_CENTROIDS, nlist or 1)  # k-means needs a point per centroid, in both
    if n >= minimum:
        return True
    log.warning(
        "index=ivfpq needs at least %d database images to train (its PQ codebooks have %d "
        "centroids and its IVF %s lists); this database has %d: using the exact index (flat)",
        minimum,
        PQ_CENTROIDS,
        nlist or "automatic",
        n,
    )
    return False


def _largest_divisor(d: int, limit: int) -> int:
    """The largest number of PQ sub-quantisers <= limit that divides d."""
    return next(m for m in range(min(limit, d), 0, -1) if d % m == 0)


def search(
    database: np.ndarray,
    queries: np.ndarray,
    k: int | None = None,
    index_type: str = "flat",
    use_gpu: bool | None = None,
    **index_args: object,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k (default: all) database rows per query: (scores Q x k, ranks Q x k), best first.

    On a GPU, a k above faiss-gpu's limit (`GPU_MAX_K`) is searched on the CPU: same results.
    """
    k = database.shape[0] if k is None else min(int(k), database.shape[0])
    if use_gpu is None:
        use_gpu = gpu_available()
    if use_gpu and k > GPU_MAX_K:
        log.info("k=%d is above faiss-gpu's %d results per query: search on the CPU", k, GPU_MAX_K)
        use_gpu = False
    index = build_index(database, index_type, use_gpu=use_gpu, **index_args)
    scores, ranks = index.search(np.ascontiguousarray(queries, dtype=np.float32), k)
    return scores, ranks.astype(np.int64)
