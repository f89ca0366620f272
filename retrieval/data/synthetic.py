"""Procedural landmark world written in the real dataset formats, so nothing has to be downloaded.

Each landmark is a small building made of textured planes (a facade, a street corner, a box or a
tower) whose textures are composed from a motif bank and palette shared by the whole world, so
different landmarks look alike locally (hard negatives) while each keeps a distinctive
arrangement. Photographs are rendered by ray-casting the planes through pinhole cameras (PIL
perspective warps for the textures, a per-pixel inverse-depth buffer for visibility) over a
sky/ground background with distant buildings, clouds, occluders and photometric changes.

3D points are sampled on the landmark's surfaces; a camera sees a point when it projects inside
the image, faces the camera and no nearer surface (occluders included) cuts the segment between
them. Two images share a point like SfM images share an inlier, which defines:

* training pairs (Radenovic et al.): a positive shares at least 20% of the query's points and the
  scale change (ratio of focal / mean depth over the shared points) is at most 1.5;
* the test labels of a query q and a database image i of the same landmark, from
  ``overlap`` = shared points / points seen by q, ``angle`` = angle between the two camera centres
  seen from the centroid of the shared points (degrees) and ``scale`` (>= 1, as above):

  - easy: overlap >= 0.5 and angle <= 30 and scale <= 1.5;
  - junk: overlap < 0.1 (the same building, but too little of the query's part in view);
  - hard: every other image of the landmark (partial views, strong viewpoint or scale change).

  Images of other landmarks are negatives. Every query has at least one easy and one hard
  positive.

Layout under the world root (a data root like the real one)::

    world.json                                   parameters, version, hash, statistics
    train/synthetic-sfm/synthetic-sfm.pkl        {'train', 'val'} splits as retrieval-SfM-120k
    train/synthetic-sfm/synthetic-sfm-whiten.pkl matching pairs for learned whitening
    train/synthetic-sfm/synthetic-sfm-positives.npz   per training image: (candidate, shared points)
    train/synthetic-sfm/synthetic-sfm-geometry.json   points seen, shared points, angle, scale
    train/synthetic-sfm/ims/<cid2filename(cid)>  JPEG images (no extension, like the real cids)
    train/synthetic-sfm/masks/<cid2filename(cid)>.png  landmark pixel masks
    train/synthetic-labels/train.csv (+ train/a/b/c/<id>.jpg)   GLDv2-style class labels
    test/synthetic-rox/gnd_synthetic-rox.pkl, jpg/<name>.jpg, masks/<name>.png, geometry.json
    test/synthetic-ukbench/full/ukbench%05d.jpg  groups of 4 views of one test landmark
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import multiprocessing
import os
import shutil
import time
import uuid
from collections.abc import Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field, fields
from functools import lru_cache
from io import BytesIO
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from retrieval.data import formats

log = logging.getLogger(__name__)

VERSION = 1
SFM_NAME = "synthetic-sfm"
TEST_NAME = "synthetic-rox"
LABELS_NAME = "synthetic-labels"
UKBENCH_NAME = "synthetic-ukbench"

# Test labels (see the module docstring).
EASY_MIN_OVERLAP = 0.5
EASY_MAX_ANGLE = 30.0
EASY_MAX_SCALE = 1.5
JUNK_MAX_OVERLAP = 0.1
EASY, HARD, JUNK = 0, 1, 2

_SPLIT_CODES = {"train": 1, "val": 2, "test": 3}
_UP = np.array([0.0, 1.0, 0.0])
_TEX_PPU = 32.0  # texture pixels per world unit on landmark walls


@dataclass
class SyntheticConfig:
    """Parameters of the synthetic world (all but ``workers`` define its identity)."""

    seed: int = 0
    n_train_landmarks: int = 80
    n_val_landmarks: int = 10
    n_test_landmarks: int = 20
    views_per_landmark: int = 20
    queries_per_landmark: int = 3
    max_side: int = 256
    points_per_landmark: int = 1200
    positive_min_overlap: float = 0.2
    positive_max_scale: float = 1.5
    workers: int = 0  # processes; 0: one per available core. Does not change the output.

    def __post_init__(self) -> None:
        minimum = {
            "n_train_landmarks": 1,
            "n_val_landmarks": 0,
            "n_test_landmarks": 1,
            "views_per_landmark": 2,
            "queries_per_landmark": 1,
            "max_side": 32,
            "points_per_landmark": 50,
            "workers": 0,
        }
        for name, low in minimum.items():
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ValueError(
                    f"synthetic world: {name} must be an integer >= {low}, got {value!r}"
                )
        if not 0 < self.positive_min_overlap <= 1 or self.positive_max_scale < 1:
            raise ValueError(
                "synthetic world: positive_min_overlap must be in (0, 1] and "
                "positive_max_scale >= 1"
            )

    def params(self) -> dict[str, Any]:
        """The parameters that define the world's content."""
        return {k: v for k, v in asdict(self).items() if k != "workers"}

    def key(self) -> str:
        """Short hash of the parameters and generator version."""
        text = json.dumps({"version": VERSION, **self.params()}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:12]


# --------------------------------------------------------------------------------------------------
# Geometry: planes, cameras, visibility
# --------------------------------------------------------------------------------------------------


def _cross(a: np.ndarray, b: np.ndarray) -> np.ndarray:
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
        n = _cross(self.u, self.v)
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
    right = _cross(forward, _UP)
    if np.linalg.norm(right) < 1e-6:
        right = np.array([1.0, 0.0, 0.0])
    right = right / np.linalg.norm(right)
    down = _cross(forward, right)
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


# --------------------------------------------------------------------------------------------------
# Motif bank and textures
# --------------------------------------------------------------------------------------------------

Colour = tuple[int, int, int]

WALLS: list[Colour] = [
    (214, 196, 160), (176, 92, 70), (232, 222, 200), (160, 160, 155), (240, 238, 232),
    (205, 160, 90), (190, 110, 80), (120, 130, 140), (120, 70, 55), (170, 185, 160),
    (225, 190, 180), (100, 95, 90),
]  # fmt: skip
TRIMS: list[Colour] = [
    (245, 243, 235), (60, 55, 50), (140, 120, 95), (200, 200, 195), (95, 60, 40),
    (180, 170, 150), (40, 60, 80),
]  # fmt: skip
GLASS: list[Colour] = [(40, 55, 75), (25, 30, 35), (70, 90, 110), (55, 70, 60), (90, 110, 130)]
ACCENTS: list[Colour] = [
    (170, 30, 35), (30, 70, 140), (40, 110, 60), (220, 170, 40), (120, 40, 110), (20, 20, 20),
    (230, 120, 30),
]  # fmt: skip
SKIES: list[tuple[Colour, Colour]] = [
    ((70, 130, 200), (185, 212, 235)), ((150, 175, 200), (215, 220, 225)),
    ((150, 155, 160), (205, 205, 205)), ((90, 120, 180), (240, 195, 150)),
    ((55, 70, 120), (215, 160, 130)),
]  # fmt: skip


def _pick(rng: np.random.Generator, items: Sequence[Any]) -> Any:
    return items[int(rng.integers(len(items)))]


def _shade(colour: Colour, factor: float) -> Colour:
    return tuple(int(np.clip(c * factor, 0, 255)) for c in colour)  # type: ignore[return-value]


def _glyphs(
    draw: ImageDraw.ImageDraw,
    box: Sequence[float],
    n: int,
    colour: Colour,
    rng: np.random.Generator,
    width: int,
) -> None:
    """Draw ``n`` glyph-like characters (random strokes) into ``box``."""
    x0, y0, x1, y1 = box
    cw = (x1 - x0) / n
    for k in range(n):
        a, b = x0 + (k + 0.15) * cw, x0 + (k + 0.85) * cw
        for _ in range(int(rng.integers(1, 4))):
            pts = [(rng.uniform(a, b), rng.uniform(y0, y1)) for _ in range(int(rng.integers(2, 4)))]
            draw.line(pts, fill=colour, width=width)


def _window_tile(rng: np.random.Generator) -> Image.Image:
    """A window motif: framed glass with mullions, arched, round, shuttered or with a balcony."""
    w, h = 48, int(rng.integers(60, 90))
    im = Image.new("RGBA", (w, h), (0, 0, 0, 0))
    d = ImageDraw.Draw(im)
    frame, glass = _pick(rng, TRIMS), _pick(rng, GLASS)
    shape = _pick(rng, ["rect", "rect", "arch", "round", "shutter", "balcony", "pediment"])
    if shape == "round":
        d.ellipse([2, (h - w) / 2 + 2, w - 3, (h + w) / 2 - 3], fill=frame)
        d.ellipse([8, (h - w) / 2 + 8, w - 9, (h + w) / 2 - 9], fill=glass)
        d.line([(w / 2, (h - w) / 2 + 8), (w / 2, (h + w) / 2 - 9)], fill=frame, width=3)
        d.line([(8, h / 2), (w - 9, h / 2)], fill=frame, width=3)
        return im
    top = 14 if shape == "pediment" else 2
    x0, x1 = (12, w - 13) if shape == "shutter" else (4, w - 5)
    d.rectangle([x0 - 3, top, x1 + 3, h - 4], fill=frame)
    gy0 = top + 5
    if shape == "arch":
        r = (x1 - x0) / 2
        d.pieslice([x0, gy0, x1, gy0 + 2 * r], 180, 360, fill=glass)
        d.rectangle([x0, gy0 + r, x1, h - 10], fill=glass)
    else:
        d.rectangle([x0, gy0, x1, h - 10], fill=glass)
    # A lighter streak reads as a reflection on the glass.
    d.polygon(
        [(x0, h - 22), (x0 + 10, gy0 + 6), (x0 + 16, gy0 + 6), (x0 + 6, h - 22)],
        fill=_shade(glass, 1.6),
    )
    for k in range(1, int(rng.integers(2, 4))):
        x = x0 + k * (x1 - x0) / int(rng.integers(2, 4))
        d.line([(x, gy0), (x, h - 10)], fill=frame, width=2)
    for k in range(1, int(rng.integers(1, 4))):
        y = gy0 + k * (h - 10 - gy0) / 3
        d.line([(x0, y), (x1, y)], fill=frame, width=2)
    d.rectangle([0, h - 8, w - 1, h - 3], fill=_shade(frame, 0.85))
    if shape == "pediment":
        d.polygon([(0, 13), (w / 2, 0), (w - 1, 13)], fill=_shade(frame, 0.9))
    elif shape == "shutter":
        colour = _pick(rng, ACCENTS)
        for sx in (0, x1 + 4):
            d.rectangle([sx, top, sx + 8, h - 10], fill=colour)
            for y in range(top + 3, h - 10, 4):
                d.line([(sx, y), (sx + 8, y)], fill=_shade(colour, 0.7))
    elif shape == "balcony":
        rail = _pick(rng, [(30, 30, 30), (80, 60, 40), (200, 200, 200)])
        y0 = h - 28
        d.rectangle([0, y0, w - 1, y0 + 3], fill=rail)
        for x in range(2, w, 5):
            d.line([(x, y0), (x, h - 6)], fill=rail, width=2)
    return im


