"""Image loading, resizing, cropping and batching of variable-size images."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from PIL import Image, UnidentifiedImageError
from torchvision.transforms.functional import normalize, pil_to_tensor

from retrieval.types import Box


def load_image(path: str | Path) -> Image.Image:
    """Open an image as RGB, with an error naming the file when it is missing or unreadable."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Image not found: {path}. Check data.root and the dataset layout.")
    try:
        with Image.open(path) as img:
            return img.convert("RGB")
    except (UnidentifiedImageError, OSError) as err:
        raise ValueError(
            f"Corrupt or unreadable image: {path} ({err}). Re-download or remove it."
        ) from err


def resize_longest(img: Image.Image, max_side: int, upscale: bool = False) -> Image.Image:
    """Resize so that the longest side is `max_side`, keeping the aspect ratio.

    Like cirtorch's `imresize` (a thumbnail), images are only shrunk unless `upscale` is set.
    """
    w, h = img.size
    if max_side >= max(w, h) and not upscale:
        return img
    return img.resize(_scaled(w, h, max_side), Image.Resampling.BICUBIC)


def _scaled(w: int, h: int, max_side: int) -> tuple[int, int]:
    """(w, h) scaled so that the longest side is `max_side`."""
    scale = max_side / max(w, h)
    return max(1, round(w * scale)), max(1, round(h * scale))


def _pixel_box(box: Box) -> tuple[int, int, int, int]:
    """A query box validated and rounded to pixels, as it is cropped."""
    x1, y1, x2, y2 = (float(v) for v in box)
    if not (x2 > x1 and y2 > y1):
        raise ValueError(f"Invalid query box {box}: expected x1 < x2 and y1 < y2.")
    return round(x1), round(y1), round(x2), round(y2)


def _crop_side(max_side: int, crop_side: int, full_side: int) -> int:
    """cirtorch v1.2: a crop is resized with max_side * max(crop) / max(full) (same scale)."""
    return max(1, round(max_side * crop_side / full_side))


def prepared_size(size: tuple[int, int], max_side: int, box: Box | None = None) -> tuple[int, int]:
    """(H, W) that `prepare_image` gives an image of `size` (W, H), without decoding it."""
    w, h = size
    side = max_side
    if box is not None:
        x1, y1, x2, y2 = _pixel_box(box)
        side = _crop_side(max_side, max(x2 - x1, y2 - y1), max(w, h))
        w, h = x2 - x1, y2 - y1
    if side >= max(w, h):  # prepare_image only shrinks
        return h, w
    new_w, new_h = _scaled(w, h, side)
    return new_h, new_w


def crop_box(img: Image.Image, box: Box | None) -> Image.Image:
    """Crop a query box (None: the whole image)."""
    return img if box is None else img.crop(_pixel_box(box))


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
