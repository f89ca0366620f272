"""Views of a landmark: where the camera stands, the occluders before it and its look."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from retrieval.data.synthetic.geometry import UP, Camera, cross, look_at
from retrieval.data.synthetic.landmarks import Landmark, Surface
from retrieval.data.synthetic.palette import SKIES, pick
from retrieval.data.synthetic.textures import occluder_texture


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


def sample_aspect(rng: np.random.Generator) -> float:
    """A photograph's width / height: common formats, portrait three times in ten."""
    aspect = pick(rng, [4 / 3, 4 / 3, 3 / 2, 16 / 9, 1.0, 5 / 4])
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
        aspect=sample_aspect(rng),
        roll=float(rng.normal(0, 3) + (rng.random() < 0.1) * rng.normal(0, 10)),
    )


def _wall_azimuth(rng: np.random.Generator, lm: Landmark, spread: float) -> float:
    """An azimuth within ``spread`` degrees of a wall's normal, inside the allowed range."""
    walls = [a for a in lm.wall_azimuths if _azimuth_ok(lm, a)]
    az = pick(rng, walls) + rng.uniform(-spread, spread)
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
        aspect=sample_aspect(rng),
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
        kind = pick(rng, ["tree", "tree", "person", "person", "lamp", "car", "sign"])
        w, h = (s * rng.uniform(0.8, 1.25) for s in sizes[kind])
        x = rng.uniform(0.05, 0.95) * cam.width
        ray = cam.ray_matrix @ np.array([x, cam.height / 2, 1.0])
        ray[1] = 0.0
        ray /= np.linalg.norm(ray)
        dist = rng.uniform(3.0, 14.0)
        base = cam.centre + ray * dist
        base[1] = 0.0
        n = -ray
        u = cross(UP, n)
        tex = occluder_texture(rng, kind, w, h)
        out.append(Surface.from_texture(base - u * w / 2, u * w, UP * h, tex, landmark=False))
    return out


def _sample_look(rng: np.random.Generator, mild: bool) -> dict[str, Any]:
    """Lighting, sky and camera-pipeline parameters of one photograph."""
    k = 0.5 if mild else 1.0
    zenith, horizon = pick(rng, SKIES)
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
