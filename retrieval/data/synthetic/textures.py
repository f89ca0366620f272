"""RGBA textures (alpha = solid) of walls, porches, roofs, background buildings and occluders."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from retrieval.data.synthetic.motifs import MotifBank, Style, glyphs
from retrieval.data.synthetic.palette import ACCENTS, GLASS, WALLS, pick, shade

_TEX_PPU = 32.0  # texture pixels per world unit on landmark walls


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


def top_height(top: str, width: float) -> float:
    """Height in units of a wall's top shape (gable, steps, battlements, dome) above its top."""
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


@dataclass
class _Canvas:
    """A facade texture's canvas: its size, scale and grid of bays and floors."""

    width: float  # wall width in units
    height: float  # wall height in units, without the top shape
    top_u: float  # height of the top shape in units
    ppu: float  # texels per unit
    w: int  # texels
    h_wall: int
    h_top: int
    n_bays: int
    margin: float  # units left and right of the bays
    floors: list[float]  # heights of the floor lines in units, from the ground

    @property
    def h(self) -> int:
        """Texture height in texels (wall and top shape)."""
        return self.h_wall + self.h_top

    def y(self, units: float) -> float:
        """Texture row of a height in units."""
        return self.h - units * self.ppu


def _facade_canvas(style: Style, width: float, height: float, top: str, ppu: float) -> _Canvas:
    """Size of the texture and the bays and floors the style fits on the wall."""
    top_u = top_height(top, width)
    n_bays = max(1, int((width - 0.8) / style.bay_w))
    margin = (width - n_bays * style.bay_w) / 2
    floors = [0.0, style.ground_h]
    while floors[-1] + style.floor_h <= height - 0.5:
        floors.append(floors[-1] + style.floor_h)
    w, h_wall, h_top = round(width * ppu), round(height * ppu), round(top_u * ppu)
    return _Canvas(width, height, top_u, ppu, w, h_wall, h_top, n_bays, margin, floors)


def _draw_masonry(d: ImageDraw.ImageDraw, style: Style, canvas: _Canvas) -> None:
    """Brick joints over the whole wall, rusticated stone on the ground floor."""
    w, h, y_of = canvas.w, canvas.h, canvas.y
    if style.brick:
        joint = shade(style.wall, 0.82)
        for y in np.arange(0.0, canvas.height + canvas.top_u, 0.28):
            d.line([(0, y_of(y)), (w, y_of(y))], fill=joint, width=1)
    if style.rusticated:
        d.rectangle([0, y_of(style.ground_h), w, h], fill=shade(style.wall, 0.8))
        for y in np.arange(0.0, style.ground_h, 0.6):
            d.line([(0, y_of(y)), (w, y_of(y))], fill=shade(style.wall, 0.62), width=2)


def _draw_bands(d: ImageDraw.ImageDraw, style: Style, canvas: _Canvas) -> None:
    """Pilasters between the bays, cornices along the floors and a band under the top."""
    w, ppu, y_of, height = canvas.w, canvas.ppu, canvas.y, canvas.height
    if style.pilasters:
        for b in range(canvas.n_bays + 1):
            x = (canvas.margin + b * style.bay_w) * ppu
            d.rectangle(
                [x - 0.14 * ppu, y_of(height), x + 0.14 * ppu, y_of(style.ground_h)],
                fill=shade(style.trim, 0.95),
            )
    if style.cornice:
        for y in canvas.floors[1:]:
            d.rectangle([0, y_of(y + 0.12), w, y_of(y - 0.12)], fill=style.trim)
    d.rectangle([0, y_of(height), w, y_of(height - 0.35)], fill=shade(style.trim, 0.9))


