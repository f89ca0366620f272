"""Training tuples mined each epoch from an SfM database, on arrays: sampling, positives, hard
negatives, the start-up check of the mining values and statistics of the mined tuples.

One epoch (Radenović et al., as in cirtorch): :func:`sample_epoch` draws ``qsize`` query-positive
pairs and a pool of ``poolsize`` images; :func:`choose_positives` picks each query's positive;
after the caller extracted descriptors of the queries and the pool, :func:`mine_hard_negatives`
keeps for each query the ``nnum`` most similar pool images from distinct clusters (3D models)
other than the query's. The result is an :class:`~retrieval.data.epoch_tuples.EpochTuples`, read
by :class:`~retrieval.data.tuple_dataset.TupleDataset`.

Everything here is pure logic on index arrays and descriptors (N x D rows); image extraction and
the Lightning DataModule live in retrieval/lightning/tuple_datamodule.py.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

logger = logging.getLogger(__name__)

POSITIVE_STRATEGIES = ("fixed", "random_topk_inliers", "hardest")
STATISTIC_LOSSES = ("contrastive", "triplet")

# Candidate positives of one split: entry i lists (image index, inliers) rows for image i.
Candidates = Sequence[Any] | Mapping[int, Any]
# Descriptors of any image: a precomputed N x D matrix or a function of a LongTensor of indices.
DescLookup = Tensor | Callable[[Tensor], Tensor]


# --------------------------------------------------------------------------------------------------
# Hard-negative mining
# --------------------------------------------------------------------------------------------------


def _as_long(values: Any, device: torch.device) -> Tensor:
    """Any 1-D array-like of integers as a LongTensor on ``device``."""
    if isinstance(values, Tensor):
        return values.to(device=device, dtype=torch.long).reshape(-1)
    return torch.as_tensor(np.asarray(values, dtype=np.int64), device=device).reshape(-1)


def _first_occurrence(clusters: Tensor) -> Tensor:
    """Mask of the entries whose cluster did not appear earlier in their row (B x w)."""
    order = torch.sort(clusters, dim=1, stable=True).indices
    sorted_cl = clusters.gather(1, order)
    first_sorted = torch.ones_like(clusters, dtype=torch.bool)
    first_sorted[:, 1:] = sorted_cl[:, 1:] != sorted_cl[:, :-1]
    # The stable sort keeps equal clusters in ranking order, so the first of a run is the earliest.
    return torch.empty_like(first_sorted).scatter_(1, order, first_sorted)


def _ranked_top(sims: Tensor, width: int) -> tuple[Tensor, Tensor]:
    """Top-``width`` pool indices and similarities per row, ordered by (similarity desc, index)."""
    if width >= sims.shape[1]:
        vals, idx = torch.sort(sims, dim=1, descending=True, stable=True)
        return idx, vals
    _, idx = torch.topk(sims, width, dim=1)
    idx = torch.sort(idx, dim=1).values
    vals = sims.gather(1, idx)
    vals, order = torch.sort(vals, dim=1, descending=True, stable=True)
    return idx.gather(1, order), vals


def _walk_ranking(
    idx: Tensor, vals: Tensor, pool_clusters: Tensor, q_clusters: Tensor, nnum: int, complete: bool
) -> tuple[Tensor, Tensor]:
    """Diverse-negative walk over ranked candidates (B x w); return the take mask and filled rows.

    Unless the ranking covers the whole pool (``complete``), candidates tied with the last kept
    similarity may not be the ones a full sort would rank first, so only strictly higher ones
    count; rows that cannot fill ``nnum`` from those are widened by the caller.
    """
    cand_cl = pool_clusters[idx]
    valid = _first_occurrence(cand_cl) & (cand_cl != q_clusters.unsqueeze(1))
    if not complete:
        valid &= vals > vals[:, -1:]
    take = valid & (valid.cumsum(dim=1) <= nnum)
    return take, take.sum(dim=1) == nnum


def _check_mining_inputs(
    query_desc: Tensor, pool_desc: Tensor, q_cl: Tensor, p_cl: Tensor, nnum: int, chunk_size: int
) -> None:
    """Raise a clear error on inconsistent shapes or sizes."""
    if query_desc.ndim != 2 or pool_desc.ndim != 2:
        raise ValueError(
            "query_desc and pool_desc must be N x D descriptor rows; got shapes "
            f"{tuple(query_desc.shape)} and {tuple(pool_desc.shape)}."
        )
    if query_desc.shape[1] != pool_desc.shape[1]:
        raise ValueError(
            f"query_desc has D={query_desc.shape[1]} but pool_desc has D={pool_desc.shape[1]}; "
            "extract both with the same network."
        )
    if q_cl.numel() != query_desc.shape[0] or p_cl.numel() != pool_desc.shape[0]:
        raise ValueError(
            f"Need one cluster per descriptor: {query_desc.shape[0]} queries with "
            f"{q_cl.numel()} query_clusters, {pool_desc.shape[0]} pool images with "
            f"{p_cl.numel()} pool_clusters."
        )
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1; got {chunk_size}.")


def _unfillable_error(row: int, q_cluster: int, pool_clusters: Tensor, nnum: int) -> ValueError:
    """Explain why a query cannot get ``nnum`` negatives from distinct other clusters."""
    pool_set = set(pool_clusters.tolist())
    others = len(pool_set - {q_cluster})
    return ValueError(
        f"Hard-negative mining: query {row} (cluster {q_cluster}) needs nnum={nnum} negatives "
        f"from distinct other clusters, but the pool of {pool_clusters.numel()} images covers "
        f"only {others} other clusters ({len(pool_set)} in all). Increase data.poolsize or lower "
        "data.nnum (the split must have at least nnum + 1 clusters)."
    )


@torch.no_grad()
def mine_hard_negatives(
    query_desc: Tensor,
    pool_desc: Tensor,
    query_clusters: Any,
    pool_clusters: Any,
    nnum: int,
    chunk_size: int = 1024,
) -> tuple[Tensor, Tensor]:
    """Diverse hard negatives: per query, the ``nnum`` most similar pool images, one per cluster.

    Similarity is the inner product (descriptors L2-normalised). Walking each query's ranking of
    the pool, most similar first with ties broken by lower pool index, an image is kept when its
    cluster is neither the query's nor one already kept. Returns pool positions (Q x nnum,
    LongTensor) and their similarities (Q x nnum), identical to that full-sort walk; computed on
    ``query_desc``'s device in chunks of queries, from a top-k that widens only where needed.
    """
    device = query_desc.device
    pool_desc = pool_desc.to(device=device, dtype=query_desc.dtype)
    q_cl = _as_long(query_clusters, device)
    p_cl = _as_long(pool_clusters, device)
    _check_mining_inputs(query_desc, pool_desc, q_cl, p_cl, nnum, chunk_size)
    num_q, num_pool = query_desc.shape[0], pool_desc.shape[0]
    neg_idx = torch.empty((num_q, nnum), dtype=torch.long, device=device)
    neg_sims = torch.empty((num_q, nnum), dtype=query_desc.dtype, device=device)
    first_width = min(num_pool, max(8 * nnum, 32))
    widened = 0
    for start in range(0, num_q, chunk_size):
        sims = query_desc[start : start + chunk_size] @ pool_desc.T
        rows = torch.arange(sims.shape[0], device=device)
        width = first_width
        while rows.numel():
            idx, vals = _ranked_top(sims[rows], width)
            complete = width >= num_pool
            take, filled = _walk_ranking(idx, vals, p_cl, q_cl[start + rows], nnum, complete)
            done = start + rows[filled]
            neg_idx[done] = idx[filled][take[filled]].view(-1, nnum)
            neg_sims[done] = vals[filled][take[filled]].view(-1, nnum)
            rows = rows[~filled]
            if rows.numel() and complete:
                row = start + int(rows[0])
                raise _unfillable_error(row, int(q_cl[row]), p_cl, nnum)
            widened += int(rows.numel())
            width = min(num_pool, width * 4)
    logger.debug("Mined %d queries x %d negatives (%d widenings).", num_q, nnum, widened)
    return neg_idx, neg_sims


def _split_arrays(split: Mapping[str, Any]) -> tuple[int, np.ndarray, np.ndarray]:
    """The image count, clusters and query indices of an SfM split, checked for consistency."""
    for key in ("cids", "cluster", "qidxs", "pidxs"):
        if split.get(key) is None:
            hint = (
                " Mining needs the cluster (3D model / label) of every image; for a labelled "
                "image list build the split with sfm_db_from_labels."
                if key == "cluster"
                else ""
            )
            raise ValueError(
                f"SfM split is missing '{key}' (expected keys cids, cluster, qidxs, pidxs as in "
                f"retrieval-SfM-120k).{hint}"
            )
    num_images = len(split["cids"])
    clusters = np.asarray(split["cluster"], dtype=np.int64)
    qidxs = np.asarray(split["qidxs"], dtype=np.int64)
    pidxs = np.asarray(split["pidxs"], dtype=np.int64)
    if clusters.shape != (num_images,):
        raise ValueError(
            f"SfM split 'cluster' has {clusters.size} entries for {num_images} 'cids'; "
            "give one cluster id per image."
        )
    if qidxs.size == 0 or qidxs.shape != pidxs.shape:
        raise ValueError(
            f"SfM split needs as many 'qidxs' as 'pidxs' and at least one pair; got "
            f"{qidxs.size} qidxs and {pidxs.size} pidxs."
        )
    for key, arr in (("qidxs", qidxs), ("pidxs", pidxs)):
        if arr.min() < 0 or arr.max() >= num_images:
            raise ValueError(
                f"SfM split '{key}' holds indices outside [0, {num_images}) (the 'cids' range)."
            )
    if np.any(qidxs == pidxs):
        raise ValueError("SfM split pairs an image with itself: some qidxs equal their pidxs.")
    return num_images, clusters, qidxs


def validate_mining_setup(
    split: Mapping[str, Any],
    nnum: int,
    poolsize: int,
    qsize: int | None = None,
    candidates: Candidates | None = None,
    prefix: str = "data",
    split_name: str = "training",
) -> None:
    """Check at start-up that an SfM split and the mining settings can produce tuples.

    The one check of ``nnum``, ``poolsize`` and ``qsize``: raises ValueError naming the offending
    key (``{prefix}.nnum``, ``{prefix}.poolsize``, ``{prefix}.qsize``, split keys); logs a warning
    where ``qsize`` / ``poolsize`` exceed what the split holds (they are then clipped by
    :func:`sample_epoch`). ``candidates``, when given, must list a positive for every query.
    Messages name the split (``split_name``: training or validation) that is too small.
    """
    num_images, clusters, qidxs = _split_arrays(split)
    if nnum < 1:
        raise ValueError(f"{prefix}.nnum must be >= 1; got {nnum}.")
    if qsize is not None and qsize < 1:
        raise ValueError(f"{prefix}.qsize must be >= 1; got {qsize}.")
    num_clusters = np.unique(clusters).size
    if num_clusters < nnum + 1:
        raise ValueError(
            f"The {split_name} split has {num_clusters} clusters but {prefix}.nnum={nnum} "
            f"negatives from distinct clusters other than the query's need at least {nnum + 1}; "
            f"lower {prefix}.nnum or use more {split_name} data."
        )
    if poolsize < nnum:
        raise ValueError(
            f"{prefix}.poolsize={poolsize} is smaller than {prefix}.nnum={nnum}: the pool cannot "
            f"hold nnum negatives. Raise {prefix}.poolsize (cirtorch uses 20000+)."
        )
    if poolsize > num_images:
        logger.warning(
            "%s.poolsize=%d exceeds the %d %s images; the pool will be all of them.",
            prefix,
            poolsize,
            num_images,
            split_name,
        )
    if qsize is not None and qsize > qidxs.size:
        logger.warning(
            "%s.qsize=%d exceeds the %d query-positive pairs of the %s split; every pair is used "
            "each epoch.",
            prefix,
            qsize,
            qidxs.size,
            split_name,
        )
    if candidates is not None:
        queries = np.unique(qidxs)
        has_none = [_candidate_rows(candidates, int(q))[0].size == 0 for q in queries]
        missing = queries[np.asarray(has_none, dtype=bool)].tolist()
        if missing:
            raise ValueError(
                f"{len(missing)} {split_name} queries have no candidate positives in the sidecar "
                f"(e.g. images {missing[:5]}); regenerate the positives sidecar or use "
                f"{prefix}.positives=fixed."
            )


# --------------------------------------------------------------------------------------------------
# Epoch sampling and positives
# --------------------------------------------------------------------------------------------------


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """A CPU generator seeded from (seed, epoch): every process and a resumed run draw alike."""
    return torch.Generator().manual_seed(int(seed) * 1_000_003 + int(epoch))


def sample_epoch(
    num_pairs: int, qsize: int, num_images: int, poolsize: int, generator: torch.Generator
) -> tuple[Tensor, Tensor]:
    """Draw one epoch's query-positive pair indices and negative-pool image indices.

    As cirtorch, ``qsize`` and ``poolsize`` (>= 1, checked by :func:`validate_mining_setup`) are
    clipped to ``num_pairs`` and ``num_images``; both draws are without replacement and depend
    only on the generator's state.
    """
    if num_pairs < 1 or num_images < 1:
        raise ValueError(
            f"sample_epoch needs at least one pair and one image; got num_pairs={num_pairs}, "
            f"num_images={num_images}."
        )
    pairs = torch.randperm(num_pairs, generator=generator)[: min(qsize, num_pairs)]
    pool = torch.randperm(num_images, generator=generator)[: min(poolsize, num_images)]
    return pairs, pool


def candidates_from_csr(offsets: Any, indices: Any, inliers: Any) -> list[np.ndarray]:
    """Per-image candidate arrays (k x 2: index, inliers) from the sidecar's CSR arrays."""
    offsets = np.asarray(offsets, dtype=np.int64)
    rows = np.stack([np.asarray(indices, np.int64), np.asarray(inliers, np.int64)], axis=1)
    return [rows[offsets[i] : offsets[i + 1]] for i in range(offsets.size - 1)]


