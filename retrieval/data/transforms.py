"""Image loading, resizing, cropping and batching of variable-size images."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torchvision.transforms.functional import normalize, pil_to_tensor

from retrieval.types import Box

# Full-scale values of gray images deeper than 8 bits, smallest first: 8-bit value = v * 255 / it.
_FLOAT_RANGES = (1.0, 255.0, 65535.0)
_INT32_MAX = 2**31 - 1


@contextmanager
def open_image(path: str | Path) -> Iterator[Image.Image]:
    """`Image.open` with one clear error naming the file: missing, unreadable or too large."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"Image not found: {path}. Check the data root (paths.data_root) and the dataset layout"
        )
    try:
        with Image.open(path) as img:
            yield img
    except Image.DecompressionBombError as err:  # its own message never names the file
        raise ValueError(
            f"Image too large to decode safely: {path} ({err}). Shrink or remove it; if you trust "
            "the file, raise PIL.Image.MAX_IMAGE_PIXELS."
        ) from None
    except (UnidentifiedImageError, OSError, SyntaxError) as err:
        reason = err or "empty file"
        raise ValueError(
            f"Corrupt or unreadable image: {path} ({reason}). Re-download or remove it."
        ) from None


def load_image(path: str | Path) -> Image.Image:
    """Open an image as 8-bit RGB (`to_rgb`), with an error naming the file when it is bad."""
    with open_image(path) as img:
        img.load()  # decode now: errors name the file, and the pixels outlive it
        return to_rgb(img)


def to_rgb(img: Image.Image) -> Image.Image:
    """8-bit RGB of a photo in any mode; alpha is dropped (not composited), as Pillow does.

    Gray images deeper than 8 bits (I;16*, I, F) are scaled from their range, not clipped:
    16-bit by 255/65535; I by its 16-bit range when the values fit, else by 2**31 - 1; F by the
    smallest of 1, 255 and 65535 holding its maximum (else the maximum). CMYK uses Pillow's
    (255 - C)(255 - K)/255; palette and 8-bit gray modes are looked up or replicated.
    """
    if img.mode == "RGB":
        return img.copy()  # a new image, as convert() gives: it outlives the opened file
    if img.mode.startswith("I") or img.mode == "F":
        return Image.fromarray(_gray_to_uint8(np.asarray(img)), "L").convert("RGB")
    if img.mode == "P" and "transparency" in img.info:  # Pillow's advice: through RGBA
        img = img.convert("RGBA")
    return img.convert("RGB")


def _gray_to_uint8(values: np.ndarray) -> np.ndarray:
    """A deep gray array scaled to uint8 by its full-scale value (negatives and NaN black)."""
    full = _full_scale(values)
    scaled = np.nan_to_num(values.astype(np.float32), nan=0.0, posinf=full, neginf=0.0)
    return np.rint(np.clip(scaled * np.float32(255.0 / full), 0, 255)).astype(np.uint8)


def _full_scale(values: np.ndarray) -> float:
    """The value shown as white: the 16-bit range, or the range the data fits for I and F."""
    if values.dtype.itemsize <= 2:
        return 65535.0
    if values.dtype.kind == "f":
        peak = float(values[np.isfinite(values)].max(initial=0.0))
        return next((r for r in _FLOAT_RANGES if peak <= r), peak)
    return 65535.0 if int(values.max(initial=0)) <= 65535 else float(_INT32_MAX)


# cirtorch's imresize: PIL's thumbnail with Image.ANTIALIAS, the old name of LANCZOS
RESAMPLE = Image.Resampling.LANCZOS
_REDUCING_GAP = 2.0  # thumbnail's default: reduce() by an integer factor first, then LANCZOS


def resize_longest(img: Image.Image, max_side: float, upscale: bool = False) -> Image.Image:
    """Shrink so that the longest side is at most `max_side`, keeping the aspect ratio.

    Exactly cirtorch's `imresize` (``img.thumbnail((s, s), ANTIALIAS)``): `max_side` is floored,
    the size is thumbnail's and so is the LANCZOS resampling; images are only shrunk unless
    `upscale` is set (pictures only; never on the descriptor path).
    """
    w, h = img.size
    side = max(1, math.floor(max_side))
    if side >= max(w, h):
        if not upscale or side == max(w, h):
            return img
        return img.resize(thumbnail_size(w, h, side, upscale=True), RESAMPLE)
    # what thumbnail does on a decoded image (no JPEG draft), without its in-place copy
    return img.resize(thumbnail_size(w, h, side), RESAMPLE, reducing_gap=_REDUCING_GAP)


def thumbnail_size(w: int, h: int, side: int, upscale: bool = False) -> tuple[int, int]:
    """(w, h) that ``PIL.Image.thumbnail((side, side))`` gives a w x h image.

    The scaled side is floored or ceiled, whichever keeps the aspect ratio closer (Pillow's
    ``preserve_aspect_ratio``); with `upscale` the same rule enlarges.
    """
    if side >= w and side >= h and not upscale:
        return w, h
    aspect = w / h
    if aspect <= 1:  # x / y >= aspect with x == y == side: width follows
        return _closest(side * aspect, lambda n: abs(aspect - n / side)), side
    return side, _closest(side / aspect, lambda n: 0 if n == 0 else abs(aspect - side / n))


