"""One landmark's photographs: views, qualifying queries, pixels and pair geometry.

:func:`build_landmark` is the unit of work of the world's worker processes (picklable in and out).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from retrieval.data.masks import mask_box
from retrieval.data.synthetic.geometry import Camera, visible_points
from retrieval.data.synthetic.landmarks import Landmark, make_landmark
from retrieval.data.synthetic.motifs import motif_bank
from retrieval.data.synthetic.pairs import EASY, HARD, classify_pairs, pair_geometry
from retrieval.data.synthetic.render import encode_jpeg, encode_mask, render_view
from retrieval.data.synthetic.views import CamSpec, View, sample_aspect, sample_view

log = logging.getLogger(__name__)

# Part of every landmark's seed, so the splits draw different landmarks.
_SPLIT_CODES = {"train": 1, "val": 2, "test": 3}


@dataclass
class Shots:
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


def db_shots(rng: np.random.Generator, lm: Landmark, n: int, max_side: int) -> Shots:
    """``n`` database views that each see enough of the landmark."""
    shots = Shots()
    min_visible = max(20, int(0.05 * len(lm.points)))
    while len(shots.views) < n:
        shot = _sample_shot(rng, lm, max_side, "db", min_visible)
        if shot is not None:
            shots.add(*shot)
    return shots


def _labels_against(
    lm: Landmark, vis: np.ndarray, depth: np.ndarray, view: View, db: Shots
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
            sample_aspect(rng),
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
            sample_aspect(rng),
            float(rng.normal(0, 3)),
        )
    zoom = rng.choice([rng.uniform(0.4, 0.6), rng.uniform(1.9, 2.6)])
    return CamSpec(
        spec.azimuth + rng.uniform(-10, 10),
        spec.distance * zoom,
        spec.height,
        spec.target,
        spec.fov,
        sample_aspect(rng),
        float(rng.normal(0, 3)),
    )


def choose_queries(
    rng: np.random.Generator, lm: Landmark, db: Shots, n_queries: int, max_side: int
) -> Shots:
    """Queries with at least one easy and one hard positive, adding database views if needed."""
    queries = Shots()
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


def _single(view: View, vis: np.ndarray, depth: np.ndarray) -> Shots:
    shots = Shots()
    shots.add(view, vis, depth)
    return shots


def _render_all(lm: Landmark, shots: Shots) -> tuple[list[bytes], list[bytes], list[Any]]:
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
    db = db_shots(rng, lm, params["views_per_landmark"], params["max_side"])
    out: dict[str, Any] = {"kind": lm.kind, "n_points": len(lm.points)}
    if split == "test":
        queries = choose_queries(rng, lm, db, params["queries_per_landmark"], params["max_side"])
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
