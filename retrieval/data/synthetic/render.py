"""Rendering a view: sky and ground, textured planes by inverse depth, the camera pipeline."""

from __future__ import annotations

import math
from io import BytesIO
from typing import Any

import numpy as np
from PIL import Image, ImageFilter

from retrieval.data.synthetic.geometry import Camera, Plane, cross
from retrieval.data.synthetic.landmarks import Landmark, Surface
from retrieval.data.synthetic.views import View


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
    n = plane.normal * np.linalg.norm(cross(plane.u, plane.v))
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
    n = cross(pl.u, pl.v)
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