def _candidate_rows(candidates: Candidates, q: int) -> tuple[np.ndarray, np.ndarray]:
    """Candidate image indices and inlier counts of image ``q``, without ``q`` itself."""
    try:
        entry = candidates[q]
    except (IndexError, KeyError):
        entry = []
    rows = np.asarray(entry, dtype=np.int64).reshape(-1, 2)
    rows = rows[rows[:, 0] != q]
    return rows[:, 0], rows[:, 1]


def _random_topk_inliers(
    qidxs: np.ndarray, candidates: Candidates, topk: int, generator: torch.Generator | None
) -> Tensor:
    """Per query, a uniform pick among its ``topk`` candidates with the most inliers."""
    if topk < 1:
        raise ValueError(f"topk (data.positive_topk) must be >= 1; got {topk}.")
    draws = torch.rand(qidxs.size, generator=generator, dtype=torch.float64).numpy()
    out = np.empty(qidxs.size, dtype=np.int64)
    for j, q in enumerate(qidxs):
        idx, inl = _candidate_rows(candidates, int(q))
        if idx.size == 0:
            raise ValueError(f"Query image {q} has no candidate positives in the sidecar.")
        # Stable: equal inlier counts keep the sidecar's order.
        best = idx[np.argsort(-inl, kind="stable")[:topk]]
        out[j] = best[min(int(draws[j] * best.size), best.size - 1)]
    return torch.from_numpy(out)