def _door_tile(rng: np.random.Generator) -> Image.Image:
    """A panelled door, square or arched, in a frame."""
    w, h = 56, 96
    im = Image.new("RGBA", (w, h), (0, 0, 0, 0))
    d = ImageDraw.Draw(im)
    frame, leaf = _pick(rng, TRIMS), _pick(rng, ACCENTS + GLASS)
    if rng.random() < 0.5:
        d.pieslice([0, 0, w - 1, w - 1], 180, 360, fill=frame)
        d.pieslice([6, 6, w - 7, w - 7], 180, 360, fill=_shade(leaf, 0.7))
        d.rectangle([0, w / 2, w - 1, h - 1], fill=frame)
        top = w / 2
    else:
        d.rectangle([0, 0, w - 1, h - 1], fill=frame)
        top = 6
    d.rectangle([6, top, w - 7, h - 1], fill=leaf)
    for col in (10, w / 2 + 3):
        for k in range(int(rng.integers(2, 4))):
            y = top + 6 + k * 22
            d.rectangle([col, y, col + w / 2 - 16, y + 16], outline=_shade(leaf, 0.6), width=2)
    return im


def _sign_tile(rng: np.random.Generator) -> Image.Image:
    """A sign board with glyph-like lettering."""
    w, h = 128, 32
    im = Image.new("RGBA", (w, h), (0, 0, 0, 0))
    d = ImageDraw.Draw(im)
    board = _pick(rng, ACCENTS + TRIMS)
    ink = (245, 240, 225) if sum(board) < 360 else (25, 25, 30)
    d.rectangle([0, 0, w - 1, h - 1], fill=board, outline=_shade(board, 0.6), width=2)
    _glyphs(d, (6, 6, w - 6, h - 6), int(rng.integers(4, 9)), ink, rng, 3)
    return im


def _emblem_tile(rng: np.random.Generator) -> Image.Image:
    """A round emblem: clock face, rose window or star."""
    s = 64
    im = Image.new("RGBA", (s, s), (0, 0, 0, 0))
    d = ImageDraw.Draw(im)
    ring, face = _pick(rng, TRIMS), _pick(rng, [*GLASS, (240, 235, 220), *ACCENTS])
    d.ellipse([0, 0, s - 1, s - 1], fill=ring)
    d.ellipse([6, 6, s - 7, s - 7], fill=face)
    kind = _pick(rng, ["clock", "rose", "star"])
    c = s / 2
    if kind == "star":
        k = int(rng.integers(5, 9))
        pts = [
            (c + (24 if i % 2 == 0 else 11) * math.cos(math.pi * i / k),
             c + (24 if i % 2 == 0 else 11) * math.sin(math.pi * i / k))
            for i in range(2 * k)
        ]  # fmt: skip
        d.polygon(pts, fill=ring)
    else:
        k = 12 if kind == "clock" else int(rng.integers(6, 11))
        for i in range(k):
            a = 2 * math.pi * i / k
            inner = 20 if kind == "clock" else 6
            d.line(
                [
                    (c + inner * math.cos(a), c + inner * math.sin(a)),
                    (c + 25 * math.cos(a), c + 25 * math.sin(a)),
                ],
                fill=ring,
                width=3,
            )
        if kind == "clock":
            a1, a2 = rng.uniform(0, 2 * math.pi, 2)
            d.line([(c, c), (c + 16 * math.cos(a1), c + 16 * math.sin(a1))], fill=ring, width=4)
            d.line([(c, c), (c + 10 * math.cos(a2), c + 10 * math.sin(a2))], fill=ring, width=4)
    return im


def _ornament_tile(rng: np.random.Generator) -> Image.Image:
    """A small decorative panel: diamond, cross, checker, stripes or a blob cluster."""
    s = 48
    im = Image.new("RGBA", (s, s), (0, 0, 0, 0))
    d = ImageDraw.Draw(im)
    a, b = _pick(rng, ACCENTS + TRIMS), _pick(rng, TRIMS + WALLS)
    kind = _pick(rng, ["diamond", "cross", "checker", "stripes", "blobs"])
    if kind == "diamond":
        d.polygon([(s / 2, 0), (s - 1, s / 2), (s / 2, s - 1), (0, s / 2)], fill=a)
        d.polygon([(s / 2, 12), (s - 13, s / 2), (s / 2, s - 13), (12, s / 2)], fill=b)
    elif kind == "cross":
        d.rectangle([s / 2 - 7, 0, s / 2 + 7, s - 1], fill=a)
        d.rectangle([0, s / 2 - 7, s - 1, s / 2 + 7], fill=a)
    elif kind == "checker":
        n = int(rng.integers(3, 6))
        for i in range(n):
            for j in range(n):
                colour = a if (i + j) % 2 else b
                d.rectangle([i * s / n, j * s / n, (i + 1) * s / n, (j + 1) * s / n], fill=colour)
    elif kind == "stripes":
        n = int(rng.integers(3, 7))
        for i in range(n):
            d.rectangle([0, i * s / n, s - 1, (i + 0.5) * s / n], fill=a)
    else:
        for _ in range(int(rng.integers(4, 9))):
            x, y, r = rng.uniform(8, s - 8), rng.uniform(8, s - 8), rng.uniform(5, 12)
            d.ellipse([x - r, y - r, x + r, y + r], fill=_pick(rng, [a, b]))
    return im


@dataclass
class MotifBank:
    """Motif tiles and colours shared by every landmark of a world."""

    windows: list[Image.Image]
    doors: list[Image.Image]
    signs: list[Image.Image]
    emblems: list[Image.Image]
    ornaments: list[Image.Image]


@lru_cache(maxsize=4)
def motif_bank(seed: int) -> MotifBank:
    """The world's motif bank (deterministic in ``seed``)."""
    rng = np.random.default_rng([seed, 0xBA4C])
    return MotifBank(
        windows=[_window_tile(rng) for _ in range(28)],
        doors=[_door_tile(rng) for _ in range(8)],
        signs=[_sign_tile(rng) for _ in range(8)],
        emblems=[_emblem_tile(rng) for _ in range(6)],
        ornaments=[_ornament_tile(rng) for _ in range(10)],
    )


@dataclass
class Style:
    """How one landmark composes its facades from the bank."""

    wall: Colour
    trim: Colour
    windows: list[Image.Image]
    door: Image.Image
    pattern: str
    floor_h: float
    ground_h: float
    bay_w: float
    win_w: float
    win_h: float
    cornice: bool
    pilasters: bool
    brick: bool
    rusticated: bool
    top: str
    sign: Image.Image | None
    emblem: Image.Image | None
    ornament: Image.Image | None
    lettering_seed: int


def _sample_style(rng: np.random.Generator, bank: MotifBank) -> Style:
    picks = rng.choice(len(bank.windows), size=3, replace=False)
    return Style(
        wall=_pick(rng, WALLS),
        trim=_pick(rng, TRIMS),
        windows=[bank.windows[int(i)] for i in picks],
        door=_pick(rng, bank.doors),
        pattern=_pick(rng, ["uniform", "alternate", "floors", "mirror", "centre"]),
        floor_h=float(rng.uniform(2.6, 3.8)),
        ground_h=float(rng.uniform(3.0, 4.6)),
        bay_w=float(rng.uniform(1.7, 3.2)),
        win_w=float(rng.uniform(0.38, 0.62)),
        win_h=float(rng.uniform(0.5, 0.75)),
        cornice=bool(rng.random() < 0.65),
        pilasters=bool(rng.random() < 0.4),
        brick=bool(rng.random() < 0.35),
        rusticated=bool(rng.random() < 0.4),
        top=_pick(rng, ["flat", "flat", "gable", "stepped", "crenel", "dome"]),
        sign=_pick(rng, bank.signs) if rng.random() < 0.5 else None,
        emblem=_pick(rng, bank.emblems) if rng.random() < 0.55 else None,
        ornament=_pick(rng, bank.ornaments) if rng.random() < 0.5 else None,
        lettering_seed=int(rng.integers(2**31)),
    )


def _window_for(style: Style, floor: int, bay: int, n_bays: int) -> Image.Image:
    w = style.windows
    if style.pattern == "alternate":
        return w[(floor + bay) % 2]
    if style.pattern == "floors":
        return w[floor % len(w)]
    if style.pattern == "mirror":
        return w[min(bay, n_bays - 1 - bay) % len(w)]
    if style.pattern == "centre":
        return w[1] if bay == n_bays // 2 else w[0]
    return w[0]


def _noise_field(rng: np.random.Generator, w: int, h: int, cells: int) -> np.ndarray:
    """Smooth random field in [0, 1] of size (h, w)."""
    small = (rng.random((cells, cells)) * 255).astype(np.uint8)
    field_ = Image.fromarray(small).resize((w, h), Image.Resampling.BICUBIC)
    return np.asarray(field_, dtype=np.float32) / 255.0


def _top_height(top: str, width: float) -> float:
    return {"flat": 0.0, "gable": 0.3, "stepped": 0.3, "crenel": 0.07, "dome": 0.25}[top] * width


