"""Legends of pictures: what each colour means (a swatch beside its meaning) and column titles."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from PIL import Image, ImageDraw, ImageFont

Colour = tuple[int, int, int]

LEGEND_TEXT: Colour = (0, 0, 0)
LEGEND_PAPER: Colour = (255, 255, 255)
LINE = 16  # height of one legend line, and of the strip of column titles
SWATCH = 10  # side of one colour square
PAD = 4  # left margin, and space between a swatch and its text
SPACING = 12  # space between two entries of a line
OUTLINE = 2  # line width of an outline swatch


@dataclass(frozen=True)
class Key:
    """One legend entry: its meaning and its swatch: one colour, a filled square; several, a
    gradient from the first (low) to the last (high); ``outline``, hollow squares (the picture's
    boxes), one per colour; no colour, text only."""

    text: str
    colours: tuple[Colour, ...] = ()
    outline: bool = False

    @property
    def swatch_width(self) -> int:
        """Pixels the swatch takes, the space before the text included."""
        if not self.colours:
            return 0
        squares = len(self.colours) if self.outline else (3 if len(self.colours) > 1 else 1)
        return squares * SWATCH + (squares - 1) * 2 * self.outline + PAD

    def width(self, font: ImageFont.ImageFont | ImageFont.FreeTypeFont) -> int:
        """Pixels the whole entry takes on a line."""
        return self.swatch_width + math.ceil(font.getlength(self.text))


def legend_font() -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """The font of every legend and title (Pillow's built-in one: no font file needed)."""
    return ImageFont.load_default()


def legend_lines(keys: Sequence[Key], width: int) -> list[list[Key]]:
    """The keys in order, wrapped into lines of at most ``width`` pixels (a longer key alone)."""
    font, lines, x = legend_font(), [[]], PAD
    for key in keys:
        entry = key.width(font)
        if lines[-1] and x + entry > width - PAD:
            lines.append([])
            x = PAD
        lines[-1].append(key)
        x += entry + SPACING
    return [line for line in lines if line]


def legend_size(keys: Sequence[Key], width: int) -> tuple[int, int]:
    """(width, height) of the legend of ``keys`` wrapped at ``width`` (wider if a key is)."""
    font = legend_font()
    lines = legend_lines(keys, width)
    widest = max(
        (PAD + sum(k.width(font) for k in line) + SPACING * (len(line) - 1) for line in lines),
        default=0,
    )
    return max(width, widest + PAD), LINE * len(lines)


def _gradient(colours: Sequence[Colour], t: float) -> Colour:
    """The colour at ``t`` in [0, 1] of a piecewise-linear gradient through ``colours``."""
    position = t * (len(colours) - 1)
    k = min(int(position), len(colours) - 2)
    a, b, f = colours[k], colours[k + 1], position - k
    return tuple(round(ca + (cb - ca) * f) for ca, cb in zip(a, b, strict=True))  # type: ignore[return-value]


def _draw_swatch(draw: ImageDraw.ImageDraw, key: Key, x: int, y: int) -> None:
    if key.outline:
        for colour in key.colours:
            draw.rectangle((x, y, x + SWATCH - 1, y + SWATCH - 1), outline=colour, width=OUTLINE)
            x += SWATCH + 2
    elif len(key.colours) == 1:
        draw.rectangle((x, y, x + SWATCH - 1, y + SWATCH - 1), fill=key.colours[0])
    elif key.colours:
        span = key.swatch_width - PAD
        for i in range(span):
            colour = _gradient(key.colours, i / max(1, span - 1))
            draw.line((x + i, y, x + i, y + SWATCH - 1), fill=colour)


def draw_legend(draw: ImageDraw.ImageDraw, keys: Sequence[Key], top: int, width: int) -> None:
    """Draw the keys from ``top`` down, a swatch then its meaning, wrapped at ``width``."""
    font = legend_font()
    for row, line in enumerate(legend_lines(keys, width)):
        x, y = PAD, top + row * LINE
        for key in line:
            _draw_swatch(draw, key, x, y + 3)
            draw.text((x + key.swatch_width, y + 2), key.text, fill=LEGEND_TEXT, font=font)
            x += key.width(font) + SPACING


def with_legend(
    picture: Image.Image, keys: Sequence[Key], titles: Sequence[tuple[int, str]] = ()
) -> Image.Image:
    """The picture with ``titles`` (x, text) above its columns, if any, and its legend below."""
    top = LINE if titles else 0
    width, height = legend_size(keys, picture.width)
    canvas = Image.new("RGB", (width, top + picture.height + height), LEGEND_PAPER)
    canvas.paste(picture.convert("RGB"), (0, top))
    draw = ImageDraw.Draw(canvas)
    for x, text in titles:
        draw.text((x + 1, 2), text, fill=LEGEND_TEXT, font=legend_font())
    draw_legend(draw, keys, top + picture.height, width)
    return canvas