def _draw_openings(img: Image.Image, style: Style, canvas: _Canvas, skip_centre_top: bool) -> None:
    """The door and shop windows of the ground floor, a window per bay on the floors above."""
    ppu, y_of, n_bays, floors = canvas.ppu, canvas.y, canvas.n_bays, canvas.floors
    centre_bay = n_bays // 2
    for f, (y0, y1) in enumerate(zip(floors[:-1], floors[1:], strict=False)):
        for b in range(n_bays):
            cx = (canvas.margin + (b + 0.5) * style.bay_w) * ppu
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
                continue  # the emblem takes this bay
            tile = _window_for(style, f, b, n_bays)
            half_w = style.win_w * style.bay_w * ppu / 2
            mid = y_of(y0 + 0.48 * (y1 - y0))
            half_h = style.win_h * (y1 - y0) * ppu / 2
            _paste(img, tile, (cx - half_w, mid - half_h, cx + half_w, mid + half_h))


def _draw_sign(img: Image.Image, d: ImageDraw.ImageDraw, style: Style, canvas: _Canvas) -> None:
    """The shared sign board above the ground floor, lettered uniquely for this landmark."""
    w, ppu, y_of = canvas.w, canvas.ppu, canvas.y
    sw = min(canvas.width * 0.6, 7.0)
    box = (
        w / 2 - sw * ppu / 2,
        y_of(style.ground_h - 0.1),
        w / 2 + sw * ppu / 2,
        y_of(style.ground_h - 0.1) + 0.55 * ppu,
    )
    _paste(img, style.sign, box)
    lr = np.random.default_rng(style.lettering_seed)
    glyphs(
        d,
        (box[0] + 0.2 * ppu, box[1] + 0.12 * ppu, box[2] - 0.2 * ppu, box[3] - 0.12 * ppu),
        int(lr.integers(4, 9)),
        (250, 245, 230),
        lr,
        3,
    )


def _draw_ornaments(img: Image.Image, style: Style, canvas: _Canvas) -> None:
    """An ornament at every bay line above the ground floor."""
    ppu, y_of = canvas.ppu, canvas.y
    y = canvas.floors[1] + 0.2
    for b in range(canvas.n_bays):
        cx = (canvas.margin + b * style.bay_w) * ppu
        _paste(img, style.ornament, (cx - 0.3 * ppu, y_of(y + 0.6), cx + 0.3 * ppu, y_of(y)))


def _draw_emblem(img: Image.Image, style: Style, canvas: _Canvas, top: str) -> None:
    """The emblem in the top shape, or in the centre bay of the top floor under a flat top."""
    w, ppu, y_of, top_u, floors = canvas.w, canvas.ppu, canvas.y, canvas.top_u, canvas.floors
    size = min(2.6, 0.45 * canvas.width, max(top_u * 0.7, 1.6))
    if top in ("gable", "stepped", "dome"):
        cy = y_of(canvas.height + 0.4 * top_u)
    else:
        cy = y_of(floors[-2] + 0.5 * (floors[-1] - floors[-2]))
    half = size * ppu / 2
    _paste(img, style.emblem, (w / 2 - half, cy - half, w / 2 + half, cy + half))


def _weathered(
    img: Image.Image, rng: np.random.Generator, canvas: _Canvas, top: str
) -> Image.Image:
    """Smooth brightness variation, darker near the ground, cut out along the silhouette."""
    w, h, ppu = canvas.w, canvas.h, canvas.ppu
    arr = np.asarray(img, dtype=np.float32)
    dirt = 0.88 + 0.2 * _noise_field(rng, w, h, 6)
    dirt *= np.clip(0.8 + 0.2 * (h - np.arange(h, dtype=np.float32)) / (1.5 * ppu), 0.8, 1.0)[
        ::-1, None
    ]
    rgb = np.clip(arr[..., :3] * dirt[..., None], 0, 255).astype(np.uint8)
    alpha_img = Image.new("L", (w, h), 0)
    _silhouette(ImageDraw.Draw(alpha_img), top, w, canvas.h_wall, canvas.h_top, rng)
    out = Image.fromarray(rgb, "RGB").convert("RGBA")
    out.putalpha(alpha_img)
    return out