def _silhouette(
    draw: ImageDraw.ImageDraw, top: str, w: int, wall_px: int, top_px: int, rng: np.random.Generator
) -> None:
    """Fill the solid part of the wall plus its top shape (gable, steps, battlements, dome)."""
    y_wall = top_px  # texture row of the wall's top edge
    draw.rectangle([0, y_wall, w - 1, y_wall + wall_px - 1], fill=255)
    if top == "gable":
        draw.polygon([(0, y_wall), (w / 2, 0), (w - 1, y_wall)], fill=255)
    elif top == "stepped":
        n = int(rng.integers(3, 6))
        for k in range(n):
            inset = k * w / (2 * n + 1)
            draw.rectangle([inset, y_wall - (k + 1) * top_px / n, w - 1 - inset, y_wall], fill=255)
    elif top == "crenel":
        n = max(3, int(w / (top_px * 2.2)))
        for k in range(0, 2 * n + 1, 2):
            draw.rectangle([k * w / (2 * n + 1), 0, (k + 1) * w / (2 * n + 1), y_wall], fill=255)
    elif top == "dome":
        draw.pieslice([w * 0.28, 0, w * 0.72, 2 * top_px], 180, 360, fill=255)


def _paste(img: Image.Image, tile: Image.Image, box: Sequence[float]) -> None:
    x0, y0, x1, y1 = (int(round(v)) for v in box)
    if x1 - x0 < 2 or y1 - y0 < 2:
        return
    scaled = tile.resize((x1 - x0, y1 - y0), Image.Resampling.BILINEAR)
    img.alpha_composite(scaled, (x0, y0))


def facade_texture(
    rng: np.random.Generator,
    style: Style,
    width: float,
    height: float,
    top: str,
    feature: bool,
    ppu: float = _TEX_PPU,
) -> Image.Image:
    """RGBA texture of a wall ``width`` x ``height`` units plus its top shape (alpha = solid)."""
    top_u = _top_height(top, width)
    w, h_wall, h_top = round(width * ppu), round(height * ppu), round(top_u * ppu)
    h = h_wall + h_top
    y_of = lambda units: h - units * ppu  # noqa: E731 -- texture row of a height in units
    img = Image.new("RGBA", (w, h), (*style.wall, 255))
    d = ImageDraw.Draw(img)
    if style.brick:
        joint = _shade(style.wall, 0.82)
        for y in np.arange(0.0, height + top_u, 0.28):
            d.line([(0, y_of(y)), (w, y_of(y))], fill=joint, width=1)
    if style.rusticated:
        d.rectangle([0, y_of(style.ground_h), w, h], fill=_shade(style.wall, 0.8))
        for y in np.arange(0.0, style.ground_h, 0.6):
            d.line([(0, y_of(y)), (w, y_of(y))], fill=_shade(style.wall, 0.62), width=2)
    n_bays = max(1, int((width - 0.8) / style.bay_w))
    margin = (width - n_bays * style.bay_w) / 2
    floors = [0.0, style.ground_h]
    while floors[-1] + style.floor_h <= height - 0.5:
        floors.append(floors[-1] + style.floor_h)
    if style.pilasters:
        for b in range(n_bays + 1):
            x = (margin + b * style.bay_w) * ppu
            d.rectangle(
                [x - 0.14 * ppu, y_of(height), x + 0.14 * ppu, y_of(style.ground_h)],
                fill=_shade(style.trim, 0.95),
            )
    if style.cornice:
        for y in floors[1:]:
            d.rectangle([0, y_of(y + 0.12), w, y_of(y - 0.12)], fill=style.trim)
    d.rectangle([0, y_of(height), w, y_of(height - 0.35)], fill=_shade(style.trim, 0.9))
    centre_bay = n_bays // 2
    skip_centre_top = feature and style.emblem is not None and top in ("flat", "crenel")
    for f, (y0, y1) in enumerate(zip(floors[:-1], floors[1:], strict=False)):
        for b in range(n_bays):
            cx = (margin + (b + 0.5) * style.bay_w) * ppu
            if f == 0:
                tile = style.door if b == centre_bay else _window_for(style, 0, b, n_bays)
                tw, th = (0.5, 0.78) if b == centre_bay else (style.win_w * 1.3, 0.62)
                box = (
                    cx - tw * style.bay_w * ppu / 2,
                    y_of(th * (y1 - y0)),
                    cx + tw * style.bay_w * ppu / 2,
                    y_of(0.0),
                )
                _paste(img, tile, box)
                continue
            if skip_centre_top and f == len(floors) - 2 and b == centre_bay:
                continue
            tile = _window_for(style, f, b, n_bays)
            half_w = style.win_w * style.bay_w * ppu / 2
            mid = y_of(y0 + 0.48 * (y1 - y0))
            half_h = style.win_h * (y1 - y0) * ppu / 2
            _paste(img, tile, (cx - half_w, mid - half_h, cx + half_w, mid + half_h))
    if style.sign is not None and feature:
        sw = min(width * 0.6, 7.0)
        box = (
            w / 2 - sw * ppu / 2,
            y_of(style.ground_h - 0.1),
            w / 2 + sw * ppu / 2,
            y_of(style.ground_h - 0.1) + 0.55 * ppu,
        )
        _paste(img, style.sign, box)
        # Lettering unique to this landmark, over the shared board style.
        lr = np.random.default_rng(style.lettering_seed)
        _glyphs(
            d,
            (box[0] + 0.2 * ppu, box[1] + 0.12 * ppu, box[2] - 0.2 * ppu, box[3] - 0.12 * ppu),
            int(lr.integers(4, 9)),
            (250, 245, 230),
            lr,
            3,
        )
    if style.ornament is not None and len(floors) > 2:
        y = floors[1] + 0.2
        for b in range(n_bays):
            cx = (margin + b * style.bay_w) * ppu
            _paste(img, style.ornament, (cx - 0.3 * ppu, y_of(y + 0.6), cx + 0.3 * ppu, y_of(y)))
    if style.emblem is not None and feature:
        size = min(2.6, 0.45 * width, max(top_u * 0.7, 1.6))
        if top in ("gable", "stepped", "dome"):
            cy = y_of(height + 0.4 * top_u)
        else:
            cy = y_of(floors[-2] + 0.5 * (floors[-1] - floors[-2]))
        half = size * ppu / 2
        _paste(img, style.emblem, (w / 2 - half, cy - half, w / 2 + half, cy + half))
    # Weathering: smooth brightness variation, darker near the ground.
    arr = np.asarray(img, dtype=np.float32)
    dirt = 0.88 + 0.2 * _noise_field(rng, w, h, 6)
    dirt *= np.clip(0.8 + 0.2 * (h - np.arange(h, dtype=np.float32)) / (1.5 * ppu), 0.8, 1.0)[
        ::-1, None
    ]
    rgb = np.clip(arr[..., :3] * dirt[..., None], 0, 255).astype(np.uint8)
    alpha_img = Image.new("L", (w, h), 0)
    _silhouette(ImageDraw.Draw(alpha_img), top, w, h_wall, h_top, rng)
    out = Image.fromarray(rgb, "RGB").convert("RGBA")
    out.putalpha(alpha_img)
    return out


def arcade_texture(
    rng: np.random.Generator, style: Style, width: float, height: float, ppu: float = _TEX_PPU
) -> Image.Image:
    """RGBA porch front: columns and arches with see-through openings."""
    w, h = round(width * ppu), round(height * ppu)
    colour = _pick(rng, [style.trim, _shade(style.wall, 1.1), _shade(style.wall, 0.85)])
    img = Image.new("RGBA", (w, h), (*colour, 255))
    d = ImageDraw.Draw(img)
    band = 0.22 * h
    d.rectangle([0, 0, w, band], fill=_shade(colour, 0.85))
    if style.ornament is not None:
        n = max(1, int(w / band))
        for k in range(n):
            _paste(img, style.ornament, (k * w / n + 2, 3, (k + 1) * w / n - 2, band - 3))
    alpha_img = Image.new("L", (w, h), 255)
    a = ImageDraw.Draw(alpha_img)
    n = max(2, int(width / rng.uniform(1.8, 3.0)))
    span = w / n
    for k in range(n):
        x0, x1 = k * span + 0.16 * span, (k + 1) * span - 0.16 * span
        r = (x1 - x0) / 2
        a.pieslice([x0, band + 6, x1, band + 6 + 2 * r], 180, 360, fill=0)
        a.rectangle([x0, band + 6 + r, x1, h], fill=0)
        d.arc(
            [x0 - 3, band + 3, x1 + 3, band + 9 + 2 * r],
            180,
            360,
            fill=_shade(colour, 0.7),
            width=3,
        )
    img.putalpha(alpha_img)
    return img


def roof_texture(rng: np.random.Generator, width: float, depth: float) -> Image.Image:
    """RGBA flat roof (gravel grey or tar)."""
    w, h = max(4, round(width * 8)), max(4, round(depth * 8))
    base = np.array(_pick(rng, [(110, 105, 100), (70, 70, 75), (130, 120, 110)]), np.float32)
    rgb = base * (0.85 + 0.3 * _noise_field(rng, w, h, 8))[..., None]
    return Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8), "RGB").convert("RGBA")


def background_building_texture(
    rng: np.random.Generator, bank: MotifBank, width: float, height: float
) -> Image.Image:
    """RGBA low-detail building for the surroundings, from the shared bank."""
    ppu = 8.0
    w, h = round(width * ppu), round(height * ppu)
    wall = _shade(_pick(rng, WALLS), rng.uniform(0.8, 1.0))
    img = Image.new("RGBA", (w, h), (*wall, 255))
    tile = _pick(rng, bank.windows)
    bay, floor = rng.uniform(1.8, 3.0), rng.uniform(2.8, 3.6)
    for y in np.arange(0.6, height - floor * 0.8, floor):
        for x in np.arange(0.5, width - bay * 0.8, bay):
            _paste(
                img,
                tile,
                (
                    (x + 0.25 * bay) * ppu,
                    h - (y + 0.8 * floor) * ppu,
                    (x + 0.75 * bay) * ppu,
                    h - (y + 0.15 * floor) * ppu,
                ),
            )
    return img