def _lookup(desc_lookup: DescLookup, indices: Tensor) -> Tensor:
    """Descriptors (M x D) of image ``indices`` from a matrix or a callable."""
    if isinstance(desc_lookup, Tensor):
        return desc_lookup[indices.to(desc_lookup.device)]
    return desc_lookup(indices)


def _hardest(
    qidxs: np.ndarray, candidates: Candidates, query_desc: Tensor, desc_lookup: DescLookup
) -> Tensor:
    """Per query, the candidate positive least similar to it (ties: the first in the sidecar)."""
    if query_desc.ndim != 2 or query_desc.shape[0] != qidxs.size:
        raise ValueError(
            f"query_desc must be Q x D with one row per query ({qidxs.size}); got shape "
            f"{tuple(query_desc.shape)}."
        )
    rows = [_candidate_rows(candidates, int(q))[0] for q in qidxs]
    empty = [int(q) for q, r in zip(qidxs, rows, strict=True) if r.size == 0]
    if empty:
        raise ValueError(f"Query images {empty[:5]} have no candidate positives in the sidecar.")
    width = max(r.size for r in rows)
    padded = np.full((qidxs.size, width), -1, dtype=np.int64)
    for j, r in enumerate(rows):
        padded[j, : r.size] = r
    padded_t = torch.from_numpy(padded)
    real = padded_t >= 0
    # One lookup of the distinct candidates, then one similarity per (query, candidate) slot.
    unique, inverse = torch.unique(padded_t[real], return_inverse=True)
    dev = query_desc.device
    cand_desc = _lookup(desc_lookup, unique).to(dev, query_desc.dtype)
    owner = torch.arange(qidxs.size).unsqueeze(1).expand_as(padded_t)[real].to(dev)
    sims = torch.full(padded.shape, float("inf"), dtype=query_desc.dtype, device=dev)
    sims[real.to(dev)] = (query_desc[owner] * cand_desc[inverse.to(dev)]).sum(dim=1)
    # Stable ascending sort: among equal similarities the earliest candidate wins.
    pick = torch.sort(sims, dim=1, stable=True).indices[:, 0].cpu()
    return padded_t.gather(1, pick.unsqueeze(1)).squeeze(1)


