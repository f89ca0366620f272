"""From a COLMAP model to arrays: which images see which 3D points, and per image pair the
shared points and the scale change between the two views."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass
class Observations:
    """The 3D points each registered image of one model sees, one row per observation."""

    names: list[str]  # registered images (COLMAP names)
    image: np.ndarray  # int64: index into names
    point: np.ndarray  # int64: 3D point id
    log_scale: np.ndarray  # float64: log(focal / depth), the point's pixel scale in that image


@dataclass
class PairStatistics:
    """Image pairs (a < b) of one model that share 3D points."""

    first: np.ndarray  # int64
    second: np.ndarray  # int64
    shared: np.ndarray  # int64: 3D points both images see
    scale: np.ndarray  # float64 >= 1: scale change between the views (geometric mean over points)
    points: np.ndarray  # int64 per image: the 3D points it sees


def observations(reconstruction: Any) -> Observations:
    """The observations of the registered images of a pycolmap ``Reconstruction``."""
    names, rows = [], []
    for k, image_id in enumerate(sorted(reconstruction.reg_image_ids())):
        image = reconstruction.images[image_id]
        names.append(image.name)
        ids = np.array([p.point3D_id for p in image.points2D if p.has_point3D()], dtype=np.int64)
        if ids.size == 0:
            continue
        xyz = np.stack([reconstruction.points3D[int(i)].xyz for i in ids])
        pose = image.cam_from_world().matrix()  # 3 x 4: world -> camera
        depth = xyz @ pose[2, :3] + pose[2, 3]
        focal = image.camera.mean_focal_length()
        log_scale = np.log(focal) - np.log(np.maximum(depth, 1e-9))
        rows.append((np.full(ids.size, k, dtype=np.int64), ids, log_scale))
    if not rows:
        empty = np.zeros(0, dtype=np.int64)
        return Observations(names, empty, empty, np.zeros(0))
    image_idx, point, log_scale = (np.concatenate(parts) for parts in zip(*rows, strict=True))
    return Observations(names, image_idx, point, log_scale)


def pair_statistics(obs: Observations) -> PairStatistics:
    """Shared points and scale change of every image pair that shares a point (by point tracks)."""
    n = len(obs.names)
    order = np.argsort(obs.point, kind="stable")
    image, point, log_scale = obs.image[order], obs.point[order], obs.log_scale[order]
    starts = np.flatnonzero(np.r_[True, point[1:] != point[:-1]])
    ends = np.r_[starts[1:], point.size]
    firsts, seconds, diffs = [], [], []
    for lo, hi in zip(starts, ends, strict=True):
        if hi - lo < 2:
            continue
        i, j = np.triu_indices(hi - lo, k=1)
        a, b, d = image[lo:hi][i], image[lo:hi][j], log_scale[lo:hi][i] - log_scale[lo:hi][j]
        swap = a > b
        firsts.append(np.where(swap, b, a))
        seconds.append(np.where(swap, a, b))
        diffs.append(np.where(swap, -d, d))
    points = np.bincount(image, minlength=n).astype(np.int64)
    if not firsts:
        empty = np.zeros(0, dtype=np.int64)
        return PairStatistics(empty, empty, empty, np.zeros(0), points)
    a, b, d = np.concatenate(firsts), np.concatenate(seconds), np.concatenate(diffs)
    keep = a != b  # an image observing one point twice is not a pair
    codes, inverse = np.unique(a[keep] * n + b[keep], return_inverse=True)
    shared = np.bincount(inverse).astype(np.int64)
    mean_log = np.bincount(inverse, weights=d[keep]) / shared
    return PairStatistics(codes // n, codes % n, shared, np.exp(np.abs(mean_log)), points)


def directed_positives(
    stats: PairStatistics, min_overlap: float, max_scale: float, min_shared: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(query, positive, shared) of the pairs passing the rule, in both directions: the positive
    sees at least ``min_overlap`` of the query's points (and ``min_shared``), at most
    ``max_scale`` apart."""
    query = np.concatenate([stats.first, stats.second])
    positive = np.concatenate([stats.second, stats.first])
    shared = np.concatenate([stats.shared, stats.shared])
    scale = np.concatenate([stats.scale, stats.scale])
    overlap = shared / np.maximum(stats.points[query], 1)
    ok = (overlap >= min_overlap) & (shared >= min_shared) & (scale <= max_scale)
    return query[ok], positive[ok], shared[ok]
