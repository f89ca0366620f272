"""Geometry of image pairs (shared points, viewpoint angle, scale change) and the label rules.

The rules are spelled out in the docstring of :mod:`retrieval.data.synthetic`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from retrieval.data.synthetic.geometry import Camera

# Test labels of a query and a database image of the same landmark (see the package docstring).
EASY_MIN_OVERLAP = 0.5
EASY_MAX_ANGLE = 30.0
EASY_MAX_SCALE = 1.5
JUNK_MAX_OVERLAP = 0.1
EASY, HARD, JUNK = 0, 1, 2


@dataclass
class PairGeometry:
    """Geometry of every (a, b) image pair: shared points, viewpoint angle and scale change."""

    shared: np.ndarray  # int (A, B)
    n_visible: np.ndarray  # int (A,): points seen by image a
    angle: np.ndarray  # degrees (A, B)
    scale: np.ndarray  # >= 1 (A, B)

    @property
    def overlap(self) -> np.ndarray:
        """Fraction of image a's points that image b also sees."""
        return self.shared / np.maximum(self.n_visible[:, None], 1)


def pair_geometry(
    vis_a: np.ndarray,
    depth_a: np.ndarray,
    cams_a: Sequence[Camera],
    vis_b: np.ndarray,
    depth_b: np.ndarray,
    cams_b: Sequence[Camera],
    points: np.ndarray,
) -> PairGeometry:
    """Shared points, viewpoint angle and scale change between two sets of views of one scene."""
    va, vb = vis_a.astype(np.float64), vis_b.astype(np.float64)
    shared = va @ vb.T
    safe = np.maximum(shared, 1)
    # Mean depth of the shared points (own visible points when nothing is shared).
    own_a = (va * depth_a).sum(1) / np.maximum(va.sum(1), 1)
    own_b = (vb * depth_b).sum(1) / np.maximum(vb.sum(1), 1)
    da = np.where(shared > 0, (va * depth_a) @ vb.T / safe, own_a[:, None])
    db = np.where(shared > 0, va @ (vb * depth_b).T / safe, own_b[None, :])
    fa = np.array([c.focal for c in cams_a])[:, None]
    fb = np.array([c.focal for c in cams_b])[None, :]
    ratio = (fa / np.maximum(da, 1e-6)) / (fb / np.maximum(db, 1e-6))
    scale = np.maximum(ratio, 1 / ratio)
    both = va[:, None, :] * vb[None, :, :]
    fallback = points.mean(0)
    centroid = np.where(
        shared[..., None] > 0, both @ points / safe[..., None], fallback[None, None, :]
    )
    ca = np.stack([c.centre for c in cams_a])[:, None, :] - centroid
    cb = np.stack([c.centre for c in cams_b])[None, :, :] - centroid
    cos = (ca * cb).sum(-1) / (np.linalg.norm(ca, axis=-1) * np.linalg.norm(cb, axis=-1))
    angle = np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))
    return PairGeometry(shared.astype(np.int64), vis_a.sum(1).astype(np.int64), angle, scale)


def classify_pairs(overlap: np.ndarray, angle: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """Test label of same-landmark pairs: EASY (0), HARD (1) or JUNK (2); see the module doc."""
    easy = (overlap >= EASY_MIN_OVERLAP) & (angle <= EASY_MAX_ANGLE) & (scale <= EASY_MAX_SCALE)
    labels = np.where(easy, EASY, HARD)
    return np.where(overlap < JUNK_MAX_OVERLAP, JUNK, labels)


def positive_mask(geometry: PairGeometry, min_overlap: float, max_scale: float) -> np.ndarray:
    """Training positives (Radenovic et al.): enough of the query's points, bounded scale change."""
    ok = (geometry.overlap >= min_overlap) & (geometry.scale <= max_scale)
    if ok.shape[0] == ok.shape[1]:
        np.fill_diagonal(ok, False)
    return ok