def _closest(number: float, error: Callable[[int], float]) -> int:
    """floor or ceil of `number`, whichever has the smaller `error` (floor on a tie), at least 1."""
    return max(min(math.floor(number), math.ceil(number), key=error), 1)


def clip_box(box: Box, size: tuple[int, int]) -> tuple[int, int, int, int]:
    """A query box checked, rounded to pixels and clipped to an image of `size` (W, H).

    The one check of every query box (ground truth, the search tool, users): a crop is never
    larger than its image. Non-finite, inverted, outside or empty boxes raise ValueError.
    """
    values = _box_values(box)
    if not all(math.isfinite(v) for v in values):
        raise ValueError(f"Invalid query box {box}: non-finite coordinates; give 4 pixel numbers.")
    x1, y1, x2, y2 = values
    if not (x2 > x1 and y2 > y1):
        raise ValueError(f"Invalid query box {box}: expected x1 < x2 and y1 < y2.")
    w, h = size
    left, right = (min(max(round(v), 0), w) for v in (x1, x2))
    top, bottom = (min(max(round(v), 0), h) for v in (y1, y2))
    if right <= left or bottom <= top:
        raise ValueError(
            f"Invalid query box {box}: outside the {w} x {h} image (or empty once clipped to it); "
            f"give x1 y1 x2 y2 within 0 0 {w} {h}."
        )
    return left, top, right, bottom


def _box_values(box: Box) -> tuple[float, ...]:
    """The box's 4 numbers as floats, or a ValueError naming it."""
    try:
        values = tuple(float(v) for v in box)
    except (TypeError, ValueError):
        values = ()
    if len(values) != 4:
        raise ValueError(f"Invalid query box {box!r}: a box is 4 numbers x1 y1 x2 y2.")
    return values


def _crop_side(max_side: int, crop_side: int, full_side: int) -> int:
    """cirtorch v1.2: a crop is resized to max_side * max(crop) / max(full), floored by
    thumbnail (same scale as the full image; rounding would give 1 px more in ~40% of crops)."""
    return max(1, math.floor(max_side * crop_side / full_side))


def prepared_size(size: tuple[int, int], max_side: int, box: Box | None = None) -> tuple[int, int]:
    """(H, W) that `prepare_image` gives an image of `size` (W, H), without decoding it."""
    w, h = size
    side = max_side
    if box is not None:
        x1, y1, x2, y2 = clip_box(box, size)
        side = _crop_side(max_side, max(x2 - x1, y2 - y1), max(w, h))
        w, h = x2 - x1, y2 - y1
    new_w, new_h = thumbnail_size(w, h, side)  # prepare_image only shrinks
    return new_h, new_w


def crop_box(img: Image.Image, box: Box | None) -> Image.Image:
    """Crop a query box, clipped to the image (None: the whole image)."""
    return img if box is None else img.crop(clip_box(box, img.size))


def to_tensor(img: Image.Image, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """PIL image to a normalised float tensor 3 x H x W."""
    return normalize_pixels(pil_to_tensor(img), mean, std)


def normalize_pixels(
    pixels: torch.Tensor, mean: Sequence[float], std: Sequence[float]
) -> torch.Tensor:
    """uint8 pixels (... x 3 x H x W) to normalised float32, on the pixels' device."""
    return normalize(pixels.float().div_(255.0), list(mean), list(std))


def prepare_pixels(path: str | Path, max_side: int, box: Box | None = None) -> torch.Tensor:
    """Load, optionally crop a query box and shrink to `max_side` (crops to scale): uint8 3xHxW.

    uint8 is a quarter of the float bytes to move to the device, where `normalize_pixels` runs.
    """
    img = load_image(path)
    crop = crop_box(img, box)
    side = max_side if box is None else _crop_side(max_side, max(crop.size), max(img.size))
    return pil_to_tensor(resize_longest(crop, side))


def prepare_image(
    path: str | Path,
    max_side: int,
    mean: Sequence[float],
    std: Sequence[float],
    box: Box | None = None,
) -> torch.Tensor:
    """`prepare_pixels`, normalised: the network's float input 3 x H x W."""
    return normalize_pixels(prepare_pixels(path, max_side, box), mean, std)


def pad_batch(images: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack 3 x h_i x w_i tensors into a batch zero-padded at the bottom/right, and sizes B x 2."""
    sizes = torch.tensor([[img.shape[-2], img.shape[-1]] for img in images], dtype=torch.long)
    h, w = (int(v) for v in sizes.max(dim=0).values)
    batch = images[0].new_zeros((len(images), images[0].shape[0], h, w))
    for i, img in enumerate(images):
        batch[i, :, : img.shape[-2], : img.shape[-1]] = img
    return batch, sizes