def occluder_texture(
    rng: np.random.Generator, kind: str, width: float, height: float
) -> Image.Image:
    """RGBA billboard of a tree, person, lamp post, car or sign."""
    ppu = 24.0
    w, h = max(8, round(width * ppu)), max(8, round(height * ppu))
    img = Image.new("RGBA", (w, h), (0, 0, 0, 0))
    d = ImageDraw.Draw(img)
    if kind == "tree":
        d.rectangle([w * 0.45, h * 0.5, w * 0.55, h], fill=(90, 65, 45, 255))
        for _ in range(int(rng.integers(6, 12))):
            cx, cy = rng.uniform(0.2, 0.8) * w, rng.uniform(0.15, 0.55) * h
            r = rng.uniform(0.15, 0.3) * w
            green = (
                int(rng.integers(40, 90)),
                int(rng.integers(90, 150)),
                int(rng.integers(30, 70)),
            )
            d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=(*green, 255))
    elif kind == "person":
        skin = _pick(rng, [(230, 190, 160), (180, 130, 95), (120, 80, 55)])
        d.ellipse([w * 0.32, 0, w * 0.68, h * 0.14], fill=(*skin, 255))
        d.rounded_rectangle(
            [w * 0.12, h * 0.14, w * 0.88, h * 0.58],
            radius=w * 0.2,
            fill=(*_pick(rng, ACCENTS + GLASS), 255),
        )
        legs = (*_pick(rng, [(40, 40, 60), (60, 50, 40), (20, 20, 20)]), 255)
        d.rectangle([w * 0.2, h * 0.56, w * 0.46, h], fill=legs)
        d.rectangle([w * 0.54, h * 0.56, w * 0.8, h], fill=legs)
    elif kind == "lamp":
        d.rectangle([w * 0.42, h * 0.1, w * 0.58, h], fill=(35, 35, 40, 255))
        d.rectangle([w * 0.1, 0, w * 0.9, h * 0.12], fill=(45, 45, 50, 255))
        d.ellipse([w * 0.2, h * 0.02, w * 0.8, h * 0.1], fill=(250, 235, 180, 255))
    elif kind == "car":
        body = (*_pick(rng, ACCENTS + [(200, 200, 205), (240, 240, 240)]), 255)
        d.rounded_rectangle([0, h * 0.4, w - 1, h * 0.85], radius=h * 0.12, fill=body)
        d.polygon(
            [(w * 0.2, h * 0.42), (w * 0.3, h * 0.05), (w * 0.75, h * 0.05), (w * 0.88, h * 0.42)],
            fill=body,
        )
        d.polygon(
            [(w * 0.26, h * 0.4), (w * 0.33, h * 0.12), (w * 0.72, h * 0.12), (w * 0.82, h * 0.4)],
            fill=(60, 75, 90, 255),
        )
        for cx in (0.22, 0.78):
            d.ellipse([w * cx - h * 0.17, h * 0.66, w * cx + h * 0.17, h], fill=(20, 20, 20, 255))
    else:  # sign on a pole
        d.rectangle([w * 0.45, h * 0.3, w * 0.55, h], fill=(60, 60, 65, 255))
        board = _pick(rng, ACCENTS)
        d.rectangle([0, 0, w - 1, h * 0.35], fill=(*board, 255))
        _glyphs(
            d,
            (w * 0.1, h * 0.05, w * 0.9, h * 0.3),
            int(rng.integers(2, 5)),
            (245, 245, 240),
            rng,
            2,
        )
    return img


# --------------------------------------------------------------------------------------------------
# Landmarks
# --------------------------------------------------------------------------------------------------


@dataclass
class Surface:
    """A plane with its texture pyramid; ``landmark`` marks the surfaces of the landmark."""

    plane: Plane
    pyramid: list[Image.Image]
    landmark: bool

    @classmethod
    def from_texture(
        cls,
        plane_origin: np.ndarray,
        u: np.ndarray,
        v: np.ndarray,
        texture: Image.Image,
        landmark: bool,
    ) -> Surface:
        """Surface of a plane with an RGBA texture (alpha >= 128 is solid) and its pyramid."""
        alpha = np.asarray(texture.getchannel("A")) >= 128
        plane = Plane(plane_origin, u, v, None if alpha.all() else alpha)
        pyramid = [texture]
        while min(pyramid[-1].size) >= 16:
            pyramid.append(pyramid[-1].reduce(2))
        return cls(plane, pyramid, landmark)


@dataclass
class Landmark:
    """A landmark's surfaces, 3D points, surroundings and the region cameras may stand in."""

    kind: str
    surfaces: list[Surface]
    surroundings: list[Surface]
    points: np.ndarray
    normals: np.ndarray
    centre: np.ndarray
    half: np.ndarray  # half extents (x, y, z) of the bounding box
    radius: float
    az_centre: float  # degrees; azimuth a of a camera direction (sin a, 0, cos a)
    az_half: float
    wall_azimuths: list[float]
    keep_out: tuple[float, float]  # half sizes (x, z) of the footprint cameras stay out of
    ground: dict[str, Any] = field(default_factory=dict)

    @property
    def planes(self) -> list[Plane]:
        """Every plane that can hide a landmark point (landmark and surroundings)."""
        return [s.plane for s in self.surfaces + self.surroundings]


def _wall(
    rng: np.random.Generator,
    style: Style,
    az: float,
    width: float,
    height: float,
    offset: float,
    top: str,
    feature: bool,
) -> Surface:
    """A wall whose front faces azimuth ``az`` at ``offset`` from the origin."""
    n = np.array([math.sin(math.radians(az)), 0.0, math.cos(math.radians(az))])
    u = _cross(_UP, n)
    tex = facade_texture(rng, style, width, height, top, feature)
    total = height + _top_height(top, width)
    origin = offset * n - u * width / 2
    return Surface.from_texture(origin, u * width, _UP * total, tex, landmark=True)


def _sample_points(
    rng: np.random.Generator, surfaces: Sequence[Surface], n_total: int
) -> tuple[np.ndarray, np.ndarray]:
    """Points spread uniformly over the solid parts of the surfaces, with their normals."""
    areas = []
    for s in surfaces:
        cover = 1.0 if s.plane.alpha is None else float(s.plane.alpha.mean())
        areas.append(np.linalg.norm(s.plane.u) * np.linalg.norm(s.plane.v) * cover)
    counts = np.round(n_total * np.array(areas) / sum(areas)).astype(int)
    pts, nrm = [], []
    for s, count in zip(surfaces, counts, strict=True):
        if count == 0:
            continue
        cand = rng.random((count * 4 + 16, 2))
        cand = cand[s.plane.covers(cand[:, 0], cand[:, 1])][:count]
        pl = s.plane
        pts.append(pl.origin + cand[:, :1] * pl.u + cand[:, 1:] * pl.v)
        nrm.append(np.repeat(pl.normal[None], len(cand), axis=0))
    return np.concatenate(pts), np.concatenate(nrm)


def make_landmark(rng: np.random.Generator, bank: MotifBank, n_points: int) -> Landmark:
    """A random building (facade, street corner, box or tower) with surroundings and points."""
    kind = _pick(rng, ["facade", "facade", "corner", "corner", "box", "box", "tower"])
    style = _sample_style(rng, bank)
    if kind == "tower":
        a = b = float(rng.uniform(2.5, 3.8))
        height = float(rng.uniform(14, 24))
    else:
        a, b = float(rng.uniform(5, 11)), float(rng.uniform(4, 9))
        height = float(rng.uniform(7, 15))
    if kind == "facade":
        b = 0.0
    flat_top = style.top if style.top in ("flat", "crenel") else "flat"
    surfaces: list[Surface] = []
    if kind == "facade":
        azimuths = [0.0]
        surfaces.append(_wall(rng, style, 0.0, 2 * a, height, 0.0, style.top, True))
        if rng.random() < 0.5:  # a porch in front hides part of the wall
            pw = 2 * a * rng.uniform(0.35, 0.6)
            ph = min(height * rng.uniform(0.3, 0.5), 6.0)
            depth = rng.uniform(1.5, 3.0)
            px = rng.uniform(-a + pw / 2, a - pw / 2)
            tex = arcade_texture(rng, style, pw, ph)
            origin = np.array([px - pw / 2, 0.0, depth])
            surfaces.append(
                Surface.from_texture(
                    origin, np.array([pw, 0, 0.0]), np.array([0, ph, 0.0]), tex, True
                )
            )
        az_centre, az_half = 0.0, 70.0
    else:
        azimuths = [0.0, 90.0] if kind == "corner" else [0.0, 90.0, 180.0, 270.0]
        for k, az in enumerate(azimuths):
            width, offset = (2 * a, b) if k % 2 == 0 else (2 * b, a)
            top = style.top if (k == 0 and kind == "corner") else flat_top
            surfaces.append(_wall(rng, style, az, width, height, offset, top, k == 0))
        if kind == "corner":
            az_centre, az_half = 45.0, 100.0
        else:
            az_centre, az_half = 0.0, 180.0
            roof = roof_texture(rng, 2 * a, 2 * b)
            surfaces.append(
                Surface.from_texture(
                    np.array([-a, height, b]),
                    np.array([2 * a, 0, 0.0]),
                    np.array([0, 0, -2 * b]),
                    roof,
                    True,
                )
            )
    top_u = max(_top_height(style.top, 2 * a), 0.0)
    half = np.array([a, (height + top_u) / 2, max(b, 0.5)])
    centre = np.array([0.0, height / 2, 0.0])
    radius = float(np.linalg.norm(half))
    points, normals = _sample_points(rng, surfaces, n_points)
    return Landmark(
        kind=kind,
        surfaces=surfaces,
        surroundings=_surroundings(rng, bank, radius),
        points=points,
        normals=normals,
        centre=centre,
        half=half,
        radius=radius,
        az_centre=az_centre,
        az_half=az_half,
        wall_azimuths=azimuths,
        keep_out=(a + 1.0, b + 1.0),
        ground=_sample_ground(rng),
    )


def _surroundings(rng: np.random.Generator, bank: MotifBank, radius: float) -> list[Surface]:
    """Distant buildings on a ring around the landmark, facing it."""
    out = []
    for _ in range(int(rng.integers(6, 11))):
        az = rng.uniform(0, 2 * math.pi)
        dist = radius * rng.uniform(3.4, 4.5) + rng.uniform(8, 20)
        width, height = rng.uniform(8, 24), rng.uniform(5, 18)
        n = -np.array([math.sin(az), 0.0, math.cos(az)])
        u = _cross(_UP, n)
        origin = -n * dist - u * width / 2
        tex = background_building_texture(rng, bank, width, height)
        out.append(Surface.from_texture(origin, u * width, _UP * height, tex, landmark=False))
    return out


