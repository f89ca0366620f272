"""Labelled images as an SfM-like split (data.kind=labels): the label plays the 3D model, so that
data without 3D models mines tuples alike."""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Any

import numpy as np
import torch


def _label_ids(labels: Sequence[Hashable]) -> np.ndarray:
    """Integer cluster ids: integer labels are kept, others numbered by first appearance."""
    if all(isinstance(lab, int | np.integer) and not isinstance(lab, bool) for lab in labels):
        return np.asarray(labels, dtype=np.int64)
    numbering: dict[Hashable, int] = {}
    return np.asarray([numbering.setdefault(lab, len(numbering)) for lab in labels], np.int64)


def sfm_db_from_labels(
    labels: Sequence[Hashable],
    positives_per_query: int = 1,
    cids: Sequence[str] | None = None,
    max_candidates: int | None = None,
    generator: torch.Generator | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """An SfM-like split from image labels, so that data without 3D models mines alike.

    ``cluster`` is the label. Every image sharing its label with another is a query, paired with
    ``positives_per_query`` other images of the label (fewer if the label is small), drawn from a
    random cyclic order of the label's images: an image's positives follow it in that order.
    ``candidates[i]`` (k x 2 arrays of (image index, inliers = 1)) lists the other images of the
    label in the same order, capped at ``max_candidates``. Single-image labels give no query but
    stay in the split as negatives. Returns {cids, cluster, qidxs, pidxs, bbxs, candidates}.
    """
    if len(labels) == 0:
        raise ValueError("sfm_db_from_labels: the label list is empty.")
    if positives_per_query < 1:
        raise ValueError(f"positives_per_query must be >= 1; got {positives_per_query}.")
    if max_candidates is not None and max_candidates < positives_per_query:
        raise ValueError(
            f"max_candidates={max_candidates} must be >= positives_per_query="
            f"{positives_per_query} (the positives are candidates too)."
        )
    if cids is not None and len(cids) != len(labels):
        raise ValueError(f"Got {len(cids)} cids for {len(labels)} labels; pass one id per image.")
    if generator is None:
        generator = torch.Generator().manual_seed(seed)
    clusters = _label_ids(labels)
    order = np.argsort(clusters, kind="stable")
    bounds = np.flatnonzero(np.diff(clusters[order])) + 1
    candidates: list[np.ndarray] = [np.empty((0, 2), dtype=np.int64)] * clusters.size
    positives: dict[int, np.ndarray] = {}
    for members in np.split(order, bounds):
        n = members.size
        if n < 2:
            continue
        cycle = members[torch.randperm(n, generator=generator).numpy()]
        k = n - 1 if max_candidates is None else min(n - 1, max_candidates)
        # Row j: the k images following cycle[j] in the cyclic order.
        follow = cycle[(np.arange(n)[:, None] + np.arange(1, k + 1)[None, :]) % n]
        for img, others in zip(cycle, follow, strict=True):
            candidates[img] = np.stack([others, np.ones_like(others)], axis=1)
            positives[int(img)] = others[:positives_per_query]
    if not positives:
        raise ValueError(
            "sfm_db_from_labels: no label has two images, so no query-positive pair exists; "
            "each object needs at least two images."
        )
    qidxs = [q for q in sorted(positives) for _ in positives[q]]
    pidxs = [int(p) for q in sorted(positives) for p in positives[q]]
    names = cids if cids is not None else range(len(labels))
    return {
        "cids": [str(c) for c in names],
        "cluster": clusters.tolist(),
        "qidxs": qidxs,
        "pidxs": pidxs,
        "bbxs": [None] * len(qidxs),
        "candidates": candidates,
    }
