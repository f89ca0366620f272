"""Scene geometry: rectangles in space, pinhole cameras and which points a camera sees."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

UP = np.array([0.0, 1.0, 0.0])  # world up; the ground is the plane y = 0


def cross(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cross product of two 3-vectors (np.cross is slow on single vectors)."""
    return np.array(
        [a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]]
    )


@dataclass
class Plane:
    """A rectangle ``origin + s*u + r*v`` (s, r in [0, 1]) with an optional coverage mask.

    ``u`` and ``v`` are orthogonal; the front side faces ``cross(u, v)``. ``alpha`` (bool, rows
    from the top edge ``r = 1`` down) marks where the rectangle is solid; None means everywhere.
    """

    origin: np.ndarray
    u: np.ndarray
    v: np.ndarray
    alpha: np.ndarray | None = None
    normal: np.ndarray = field(init=False, repr=False)  # unit front normal

    def __post_init__(self) -> None:
        n = cross(self.u, self.v)
        self.normal = n / np.linalg.norm(n)

    def corners(self) -> np.ndarray:
        """The four corners (4, 3), counter-clockwise seen from the front."""
        o, u, v = self.origin, self.u, self.v
        return np.stack([o, o + u, o + u + v, o + v])

    def centre(self) -> np.ndarray:
        """Centre of the rectangle."""
        return self.origin + 0.5 * (self.u + self.v)

    def local(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Plane coordinates (s, r) of world points ``x`` (N, 3) lying on the plane."""
        rel = x - self.origin
        return rel @ self.u / (self.u @ self.u), rel @ self.v / (self.v @ self.v)

    def covers(self, s: np.ndarray, r: np.ndarray) -> np.ndarray:
        """Whether plane coordinates fall on the solid part of the rectangle."""
        inside = (s >= 0) & (s <= 1) & (r >= 0) & (r <= 1)
        if self.alpha is None:
            return inside
        h, w = self.alpha.shape
        cols = np.clip((s * w).astype(np.int64), 0, w - 1)
        rows = np.clip(((1 - r) * h).astype(np.int64), 0, h - 1)
        return inside & self.alpha[rows, cols]


@dataclass
class Camera:
    """Pinhole camera: ``x_cam = R (X - centre)``, pixels ``K x_cam`` (x right, y down)."""

    K: np.ndarray
    R: np.ndarray
    centre: np.ndarray
    width: int
    height: int

    @property
    def focal(self) -> float:
        """Focal length in pixels."""
        return float(self.K[0, 0])

    @property
    def ray_matrix(self) -> np.ndarray:
        """Maps homogeneous pixel coordinates to world ray directions with unit camera depth."""
        return self.R.T @ np.linalg.inv(self.K)

    def project(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Pixel coordinates (N, 2) and depths (N,) of world points ``x`` (N, 3)."""
        cam = (x - self.centre) @ self.R.T
        z = cam[:, 2]
        with np.errstate(divide="ignore", invalid="ignore"):
            uv = cam[:, :2] / z[:, None] * self.focal + self.K[:2, 2]
        return uv, z


def look_at(
    centre: np.ndarray,
    target: np.ndarray,
    focal: float,
    width: int,
    height: int,
    roll_deg: float = 0.0,
) -> Camera:
    """Camera at ``centre`` looking at ``target`` with world +y up, rolled by ``roll_deg``."""
    forward = target - centre
    forward = forward / np.linalg.norm(forward)
    right = cross(forward, UP)
    if np.linalg.norm(right) < 1e-6:
        right = np.array([1.0, 0.0, 0.0])
    right = right / np.linalg.norm(right)
    down = cross(forward, right)
    c, s = math.cos(math.radians(roll_deg)), math.sin(math.radians(roll_deg))
    R = np.stack([c * right + s * down, -s * right + c * down, forward])
    K = np.array([[focal, 0.0, width / 2], [0.0, focal, height / 2], [0.0, 0.0, 1.0]])
    return Camera(K, R, np.asarray(centre, dtype=np.float64), int(width), int(height))


def visible_points(
    points: np.ndarray, normals: np.ndarray, camera: Camera, planes: Sequence[Plane]
) -> np.ndarray:
    """Which points ``camera`` sees: inside the image, facing it and not hidden by any plane."""
    uv, z = camera.project(points)
    seen = (z > 1e-6) & (uv[:, 0] >= 0) & (uv[:, 0] < camera.width)
    seen &= (uv[:, 1] >= 0) & (uv[:, 1] < camera.height)
    to_cam = camera.centre - points
    seen &= np.einsum("ij,ij->i", normals, to_cam) > 0
    idx = np.flatnonzero(seen)
    x, d = points[idx], to_cam[idx]
    hidden = np.zeros(idx.size, dtype=bool)
    for plane in planes:
        n = plane.normal
        with np.errstate(divide="ignore", invalid="ignore"):
            lam = ((plane.origin - x) @ n) / (d @ n)
        # Only crossings strictly between the point and the camera hide it (its own plane: 0).
        cand = (lam > 1e-6) & (lam < 1 - 1e-6)
        if not cand.any():
            continue
        s, r = plane.local(x[cand] + lam[cand, None] * d[cand])
        hit = np.zeros_like(cand)
        hit[cand] = plane.covers(s, r)
        hidden |= hit
    seen[idx[hidden]] = False
    return seen