def _sample_ground(rng: np.random.Generator) -> dict[str, Any]:
    """Ground surface of a landmark's square: paving, cobbles, asphalt or grass."""
    kind = _pick(rng, ["paving", "paving", "cobble", "asphalt", "grass"])
    base = {
        "paving": _pick(rng, [(175, 170, 160), (190, 180, 160), (150, 150, 150)]),
        "cobble": _pick(rng, [(120, 110, 100), (140, 130, 115)]),
        "asphalt": (75, 75, 80),
        "grass": _pick(rng, [(80, 120, 55), (100, 130, 60)]),
    }[kind]
    tile = {"paving": rng.uniform(1.0, 2.2), "cobble": 0.4, "asphalt": 3.0, "grass": 0.25}[kind]
    joint = {"paving": 0.05, "cobble": 0.12, "asphalt": 0.0, "grass": 0.0}[kind]
    variation = {"paving": 0.12, "cobble": 0.3, "asphalt": 0.06, "grass": 0.35}[kind]
    return {"base": base, "tile": float(tile), "joint": joint, "variation": variation}


# --------------------------------------------------------------------------------------------------
# Views: cameras, occluders, photometric parameters
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CamSpec:
    """Where a camera stands relative to its target and how it is set up."""

    azimuth: float  # degrees
    distance: float  # horizontal distance to the target
    height: float
    target: tuple[float, float, float]
    fov: float  # degrees across the longest image side
    aspect: float  # width / height
    roll: float


@dataclass
class View:
    """A camera, the occluders in front of it and its photometric look."""

    spec: CamSpec
    camera: Camera
    occluders: list[Surface]
    look: dict[str, Any]


def _image_size(max_side: int, aspect: float) -> tuple[int, int]:
    if aspect >= 1:
        return max_side, max(16, round(max_side / aspect))
    return max(16, round(max_side * aspect)), max_side


def camera_from_spec(spec: CamSpec, max_side: int) -> Camera:
    """The pinhole camera a spec describes."""
    target = np.array(spec.target)
    az = math.radians(spec.azimuth)
    centre = np.array(
        [
            target[0] + spec.distance * math.sin(az),
            spec.height,
            target[2] + spec.distance * math.cos(az),
        ]
    )
    width, height = _image_size(max_side, spec.aspect)
    focal = max(width, height) / 2 / math.tan(math.radians(spec.fov) / 2)
    return look_at(centre, target, focal, width, height, spec.roll)


def _aspect(rng: np.random.Generator) -> float:
    aspect = _pick(rng, [4 / 3, 4 / 3, 3 / 2, 16 / 9, 1.0, 5 / 4])
    return 1 / aspect if rng.random() < 0.3 else aspect


def _db_spec(rng: np.random.Generator, lm: Landmark) -> CamSpec:
    """Any viewpoint around the landmark; half are popular ones facing a wall, as in photo sites."""
    if rng.random() < 0.5:
        azimuth = _wall_azimuth(rng, lm, 30.0)
        distance = lm.radius * rng.uniform(0.9, 1.9)
        jitter, fov = 0.15, rng.uniform(42, 66)
    else:
        azimuth = float(lm.az_centre + rng.uniform(-lm.az_half, lm.az_half))
        distance = lm.radius * math.exp(rng.uniform(math.log(0.5), math.log(2.8)))
        jitter, fov = 0.45, rng.uniform(35, 75)
    target = lm.centre + rng.uniform(-1, 1, 3) * lm.half * jitter * np.array([1.0, 0.8, 1.0])
    high = rng.random() < 0.25
    return CamSpec(
        azimuth=azimuth,
        distance=float(distance),
        height=float(
            rng.uniform(2.0, max(2.5, 2.2 * lm.half[1])) if high else rng.uniform(1.2, 2.0)
        ),
        target=tuple(float(t) for t in target),
        fov=float(fov),
        aspect=_aspect(rng),
        roll=float(rng.normal(0, 3) + (rng.random() < 0.1) * rng.normal(0, 10)),
    )


def _wall_azimuth(rng: np.random.Generator, lm: Landmark, spread: float) -> float:
    """An azimuth within ``spread`` degrees of a wall's normal, inside the allowed range."""
    walls = [a for a in lm.wall_azimuths if _azimuth_ok(lm, a)]
    az = _pick(rng, walls) + rng.uniform(-spread, spread)
    return float(np.clip(az, lm.az_centre - lm.az_half, lm.az_centre + lm.az_half))


def _query_spec(rng: np.random.Generator, lm: Landmark) -> CamSpec:
    """A typical landmark photo: facing a wall, whole building in view, level camera."""
    target = lm.centre + rng.uniform(-1, 1, 3) * lm.half * 0.08
    return CamSpec(
        azimuth=_wall_azimuth(rng, lm, 28.0),
        distance=float(lm.radius * rng.uniform(1.0, 1.7)),
        height=float(rng.uniform(1.4, 1.9)),
        target=tuple(float(t) for t in target),
        fov=float(rng.uniform(45, 62)),
        aspect=_aspect(rng),
        roll=float(rng.normal(0, 1.5)),
    )


def _azimuth_ok(lm: Landmark, az: float) -> bool:
    diff = (az - lm.az_centre + 180) % 360 - 180
    return abs(diff) <= lm.az_half


def _outside(lm: Landmark, centre: np.ndarray) -> bool:
    """Camera stands outside the building (in front of a lone facade)."""
    ax, bz = lm.keep_out
    if lm.kind == "facade":
        return centre[2] > 1.0 + (3.5 if abs(centre[0]) < ax else 0.0)
    return abs(centre[0]) > ax or abs(centre[2]) > bz


def _place_occluders(rng: np.random.Generator, cam: Camera, count: int) -> list[Surface]:
    """Billboards standing on the ground between the camera and the scene."""
    sizes = {
        "tree": (4.0, 7.0),
        "person": (0.7, 1.75),
        "lamp": (0.6, 5.0),
        "car": (4.2, 1.6),
        "sign": (1.6, 2.8),
    }
    out = []
    for _ in range(count):
        kind = _pick(rng, ["tree", "tree", "person", "person", "lamp", "car", "sign"])
        w, h = (s * rng.uniform(0.8, 1.25) for s in sizes[kind])
        x = rng.uniform(0.05, 0.95) * cam.width
        ray = cam.ray_matrix @ np.array([x, cam.height / 2, 1.0])
        ray[1] = 0.0
        ray /= np.linalg.norm(ray)
        dist = rng.uniform(3.0, 14.0)
        base = cam.centre + ray * dist
        base[1] = 0.0
        n = -ray
        u = _cross(_UP, n)
        tex = occluder_texture(rng, kind, w, h)
        out.append(Surface.from_texture(base - u * w / 2, u * w, _UP * h, tex, landmark=False))
    return out


def _sample_look(rng: np.random.Generator, mild: bool) -> dict[str, Any]:
    """Lighting, sky and camera-pipeline parameters of one photograph."""
    k = 0.5 if mild else 1.0
    zenith, horizon = _pick(rng, SKIES)
    return {
        "zenith": zenith,
        "horizon": horizon,
        "clouds": [
            (
                rng.uniform(-math.pi, math.pi),
                rng.uniform(0.05, 0.5),
                rng.uniform(0.1, 0.4),
                rng.uniform(0.03, 0.1),
                rng.uniform(0.4, 0.9),
            )
            for _ in range(int(rng.integers(0, 7)))
        ],
        "sun": (rng.uniform(0, 2 * math.pi), rng.uniform(0.3, 1.1)),
        "ambient": rng.uniform(0.5, 0.75),
        "fog": rng.uniform(80, 250),
        "brightness": 1 + k * rng.uniform(-0.25, 0.25),
        "contrast": 1 + k * rng.uniform(-0.2, 0.2),
        "saturation": 1 + k * rng.uniform(-0.35, 0.2),
        "temperature": k * rng.uniform(-0.12, 0.12),
        "gamma": 1 + k * rng.uniform(-0.15, 0.15),
        "vignette": rng.uniform(0, 0.35),
        "blur": rng.uniform(0.3, 1.3) * k if rng.random() < 0.4 else 0.0,
        "noise": rng.uniform(0, 6) * k,
        "quality": int(rng.integers(55, 96)) if not mild else int(rng.integers(75, 96)),
        "noise_seed": int(rng.integers(2**31)),
    }


def sample_view(
    rng: np.random.Generator, lm: Landmark, max_side: int, mode: str, spec: CamSpec | None = None
) -> View | None:
    """A database ('db') or query ('query') view, or the view of ``spec``; None if inside."""
    if spec is None:
        spec = _query_spec(rng, lm) if mode == "query" else _db_spec(rng, lm)
    cam = camera_from_spec(spec, max_side)
    if not _outside(lm, cam.centre):
        return None
    count = int(rng.random() < 0.25) if mode == "query" else min(int(rng.poisson(0.9)), 3)
    return View(spec, cam, _place_occluders(rng, cam, count), _sample_look(rng, mode == "query"))


# --------------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------------


def _pixel_rays(
    cam: Camera, x0: int = 0, y0: int = 0, w: int | None = None, h: int | None = None
) -> np.ndarray:
    """World ray directions (3, h, w) through pixel centres, with unit camera depth."""
    w = cam.width if w is None else w
    h = cam.height if h is None else h
    xs = np.arange(x0, x0 + w, dtype=np.float64) + 0.5
    ys = np.arange(y0, y0 + h, dtype=np.float64) + 0.5
    M = cam.ray_matrix
    return M[:, 0, None, None] * xs + M[:, 1, None, None] * ys[:, None] + M[:, 2, None, None]


