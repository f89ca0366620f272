"""Training tuples as images: the torch Dataset read by the tuple DataLoader, and its collate."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor
from torch.utils.data import Dataset
from torchvision.transforms.functional import pil_to_tensor

from retrieval.data.augment import Augmentation, image_generator
from retrieval.data.epoch_tuples import EpochTuples
from retrieval.data.transforms import load_image, normalize_pixels, prepare_image, thumbnail_size

TupleItem = tuple[list[Tensor], Tensor]


class TupleDataset(Dataset):
    """Training tuples as images: item i is ([query, positive, n_1..n_k], target [-1, 1, 0..0])."""

    def __init__(
        self,
        image_paths: Sequence[str | Path],
        tuples: EpochTuples | None,
        max_side: int,
        mean: Sequence[float],
        std: Sequence[float],
        augment: Augmentation | None = None,
        seed: int = 0,
    ) -> None:
        self.image_paths = list(image_paths)
        self.max_side = int(max_side)
        self.mean, self.std = tuple(mean), tuple(std)
        self.augment = augment if augment is not None and augment.active else None
        self.seed = int(seed)
        self.tuples: EpochTuples | None = None
        if tuples is not None:
            self.set_tuples(tuples)

    def set_tuples(self, tuples: EpochTuples) -> None:
        """Replace the tuples (new epoch), checking their indices against the image list."""
        if len(tuples):
            top = max(tuples.query.max(), tuples.positive.max(), tuples.negatives.max(initial=0))
            if top >= len(self.image_paths):
                raise ValueError(
                    f"Epoch tuples refer to image {top} but only {len(self.image_paths)} image "
                    "paths were given; mine with the same split as the dataset."
                )
        self.tuples = tuples

    def __len__(self) -> int:
        return 0 if self.tuples is None else len(self.tuples)

    def __getitem__(self, i: int) -> TupleItem:
        if self.tuples is None:
            raise RuntimeError("TupleDataset has no tuples yet; mine an epoch and set_tuples().")
        indices = self.tuples.image_indices(i)
        images = [self._image(i, position, int(j)) for position, j in enumerate(indices)]
        target = torch.zeros(len(indices), dtype=torch.long)
        target[0], target[1] = -1, 1
        return images, target

    def _image(self, item: int, position: int, index: int) -> Tensor:
        path = self.image_paths[index]
        if self.augment is None:
            return prepare_image(path, self.max_side, self.mean, self.std)
        rng = image_generator(self.seed, self.tuples.epoch or 0, item, position)
        img = load_image(path)
        img = self.augment.geometry(img, thumbnail_size(*img.size, self.max_side), rng)
        img = self.augment.colour(img, rng)
        return normalize_pixels(pil_to_tensor(img), self.mean, self.std)


def collate_tuples(batch: Sequence[TupleItem]) -> list[TupleItem]:
    """Keep a batch as a list of (images, target) tuples: images differ in size."""
    return list(batch)
