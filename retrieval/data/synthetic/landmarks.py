"""Landmarks: textured surfaces, the 3D points sampled on them, surroundings and ground."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image

from retrieval.data.synthetic.geometry import UP, Plane, cross
from retrieval.data.synthetic.motifs import MotifBank, Style, sample_style
from retrieval.data.synthetic.palette import pick
from retrieval.data.synthetic.textures import (
    arcade_texture,
    background_building_texture,
    facade_texture,
    roof_texture,
    top_height,
)


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
    u = cross(UP, n)
    tex = facade_texture(rng, style, width, height, top, feature)
    total = height + top_height(top, width)
    origin = offset * n - u * width / 2
    return Surface.from_texture(origin, u * width, UP * total, tex, landmark=True)


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
    kind = pick(rng, ["facade", "facade", "corner", "corner", "box", "box", "tower"])
    style = sample_style(rng, bank)
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
    top_u = max(top_height(style.top, 2 * a), 0.0)
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
        u = cross(UP, n)
        origin = -n * dist - u * width / 2
        tex = background_building_texture(rng, bank, width, height)
        out.append(Surface.from_texture(origin, u * width, UP * height, tex, landmark=False))
    return out


def _sample_ground(rng: np.random.Generator) -> dict[str, Any]:
    """Ground surface of a landmark's square: paving, cobbles, asphalt or grass."""
    kind = pick(rng, ["paving", "paving", "cobble", "asphalt", "grass"])
    base = {
        "paving": pick(rng, [(175, 170, 160), (190, 180, 160), (150, 150, 150)]),
        "cobble": pick(rng, [(120, 110, 100), (140, 130, 115)]),
        "asphalt": (75, 75, 80),
        "grass": pick(rng, [(80, 120, 55), (100, 130, 60)]),
    }[kind]
    tile = {"paving": rng.uniform(1.0, 2.2), "cobble": 0.4, "asphalt": 3.0, "grass": 0.25}[kind]
    joint = {"paving": 0.05, "cobble": 0.12, "asphalt": 0.0, "grass": 0.0}[kind]
    variation = {"paving": 0.12, "cobble": 0.3, "asphalt": 0.06, "grass": 0.35}[kind]
    return {"base": base, "tile": float(tile), "joint": joint, "variation": variation}