def _background(cam: Camera, look: dict[str, Any], ground: dict[str, Any]) -> np.ndarray:
    """Sky with clouds above the horizon, textured ground fading into haze below (H, W, 3)."""
    d = _pixel_rays(cam).astype(np.float32)
    norm = np.sqrt((d * d).sum(0))
    horizon = np.array(look["horizon"], np.float32) / 255
    zenith = np.array(look["zenith"], np.float32) / 255
    out = np.empty((cam.height, cam.width, 3), np.float32)
    below = d[1] < -1e-6
    sky_d, sky_n = d[:, ~below], norm[~below]
    up = np.clip(sky_d[1] / sky_n, 0, 1)[:, None]
    sky = horizon + (zenith - horizon) * up**0.6
    if look["clouds"] and sky_d.size:
        az = np.arctan2(sky_d[0], sky_d[2])
        el = np.arcsin(np.clip(sky_d[1] / sky_n, -1, 1))
        for caz, cel, saz, sel, strength in look["clouds"]:
            daz = (az - caz + np.pi) % (2 * np.pi) - np.pi
            w = strength * np.exp(-((daz / saz) ** 2) - ((el - cel) / sel) ** 2)
            sky = sky + (0.97 - sky) * w[:, None]
    out[~below] = sky
    gd = d[:, below]
    t = -np.float32(cam.centre[1]) / gd[1]
    gx = np.float32(cam.centre[0]) + t * gd[0]
    gz = np.float32(cam.centre[2]) + t * gd[2]
    tile = np.float32(ground["tile"])
    ix, iz = np.floor(gx / tile), np.floor(gz / tile)
    # Per-tile pseudo-random shade (hash of the tile's integer coordinates).
    cell = (ix.astype(np.int64) * 73856093) ^ (iz.astype(np.int64) * 19349663)
    cell = (cell % 1009).astype(np.float32) / 1009
    shade = 1 + np.float32(ground["variation"]) * (cell - 0.5)
    if ground["joint"] > 0:
        joint = (gx / tile - ix < ground["joint"]) | (gz / tile - iz < ground["joint"])
        shade = np.where(joint, np.float32(0.72), shade)
    dist = t * norm[below]
    # Far ground detail would alias: fade it out, then into the haze.
    shade = 1 + (shade - 1) * np.exp(-dist / (tile * 40))
    floor_ = np.array(ground["base"], np.float32) / 255 * shade[:, None]
    fog = (1 - np.exp(-dist / np.float32(look["fog"])))[:, None]
    out[below] = floor_ + (horizon - floor_) * fog
    return out


def _plane_homography(plane: Plane, cam: Camera, tw: int, th: int) -> np.ndarray:
    """3x3 map from homogeneous image pixels to texture pixels; its last row gives n.d."""
    M = cam.ray_matrix
    n = plane.normal * np.linalg.norm(_cross(plane.u, plane.v))
    h = n @ (plane.origin - cam.centre)
    co = cam.centre - plane.origin
    den = M.T @ n
    s_num = (co @ plane.u) * den + h * (M.T @ plane.u)
    r_num = (co @ plane.v) * den + h * (M.T @ plane.v)
    a_row = s_num * (tw / (plane.u @ plane.u))
    b_row = th * den - r_num * (th / (plane.v @ plane.v))
    return np.stack([a_row, b_row, den])


def _mip_level(surface: Surface, cam: Camera, depth: float) -> int:
    """Pyramid level whose texels are about one image pixel at ``depth``."""
    pl = surface.plane
    texels_per_unit = surface.pyramid[0].size[0] / np.linalg.norm(pl.u)
    to_cam = cam.centre - pl.centre()
    cos = abs(pl.normal @ to_cam) / max(np.linalg.norm(to_cam), 1e-9)
    footprint = texels_per_unit * depth / cam.focal / math.sqrt(max(cos, 0.05))
    level = int(math.floor(math.log2(footprint))) if footprint > 1.5 else 0
    return min(max(level, 0), len(surface.pyramid) - 1)


def _draw_surface(
    img: np.ndarray,
    zbuf: np.ndarray,
    owner: np.ndarray,
    surf: Surface,
    cam: Camera,
    look: dict[str, Any],
) -> None:
    """Composite one textured plane into the image where it is nearest (inverse-depth test)."""
    pl = surf.plane
    n = _cross(pl.u, pl.v)
    h_const = n @ (pl.origin - cam.centre)
    if h_const >= 0:  # back face
        return
    uv, z = cam.project(pl.corners())
    if (z <= 1e-3).all():
        return
    if (z > 1e-3).all():
        x0, y0 = (max(0, int(math.floor(v))) for v in uv.min(0))
        x1 = min(cam.width, int(math.ceil(uv[:, 0].max())))
        y1 = min(cam.height, int(math.ceil(uv[:, 1].max())))
        if x0 >= x1 or y0 >= y1:
            return
        depth = float(math.sqrt(z.min() * z.max()))
    else:
        x0, y0, x1, y1 = 0, 0, cam.width, cam.height
        depth = float(max(z.max() * 0.25, 1.0))
    level = _mip_level(surf, cam, depth)
    tex = surf.pyramid[level]
    H = _plane_homography(pl, cam, *tex.size)
    H = H @ np.array([[1.0, 0, x0], [0, 1.0, y0], [0, 0, 1.0]])
    if abs(H[2, 2]) < 1e-12 * np.abs(H[2]).max():
        H[2, 2] = 1e-12 * np.abs(H[2]).max()
    coeffs = tuple((H / H[2, 2]).ravel()[:8])
    w, h = x1 - x0, y1 - y0
    layer = tex.transform((w, h), Image.Transform.PERSPECTIVE, coeffs, Image.Resampling.BILINEAR)
    arr = np.asarray(layer, dtype=np.float32) / 255
    xs = np.arange(w, dtype=np.float64) + 0.5
    ys = np.arange(h, dtype=np.float64) + 0.5
    inv = ((H[2, 0] * xs + H[2, 1] * ys[:, None] + H[2, 2]) / h_const).astype(np.float32)
    alpha = arr[..., 3]
    zwin = zbuf[y0:y1, x0:x1]
    win = (alpha > 0.004) & (inv > 0) & (inv > zwin)
    if not win.any():
        return
    sun_az, sun_el = look["sun"]
    sun = np.array(
        [math.cos(sun_el) * math.sin(sun_az), math.sin(sun_el), math.cos(sun_el) * math.cos(sun_az)]
    )
    unit_n = n / np.linalg.norm(n)
    light = look["ambient"] + (1 - look["ambient"]) * 1.2 * max(0.0, float(unit_n @ sun))
    rgb = arr[..., :3] * light
    fog = 1 - math.exp(-depth / look["fog"])
    rgb = rgb + (np.array(look["horizon"], np.float32) / 255 - rgb) * fog
    region = img[y0:y1, x0:x1]
    a = alpha[win][:, None]
    region[win] = region[win] * (1 - a) + rgb[win] * a
    solid = win & (alpha >= 0.5)
    zwin[solid] = inv[solid]
    owner[y0:y1, x0:x1][solid] = surf.landmark


def _photometric(img: np.ndarray, look: dict[str, Any]) -> np.ndarray:
    """Camera pipeline: exposure, contrast, saturation, white balance, vignette, blur, noise."""
    x = img * look["brightness"]
    mean = x.mean()
    x = (x - mean) * look["contrast"] + mean
    grey = x.mean(axis=2, keepdims=True)
    x = grey + (x - grey) * look["saturation"]
    x = x * np.array([1 + look["temperature"], 1.0, 1 - look["temperature"]], np.float32)
    h, w = x.shape[:2]
    yy = ((np.arange(h) + 0.5) / h * 2 - 1).astype(np.float32)
    xx = ((np.arange(w) + 0.5) / w * 2 - 1).astype(np.float32)
    x = x * (1 - np.float32(look["vignette"] * 0.5) * (xx**2 + yy[:, None] ** 2))[..., None]
    x = np.clip(x, 0, 1) ** look["gamma"]
    out = Image.fromarray((x * 255 + 0.5).astype(np.uint8), "RGB")
    if look["blur"] > 0:
        out = out.filter(ImageFilter.GaussianBlur(look["blur"]))
    arr = np.asarray(out, dtype=np.float32)
    if look["noise"] > 0:
        noise = np.random.default_rng(look["noise_seed"]).standard_normal(arr.shape, np.float32)
        arr = arr + noise * np.float32(look["noise"])
    return np.clip(arr + 0.5, 0, 255).astype(np.uint8)


def render_view(lm: Landmark, view: View) -> tuple[np.ndarray, np.ndarray]:
    """RGB image (H, W, 3) uint8 and landmark pixel mask (H, W) bool of a view."""
    cam = view.camera
    img = _background(cam, view.look, lm.ground)
    zbuf = np.zeros((cam.height, cam.width), np.float32)
    owner = np.zeros((cam.height, cam.width), bool)
    surfaces = lm.surroundings + lm.surfaces + view.occluders
    depth = [float(cam.project(s.plane.centre()[None])[1][0]) for s in surfaces]
    for k in np.argsort(depth, kind="stable")[::-1]:  # far to near
        _draw_surface(img, zbuf, owner, surfaces[k], cam, view.look)
    return _photometric(img, view.look), owner


def encode_jpeg(rgb: np.ndarray, quality: int) -> bytes:
    """JPEG bytes of an RGB array."""
    buffer = BytesIO()
    Image.fromarray(rgb, "RGB").save(buffer, "JPEG", quality=int(quality))
    return buffer.getvalue()


def encode_mask(mask: np.ndarray) -> bytes:
    """PNG bytes of a boolean mask (255 = landmark)."""
    buffer = BytesIO()
    Image.fromarray(mask.astype(np.uint8) * 255, "L").save(buffer, "PNG")
    return buffer.getvalue()


def mask_box(mask: np.ndarray) -> tuple[float, float, float, float] | None:
    """Bounding box [x1, y1, x2, y2] (pixel edges) of a mask, or None if empty."""
    ys, xs = np.nonzero(mask)
    if xs.size == 0:
        return None
    return float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)


# --------------------------------------------------------------------------------------------------
# One landmark's photographs (runs in worker processes)
# --------------------------------------------------------------------------------------------------


@dataclass
class _Shots:
    """Views of one landmark with the points each sees and their depths."""

    views: list[View] = field(default_factory=list)
    vis: list[np.ndarray] = field(default_factory=list)
    depth: list[np.ndarray] = field(default_factory=list)

    def add(self, view: View, vis: np.ndarray, depth: np.ndarray) -> None:
        self.views.append(view)
        self.vis.append(vis)
        self.depth.append(depth)

    def arrays(self) -> tuple[np.ndarray, np.ndarray, list[Camera]]:
        return np.stack(self.vis), np.stack(self.depth), [v.camera for v in self.views]


def _observe(lm: Landmark, view: View) -> tuple[np.ndarray, np.ndarray]:
    """Points a view sees and the depth of every point in it."""
    planes = lm.planes + [s.plane for s in view.occluders]
    vis = visible_points(lm.points, lm.normals, view.camera, planes)
    return vis, view.camera.project(lm.points)[1]


def _sample_shot(
    rng: np.random.Generator,
    lm: Landmark,
    max_side: int,
    mode: str,
    min_visible: int,
    spec: CamSpec | None = None,
    tries: int = 40,
) -> tuple[View, np.ndarray, np.ndarray] | None:
    """A view seeing at least ``min_visible`` points (the best of ``tries`` otherwise)."""
    best = None
    for _ in range(tries):
        view = sample_view(rng, lm, max_side, mode, spec)
        if view is None:
            continue
        vis, depth = _observe(lm, view)
        if best is None or vis.sum() > best[1].sum():
            best = (view, vis, depth)
        if vis.sum() >= min_visible:
            return view, vis, depth
    return best


