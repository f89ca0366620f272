"""Training-image augmentation: random crops, quarter turns and colour jitter of tuple images.

cirtorch trains on plain resized images; naver's deep-image-retrieval crops, tilts and jitters
them. Mining and evaluation always see plain images: only the images a training step back-
propagates through are changed. Each image's draw depends on (seed, epoch, tuple, position)
only, so a resumed run or another worker count sees the same images.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torchvision.transforms.v2.functional as TF
from PIL import Image

from retrieval.data.transforms import RESAMPLE, resize_longest


@dataclass(frozen=True)
class Augmentation:
    """What is drawn per training image; the defaults change nothing."""

    crop: float = 1.0  # keep a random crop of at least this share of the area (1.0: no crop)
    rotate90: float = 0.0  # probability of a quarter turn, left or right (photos kept sideways)
    color: float = 0.0  # brightness, contrast and saturation each scaled in [1 - c, 1 + c]

    def __post_init__(self) -> None:
        if not 0.0 < self.crop <= 1.0:
            raise ValueError(f"crop={self.crop}: use an area share in (0, 1]")
        if not 0.0 <= self.rotate90 <= 1.0:
            raise ValueError(f"rotate90={self.rotate90}: use a probability in [0, 1]")
        if not 0.0 <= self.color < 1.0:
            raise ValueError(f"color={self.color}: use a strength in [0, 1)")

    @property
    def active(self) -> bool:
        return self.crop < 1.0 or self.rotate90 > 0.0 or self.color > 0.0

    def geometry(
        self, img: Image.Image, size: tuple[int, int], rng: np.random.Generator
    ) -> Image.Image:
        """The crop, resized to `size` (the plain image's prepared size: an image keeps its
        shape, so the backbone's kernels built for one shape serve every epoch), then the
        quarter turn."""
        if self.crop < 1.0:
            img = random_crop(img, self.crop, rng).resize(size, RESAMPLE)
        else:
            img = resize_longest(img, max(size))
        if rng.random() < self.rotate90:
            turn = Image.Transpose.ROTATE_90 if rng.random() < 0.5 else Image.Transpose.ROTATE_270
            img = img.transpose(turn)
        return img

    def colour(self, img: Image.Image, rng: np.random.Generator) -> Image.Image:
        """The colour jitter, on the shrunk image (cheaper than on the full one)."""
        if self.color > 0.0:
            low, high = 1.0 - self.color, 1.0 + self.color
            img = TF.adjust_brightness(img, float(rng.uniform(low, high)))
            img = TF.adjust_contrast(img, float(rng.uniform(low, high)))
            img = TF.adjust_saturation(img, float(rng.uniform(low, high)))
        return img


def random_crop(img: Image.Image, min_area: float, rng: np.random.Generator) -> Image.Image:
    """A crop of a random share of the area in [min_area, 1], aspect ratio within 3/4..4/3 of
    the image's, at a random place."""
    width, height = img.size
    area = float(rng.uniform(min_area, 1.0))
    stretch = math.exp(float(rng.uniform(math.log(3 / 4), math.log(4 / 3))))
    crop_w = min(width, max(1, round(width * math.sqrt(area * stretch))))
    crop_h = min(height, max(1, round(height * math.sqrt(area / stretch))))
    left = int(rng.integers(0, width - crop_w + 1))
    top = int(rng.integers(0, height - crop_h + 1))
    return TF.crop(img, top, left, crop_h, crop_w)


def image_generator(seed: int, epoch: int, item: int, position: int) -> np.random.Generator:
    """The random draws of one training image: fixed by where it sits, not by who loads it."""
    return np.random.default_rng([seed, epoch, item, position])