def facade_texture(
    rng: np.random.Generator,
    style: Style,
    width: float,
    height: float,
    top: str,
    feature: bool,
    ppu: float = _TEX_PPU,
) -> Image.Image:
    """RGBA texture of a wall ``width`` x ``height`` units plus its top shape (alpha = solid).

    ``feature`` marks the landmark's main wall, the one that carries its sign and emblem.
    """
    canvas = _facade_canvas(style, width, height, top, ppu)
    img = Image.new("RGBA", (canvas.w, canvas.h), (*style.wall, 255))
    d = ImageDraw.Draw(img)
    _draw_masonry(d, style, canvas)
    _draw_bands(d, style, canvas)
    skip_centre_top = feature and style.emblem is not None and top in ("flat", "crenel")
    _draw_openings(img, style, canvas, skip_centre_top)
    if style.sign is not None and feature:
        _draw_sign(img, d, style, canvas)
    if style.ornament is not None and len(canvas.floors) > 2:
        _draw_ornaments(img, style, canvas)
    if style.emblem is not None and feature:
        _draw_emblem(img, style, canvas, top)
    return _weathered(img, rng, canvas, top)


def arcade_texture(
    rng: np.random.Generator, style: Style, width: float, height: float, ppu: float = _TEX_PPU
) -> Image.Image:
    """RGBA porch front: columns and arches with see-through openings."""
    w, h = round(width * ppu), round(height * ppu)
    colour = pick(rng, [style.trim, shade(style.wall, 1.1), shade(style.wall, 0.85)])
    img = Image.new("RGBA", (w, h), (*colour, 255))
    d = ImageDraw.Draw(img)
    band = 0.22 * h
    d.rectangle([0, 0, w, band], fill=shade(colour, 0.85))
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
            fill=shade(colour, 0.7),
            width=3,
        )
    img.putalpha(alpha_img)
    return img


def roof_texture(rng: np.random.Generator, width: float, depth: float) -> Image.Image:
    """RGBA flat roof (gravel grey or tar)."""
    w, h = max(4, round(width * 8)), max(4, round(depth * 8))
    base = np.array(pick(rng, [(110, 105, 100), (70, 70, 75), (130, 120, 110)]), np.float32)
    rgb = base * (0.85 + 0.3 * _noise_field(rng, w, h, 8))[..., None]
    return Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8), "RGB").convert("RGBA")


def background_building_texture(
    rng: np.random.Generator, bank: MotifBank, width: float, height: float
) -> Image.Image:
    """RGBA low-detail building for the surroundings, from the shared bank."""
    ppu = 8.0
    w, h = round(width * ppu), round(height * ppu)
    wall = shade(pick(rng, WALLS), rng.uniform(0.8, 1.0))
    img = Image.new("RGBA", (w, h), (*wall, 255))
    tile = pick(rng, bank.windows)
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
        skin = pick(rng, [(230, 190, 160), (180, 130, 95), (120, 80, 55)])
        d.ellipse([w * 0.32, 0, w * 0.68, h * 0.14], fill=(*skin, 255))
        d.rounded_rectangle(
            [w * 0.12, h * 0.14, w * 0.88, h * 0.58],
            radius=w * 0.2,
            fill=(*pick(rng, ACCENTS + GLASS), 255),
        )
        legs = (*pick(rng, [(40, 40, 60), (60, 50, 40), (20, 20, 20)]), 255)
        d.rectangle([w * 0.2, h * 0.56, w * 0.46, h], fill=legs)
        d.rectangle([w * 0.54, h * 0.56, w * 0.8, h], fill=legs)
    elif kind == "lamp":
        d.rectangle([w * 0.42, h * 0.1, w * 0.58, h], fill=(35, 35, 40, 255))
        d.rectangle([w * 0.1, 0, w * 0.9, h * 0.12], fill=(45, 45, 50, 255))
        d.ellipse([w * 0.2, h * 0.02, w * 0.8, h * 0.1], fill=(250, 235, 180, 255))
    elif kind == "car":
        body = (*pick(rng, ACCENTS + [(200, 200, 205), (240, 240, 240)]), 255)
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
        board = pick(rng, ACCENTS)
        d.rectangle([0, 0, w - 1, h * 0.35], fill=(*board, 255))
        glyphs(
            d,
            (w * 0.1, h * 0.05, w * 0.9, h * 0.3),
            int(rng.integers(2, 5)),
            (245, 245, 240),
            rng,
            2,
        )
    return img