def _db_shots(rng: np.random.Generator, lm: Landmark, n: int, max_side: int) -> _Shots:
    """``n`` database views that each see enough of the landmark."""
    shots = _Shots()
    min_visible = max(20, int(0.05 * len(lm.points)))
    while len(shots.views) < n:
        shot = _sample_shot(rng, lm, max_side, "db", min_visible)
        if shot is not None:
            shots.add(*shot)
    return shots


def _labels_against(
    lm: Landmark, vis: np.ndarray, depth: np.ndarray, view: View, db: _Shots
) -> np.ndarray:
    """Test labels of a view (as query) against every database shot."""
    dvis, ddepth, dcams = db.arrays()
    geo = pair_geometry(vis[None], depth[None], [view.camera], dvis, ddepth, dcams, lm.points)
    return classify_pairs(geo.overlap, geo.angle, geo.scale)[0]


def _perturbed(rng: np.random.Generator, spec: CamSpec, hard: bool) -> CamSpec:
    """A nearby viewpoint (easy) or one with a strong viewpoint or scale change (hard)."""
    if not hard:
        return CamSpec(
            spec.azimuth + rng.uniform(-8, 8),
            spec.distance * rng.uniform(0.9, 1.12),
            spec.height,
            spec.target,
            spec.fov * rng.uniform(0.9, 1.1),
            _aspect(rng),
            float(rng.normal(0, 2)),
        )
    if rng.random() < 0.5:
        turn = rng.choice([-1, 1]) * rng.uniform(35, 60)
        return CamSpec(
            spec.azimuth + turn,
            spec.distance,
            spec.height,
            spec.target,
            spec.fov,
            _aspect(rng),
            float(rng.normal(0, 3)),
        )
    zoom = rng.choice([rng.uniform(0.4, 0.6), rng.uniform(1.9, 2.6)])
    return CamSpec(
        spec.azimuth + rng.uniform(-10, 10),
        spec.distance * zoom,
        spec.height,
        spec.target,
        spec.fov,
        _aspect(rng),
        float(rng.normal(0, 3)),
    )


def _choose_queries(
    rng: np.random.Generator, lm: Landmark, db: _Shots, n_queries: int, max_side: int
) -> _Shots:
    """Queries with at least one easy and one hard positive, adding database views if needed."""
    queries = _Shots()
    min_visible = int(0.15 * len(lm.points))
    for _ in range(60):
        if len(queries.views) == n_queries:
            return queries
        shot = _sample_shot(rng, lm, max_side, "query", min_visible, tries=10)
        if shot is None or shot[1].sum() < min_visible:
            continue
        view, vis, depth = shot
        if any(abs(view.spec.azimuth - q.spec.azimuth) < 12 for q in queries.views):
            continue
        labels = _labels_against(lm, vis, depth, view, db)
        if (labels == EASY).any() and (labels == HARD).any():
            queries.add(view, vis, depth)
    # Rare: complete the database around fresh queries until they qualify.
    for _ in range(20):
        if len(queries.views) == n_queries:
            break
        shot = _sample_shot(rng, lm, max_side, "query", min_visible, tries=10)
        if shot is None:
            continue
        view, vis, depth = shot
        for need in (EASY, HARD):
            for _ in range(30):
                if (_labels_against(lm, vis, depth, view, db) == need).any():
                    break
                extra = _sample_shot(
                    rng,
                    lm,
                    max_side,
                    "db",
                    1,
                    spec=_perturbed(rng, view.spec, need == HARD),
                    tries=1,
                )
                if (
                    extra is not None
                    and _labels_against(lm, vis, depth, view, _single(*extra))[0] == need
                ):
                    db.add(*extra)
        labels = _labels_against(lm, vis, depth, view, db)
        if (labels == EASY).any() and (labels == HARD).any():
            queries.add(view, vis, depth)
    if len(queries.views) < n_queries:
        log.warning("landmark got %d of %d queries", len(queries.views), n_queries)
    return queries


def _single(view: View, vis: np.ndarray, depth: np.ndarray) -> _Shots:
    shots = _Shots()
    shots.add(view, vis, depth)
    return shots


def _render_all(lm: Landmark, shots: _Shots) -> tuple[list[bytes], list[bytes], list[Any]]:
    """JPEG bytes, mask PNG bytes and mask box of every view."""
    jpegs, masks, boxes = [], [], []
    for view in shots.views:
        rgb, mask = render_view(lm, view)
        jpegs.append(encode_jpeg(rgb, view.look["quality"]))
        masks.append(encode_mask(mask))
        boxes.append(mask_box(mask))
    return jpegs, masks, boxes


def build_landmark(job: tuple[int, str, int, dict[str, Any]]) -> dict[str, Any]:
    """Render and measure one landmark: images, masks and pair geometry (picklable result)."""
    seed, split, index, params = job
    rng = np.random.default_rng([seed, _SPLIT_CODES[split], index])
    lm = make_landmark(rng, motif_bank(seed), params["points_per_landmark"])
    db = _db_shots(rng, lm, params["views_per_landmark"], params["max_side"])
    out: dict[str, Any] = {"kind": lm.kind, "n_points": len(lm.points)}
    if split == "test":
        queries = _choose_queries(rng, lm, db, params["queries_per_landmark"], params["max_side"])
        out["q_images"], out["q_masks"], out["q_boxes"] = _render_all(lm, queries)
        if queries.views:
            qvis, qdepth, qcams = queries.arrays()
            dvis, ddepth, dcams = db.arrays()
            out["q_geometry"] = pair_geometry(qvis, qdepth, qcams, dvis, ddepth, dcams, lm.points)
    out["images"], out["masks"], _ = _render_all(lm, db)
    vis, depth, cams = db.arrays()
    out["geometry"] = pair_geometry(vis, depth, cams, vis, depth, cams, lm.points)
    out["pair_seed"] = int(rng.integers(2**31))
    return out


# --------------------------------------------------------------------------------------------------
# Writing the world
# --------------------------------------------------------------------------------------------------