def choose_positives(
    strategy: str,
    qidxs: Any,
    pidxs: Any,
    candidates: Candidates | None = None,
    query_desc: Tensor | None = None,
    desc_lookup: DescLookup | None = None,
    topk: int = 5,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Positive image index (LongTensor, one per query) under a strategy.

    ``fixed``: the database pair ``pidxs`` (cirtorch). ``random_topk_inliers``: uniform among the
    ``topk`` candidates sharing the most 3D points, drawn from ``generator``. ``hardest``: the
    candidate least similar to the query, given ``query_desc`` (Q x D, aligned with ``qidxs``) and
    ``desc_lookup`` (an N x D matrix of all images or a callable from image indices to M x D).
    ``candidates[q]`` lists (image index, inliers) rows for image ``q`` (the positives sidecar).
    """
    if strategy not in POSITIVE_STRATEGIES:
        raise ValueError(
            f"Unknown positive strategy {strategy!r} (data.positives); valid: "
            f"{', '.join(POSITIVE_STRATEGIES)}."
        )
    q = _as_long(qidxs, torch.device("cpu")).numpy()
    if strategy == "fixed":
        p = _as_long(pidxs, torch.device("cpu"))
        if p.numel() != q.size:
            raise ValueError(f"Got {q.size} qidxs but {p.numel()} pidxs; pass one pair per query.")
        return p
    if candidates is None:
        raise ValueError(
            f"Positive strategy {strategy!r} needs the candidate positives sidecar "
            "(candidates=...); use data.positives=fixed without it."
        )
    if strategy == "random_topk_inliers":
        return _random_topk_inliers(q, candidates, topk, generator)
    if query_desc is None or desc_lookup is None:
        raise ValueError(
            "Positive strategy 'hardest' needs query_desc (Q x D) and desc_lookup (an N x D "
            "matrix or a callable from image indices to descriptors)."
        )
    return _hardest(q, candidates, query_desc, desc_lookup)


# --------------------------------------------------------------------------------------------------
# Statistics of mined tuples
# --------------------------------------------------------------------------------------------------


@torch.no_grad()
def mining_statistics(
    query_desc: Tensor,
    pos_desc: Tensor,
    neg_desc: Tensor,
    margin: float,
    loss: str = "contrastive",
) -> dict[str, float]:
    """Summary of mined tuples: mean distances and how many tuples still carry a loss.

    Inputs are query Q x D, positive Q x D and negatives Q x K x D. The per-tuple loss follows
    cirtorch: contrastive ``0.5 d_p^2 + sum_k 0.5 max(0, m - d_k)^2``, triplet ``sum_k max(0,
    m + d_p^2 - d_k^2)``. ``active_negative_fraction`` counts tuples with a negative inside the
    margin (the contrastive positive term alone makes almost every loss non-zero).
    """
    if loss not in STATISTIC_LOSSES:
        raise ValueError(f"Unknown loss {loss!r}; valid: {', '.join(STATISTIC_LOSSES)}.")
    if (
        query_desc.ndim != 2
        or pos_desc.shape != query_desc.shape
        or neg_desc.ndim != 3
        or neg_desc.shape[0] != query_desc.shape[0]
        or neg_desc.shape[2] != query_desc.shape[1]
    ):
        raise ValueError(
            "mining_statistics expects query Q x D, positive Q x D and negatives Q x K x D; got "
            f"{tuple(query_desc.shape)}, {tuple(pos_desc.shape)}, {tuple(neg_desc.shape)}."
        )
    sq_pos = (query_desc - pos_desc).pow(2).sum(dim=1).double()
    sq_neg = (query_desc.unsqueeze(1) - neg_desc).pow(2).sum(dim=2).double()
    d_pos, d_neg = sq_pos.sqrt(), sq_neg.sqrt()
    if loss == "contrastive":
        hinge = (margin - d_neg).clamp_min(0)
        per_tuple = 0.5 * sq_pos + 0.5 * hinge.pow(2).sum(dim=1)
    else:
        hinge = (margin + sq_pos.unsqueeze(1) - sq_neg).clamp_min(0)
        per_tuple = hinge.sum(dim=1)
    return {
        "mean_pos_dist": float(d_pos.mean()),
        "mean_neg_dist": float(d_neg.mean()),
        "mean_loss": float(per_tuple.mean()),
        "nonzero_loss_fraction": float((per_tuple > 0).double().mean()),
        "active_negative_fraction": float((hinge > 0).any(dim=1).double().mean()),
    }