def _write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def _link(src: Path, dst: Path) -> None:
    """Hardlink ``src`` to ``dst`` (copy where links are not possible)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def _run_jobs(jobs: list[tuple], workers: int) -> list[dict[str, Any]]:
    """``build_landmark`` over the jobs, in order, in ``workers`` processes."""
    if workers <= 0:
        workers = (
            len(os.sched_getaffinity(0))
            if hasattr(os, "sched_getaffinity")
            else (os.cpu_count() or 1)
        )
    workers = min(workers, len(jobs))
    if workers <= 1:
        return [build_landmark(job) for job in jobs]
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context(method)) as pool:
        return list(pool.map(build_landmark, jobs, chunksize=1))


def _sfm_split(
    results: list[dict[str, Any]],
    first_cluster: int,
    cid_rng: np.random.Generator,
    config: SyntheticConfig,
) -> dict[str, Any]:
    """Cids, clusters, query-positive pairs, candidates and matching pairs of one SfM split."""
    cids, cluster, qidxs, pidxs, candidates, match_q, match_p = [], [], [], [], [], [], []
    seen, rows = [], []
    for k, res in enumerate(results):
        offset = len(cids)
        geo: PairGeometry = res["geometry"]
        n = len(res["images"])
        cids += [cid_rng.bytes(16).hex() for _ in range(n)]
        cluster += [first_cluster + k] * n
        pos = positive_mask(geo, config.positive_min_overlap, config.positive_max_scale)
        pair_rng = np.random.default_rng(res["pair_seed"])
        for q in range(n):
            pool = np.flatnonzero(pos[q])
            if pool.size:
                qidxs.append(offset + q)
                pidxs.append(offset + int(pair_rng.choice(pool)))
            others = [j for j in np.flatnonzero(geo.shared[q] > 0) if j != q]
            candidates.append([(offset + int(j), int(geo.shared[q, j])) for j in others])
            rows += [
                (
                    offset + q,
                    offset + int(j),
                    int(geo.shared[q, j]),
                    float(geo.angle[q, j]),
                    float(geo.scale[q, j]),
                )
                for j in others
            ]
        seen += [int(c) for c in geo.n_visible]
        for q, p in zip(*np.nonzero(np.triu(pos | pos.T, 1)), strict=True):
            match_q.append(offset + int(q))
            match_p.append(offset + int(p))
    return {
        "cids": cids,
        "cluster": cluster,
        "qidxs": qidxs,
        "pidxs": pidxs,
        "bbxs": [None] * len(qidxs),
        "candidates": candidates,
        "match": (match_q, match_p),
        "geometry": {
            "points_seen": seen,
            "pairs": _columns(("query", "db", "shared", "angle", "scale"), rows),
        },
    }


def _columns(names: Sequence[str], rows: list[tuple]) -> dict[str, list]:
    return {name: [row[k] for row in rows] for k, name in enumerate(names)}


def _write_sfm(root: Path, train: list[dict], val: list[dict], config: SyntheticConfig) -> dict:
    """Training and validation splits, sidecars, whitening pairs and class labels."""
    folder = formats.sfm_dir(root, SFM_NAME)
    cid_rng = np.random.default_rng([config.seed, 0xC1D])
    splits = {
        "train": _sfm_split(train, 0, cid_rng, config),
        "val": _sfm_split(val, len(train), cid_rng, config),
    }
    for name, results in (("train", train), ("val", val)):
        images = [im for res in results for im in res["images"]]
        masks = [m for res in results for m in res["masks"]]
        for cid, jpeg, mask in zip(splits[name]["cids"], images, masks, strict=True):
            _write_bytes(formats.cid2filename(cid, folder / "ims"), jpeg)
            _write_bytes(formats.cid2filename(cid, folder / "masks").with_suffix(".png"), mask)
    keys = ("cids", "cluster", "qidxs", "pidxs", "bbxs")
    formats.write_sfm_db(
        formats.sfm_db_path(root, SFM_NAME),
        {name: {k: s[k] for k in keys} for name, s in splits.items()},
    )
    train_split = splits["train"]
    formats.write_positives_sidecar(folder / f"{SFM_NAME}-positives.npz", train_split["candidates"])
    formats.write_whiten_pairs(
        formats.sfm_whiten_path(root, SFM_NAME), train_split["cids"], *train_split["match"]
    )
    _write_labels(root, folder, train_split["cids"], train_split["cluster"])
    geometry = {
        "rule": {
            "positive_min_overlap": config.positive_min_overlap,
            "positive_max_scale": config.positive_max_scale,
            "overlap": "shared / points_seen[query]",
        },
        **{name: s["geometry"] for name, s in splits.items()},
    }
    (folder / f"{SFM_NAME}-geometry.json").write_text(json.dumps(geometry))
    return {
        name: {
            "images": len(s["cids"]),
            "landmarks": len(set(s["cluster"])),
            "pairs": len(s["qidxs"]),
            "matching_pairs": len(s["match"][0]),
        }
        for name, s in splits.items()
    }


def _write_labels(root: Path, sfm_folder: Path, cids: list[str], cluster: list[int]) -> None:
    """GLDv2-style class labels of the training images (hardlinks to the SfM images)."""
    folder = root / "train" / LABELS_NAME
    ids = [cid[:16] for cid in cids]
    for cid, image_id in zip(cids, ids, strict=True):
        _link(
            formats.cid2filename(cid, sfm_folder / "ims"),
            formats.gldv2_image_path(folder / "train", image_id),
        )
    formats.write_gldv2_train_csv(folder / "train.csv", ids, cluster)


def _write_test(root: Path, results: list[dict[str, Any]]) -> dict[str, Any]:
    """The revisitop-style test split, its geometry and the UKBench-style groups."""
    folder = formats.test_dir(root, TEST_NAME)
    imlist, qimlist, gnd, rows = [], [], [], []
    ukbench: list[str] = []
    for k, res in enumerate(results):
        offset = len(imlist)
        names = [f"rox_{k:03d}_{i:03d}" for i in range(len(res["images"]))]
        for name, jpeg, mask in zip(names, res["images"], res["masks"], strict=True):
            _write_bytes(folder / "jpg" / f"{name}.jpg", jpeg)
            _write_bytes(folder / "masks" / f"{name}.png", mask)
        imlist += names
        geo: PairGeometry | None = res.get("q_geometry")
        for q, (jpeg, mask, box) in enumerate(
            zip(res["q_images"], res["q_masks"], res["q_boxes"], strict=True)
        ):
            qname = f"rox_{k:03d}_q{q}"
            _write_bytes(folder / "jpg" / f"{qname}.jpg", jpeg)
            _write_bytes(folder / "masks" / f"{qname}.png", mask)
            labels = classify_pairs(geo.overlap[q], geo.angle[q], geo.scale[q])
            entry = {"bbx": box}
            for code, key in ((EASY, "easy"), (HARD, "hard"), (JUNK, "junk")):
                entry[key] = [offset + int(i) for i in np.flatnonzero(labels == code)]
            gnd.append(entry)
            qimlist.append(qname)
            for i in range(len(names)):
                rows.append(
                    (
                        len(qimlist) - 1,
                        offset + i,
                        int(geo.shared[q, i]),
                        int(geo.n_visible[q]),
                        float(geo.angle[q, i]),
                        float(geo.scale[q, i]),
                    )
                )
            if q == 0:
                best = np.argsort(-geo.shared[0], kind="stable")[:3]
                ukbench += [f"{qname}.jpg"] + [f"{names[int(i)]}.jpg" for i in best]
    formats.write_revisitop_gnd(formats.gnd_path(root, TEST_NAME), imlist, qimlist, gnd)
    _write_geometry(folder / "geometry.json", rows)
    uk_folder = formats.test_dir(root, UKBENCH_NAME) / "full"
    for i, name in enumerate(ukbench):
        _link(folder / "jpg" / name, uk_folder / f"ukbench{i:05d}.jpg")
    counts = {key: [len(g[key]) for g in gnd] for key in ("easy", "hard", "junk")}
    return {
        "images": len(imlist),
        "queries": len(qimlist),
        "landmarks": len(results),
        "ukbench_images": len(ukbench),
        **{f"mean_{k}": float(np.mean(v)) if v else 0.0 for k, v in counts.items()},
    }


def _write_geometry(path: Path, rows: list[tuple]) -> None:
    """Per query-database pair of one landmark: what the easy/hard/junk rule is computed from."""
    columns = ("query", "db", "shared", "query_points", "angle", "scale")
    data = {
        "rule": {
            "easy_min_overlap": EASY_MIN_OVERLAP,
            "easy_max_angle": EASY_MAX_ANGLE,
            "easy_max_scale": EASY_MAX_SCALE,
            "junk_max_overlap": JUNK_MAX_OVERLAP,
            "overlap": "shared / query_points",
        },
        "pairs": _columns(columns, rows),
    }
    path.write_text(json.dumps(data))


def generate_world(root: str | Path, config: SyntheticConfig | None = None) -> dict[str, Any]:
    """Generate the world into ``root`` (a new or empty folder) and return its statistics.

    Files are written in place; :func:`ensure_world` adds caching and an atomic swap.
    """
    config = config or SyntheticConfig()
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    params = config.params()
    jobs = [
        (config.seed, split, i, params)
        for split, n in (
            ("train", config.n_train_landmarks),
            ("val", config.n_val_landmarks),
            ("test", config.n_test_landmarks),
        )
        for i in range(n)
    ]
    results = _run_jobs(jobs, config.workers)
    n_train, n_val = config.n_train_landmarks, config.n_val_landmarks
    sfm = _write_sfm(root, results[:n_train], results[n_train : n_train + n_val], config)
    test = _write_test(root, results[n_train + n_val :])
    stats = {
        "sfm": sfm,
        "test": test,
        "kinds": {
            k: sum(r["kind"] == k for r in results) for k in ("facade", "corner", "box", "tower")
        },
    }
    info = {"version": VERSION, "hash": config.key(), "params": params, "stats": stats}
    (root / "world.json").write_text(json.dumps(info, indent=1, sort_keys=True))
    stats["seconds"] = time.perf_counter() - start
    log.info("synthetic world %s generated in %.1f s", root, stats["seconds"])
    return stats


# --------------------------------------------------------------------------------------------------
# Cache
# --------------------------------------------------------------------------------------------------


def as_config(config: SyntheticConfig | Mapping[str, Any] | None) -> SyntheticConfig:
    """A SyntheticConfig from None (defaults), a mapping of its fields or a config."""
    if config is None:
        return SyntheticConfig()
    if isinstance(config, SyntheticConfig):
        return config
    known = {f.name for f in fields(SyntheticConfig)}
    unknown = set(config) - known
    if unknown:
        raise ValueError(
            f"unknown synthetic world parameter(s) {sorted(unknown)}; valid: {sorted(known)}"
        )
    return SyntheticConfig(**dict(config))


def default_root(config: SyntheticConfig) -> Path:
    """``$RETRIEVAL_DATA/synthetic/<hash>`` or ``~/.cache/retrieval/synthetic/<hash>``."""
    base = os.environ.get("RETRIEVAL_DATA")
    parent = Path(base).expanduser() if base else Path.home() / ".cache" / "retrieval"
    return parent / "synthetic" / config.key()


def read_world_info(root: str | Path) -> dict[str, Any] | None:
    """The world's ``world.json`` content, or None when absent or unreadable."""
    try:
        return json.loads((Path(root) / "world.json").read_text())
    except (OSError, ValueError):
        return None


def ensure_world(
    root: str | Path | None = None,
    config: SyntheticConfig | Mapping[str, Any] | None = None,
    force: bool = False,
) -> Path:
    """The world folder for ``config``, generated only if missing or made with other parameters.

    The world is written into a temporary folder beside ``root`` and renamed into place, so an
    interrupted run never leaves a half-written world behind.
    """
    config = as_config(config)
    root = Path(root).expanduser() if root is not None else default_root(config)
    info = read_world_info(root)
    if not force and info is not None and info.get("hash") == config.key():
        return root
    if root.exists() and info is None and any(root.iterdir()):
        raise FileExistsError(
            f"{root} is not empty and holds no synthetic world (no world.json); "
            "choose an empty or new folder"
        )
    root.parent.mkdir(parents=True, exist_ok=True)
    tag = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp = root.parent / f".{root.name}.tmp-{tag}"
    try:
        generate_world(tmp, config)
        current = read_world_info(root)
        if not force and current is not None and current.get("hash") == config.key():
            return root  # another process finished the same world first
        old = root.parent / f".{root.name}.old-{tag}"
        if root.exists():
            os.rename(root, old)
        try:
            os.rename(tmp, root)
        except OSError:
            # Another process put a world in place meanwhile: keep it if it is ours.
            current = read_world_info(root)
            if current is None or current.get("hash") != config.key():
                raise
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return root


def ensure_pixel_groundtruth(root: str | Path, name: str = TEST_NAME) -> Path:
    """Write the test split's pixel labels in PROxford's format from its masks (once).

    Each positive db image's landmark mask becomes a labelme file ``pixel/labels/<image>.json``
    (outlines of its components, holes filled), and ``pixel/<name>_pair2labelpath.npy`` maps
    every query-positive pair to it: a db image shows one landmark, whole, as the query crop
    does. Returns the map's path; the map is written last, so its presence means complete.
    """
    from retrieval.eval.pixel import mask_to_polygons  # the geometry lives with the metrics

    path = formats.pair_labels_path(root, name)
    if path.is_file():
        return path
    bench = formats.load_revisitop(root, name, check_images=False)
    folder = formats.test_dir(root, name)
    labels: dict[tuple[int, int], str] = {}
    written: set[int] = set()
    for q, entry in enumerate(bench.gnd):
        for i in np.concatenate([entry["easy"], entry["hard"]]).astype(int):
            stem = bench.images[i].stem
            rel = f"labels/{stem}.json"
            if i not in written:
                mask = np.asarray(Image.open(folder / "masks" / f"{stem}.png")) > 127
                formats.write_labelme(
                    path.parent / rel,
                    mask_to_polygons(mask),
                    (mask.shape[1], mask.shape[0]),
                    f"../../jpg/{bench.images[i].name}",
                    label=f"landmark {stem.rsplit('_', 1)[0]}",
                )
                written.add(i)
            labels[(q, int(i))] = rel
    formats.write_pair_labels(path, labels)
    log.info("wrote pixel labels of %d pairs to %s", len(labels), path.parent)
    return path
