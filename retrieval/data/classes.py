"""Class-labelled images (data.kind=classes, GLDv2-style): the labelled image sets and their
readers, the m classes x k images batches, and the cleaning rule on descriptors.

The LightningDataModule that serves the batches is in retrieval/lightning/class_datamodule.py; the
cleaning job that extracts the descriptors is in retrieval/pipelines/clean.py.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from retrieval.data import formats
from retrieval.data.transforms import prepare_image

log = logging.getLogger(__name__)

FORMATS = ("gldv2", "folders", "generic")
SMALL_CLASSES = ("drop", "repeat")
MISSING = ("error", "drop")


# --------------------------------------------------------------------------------------------------
# Labelled image sets
# --------------------------------------------------------------------------------------------------


@dataclass
class LabelledImages:
    """Images with class labels 0..C-1 (indices into ``classes``, the original class names)."""

    paths: list[Path]
    labels: np.ndarray
    classes: list[str]
    ids: list[str] | None = None  # GLDv2 image ids, written back by cleaning

    def __post_init__(self) -> None:
        self.labels = np.asarray(self.labels, dtype=np.int64)
        if len(self.paths) != len(self.labels) or (
            self.ids is not None and len(self.ids) != len(self.paths)
        ):
            raise ValueError(
                f"LabelledImages: {len(self.paths)} paths, {len(self.labels)} labels and "
                f"{len(self.ids) if self.ids is not None else '-'} ids; give one of each per image"
            )
        if len(self.labels) and not 0 <= self.labels.min() <= self.labels.max() < len(self.classes):
            raise ValueError(f"labels must index the {len(self.classes)} class names")

    def __len__(self) -> int:
        return len(self.paths)

    def counts(self) -> np.ndarray:
        """Images per class (C values, zeros included)."""
        return np.bincount(self.labels, minlength=len(self.classes))

    def subset(self, keep: np.ndarray) -> LabelledImages:
        """The images where ``keep`` is true, classes left without images removed."""
        keep = np.asarray(keep, dtype=bool)
        used, labels = np.unique(self.labels[keep], return_inverse=True)
        return LabelledImages(
            [p for p, k in zip(self.paths, keep, strict=True) if k],
            labels.reshape(-1),
            [self.classes[c] for c in used],
            [i for i, k in zip(self.ids, keep, strict=True) if k] if self.ids is not None else None,
        )

    def split_classes(
        self, n_val: int | float, seed: int = 0
    ) -> tuple[LabelledImages, LabelledImages | None]:
        """(train, val): ``n_val`` classes (a count, or a fraction when < 1) drawn at random hold
        out for validation; None when ``n_val`` is 0."""
        n_classes = len(self.classes)
        count = round(n_val * n_classes) if 0 < n_val < 1 else int(n_val)
        if count <= 0:
            return self, None
        if count >= n_classes:
            raise ValueError(
                f"cannot hold out {count} validation classes (data.val_classes={n_val}) out of "
                f"{n_classes}: leave at least one class for training"
            )
        val_classes = np.random.default_rng(seed).choice(n_classes, count, replace=False)
        is_val = np.isin(self.labels, val_classes)
        return self.subset(~is_val), self.subset(is_val)


def _drop_missing(images: LabelledImages, where: str, missing: str) -> LabelledImages:
    """Check every image file exists; raise (missing='error') or drop the missing ones."""
    absent = np.array([not p.is_file() for p in images.paths], dtype=bool)
    if not absent.any():
        return images
    names = images.ids if images.ids is not None else [str(p) for p in images.paths]
    examples = ", ".join(n for n, a in zip(names, absent, strict=True) if a)[:300]
    message = (
        f"{int(absent.sum())} of {len(images)} images listed in {where} have no file (unknown "
        f"image ids), e.g. {examples}"
    )
    if missing == "error":
        raise FileNotFoundError(
            f"{message}. Fix data.root / data.images, or set data.missing=drop to skip them."
        )
    log.warning("%s; dropping them (data.missing=drop)", message)
    return images.subset(~absent)


def _drop_empty_classes(images: LabelledImages, where: str) -> LabelledImages:
    """Remove classes that have no image, with a warning naming a few."""
    empty = np.flatnonzero(images.counts() == 0)
    if len(empty):
        names = ", ".join(images.classes[c] for c in empty[:5])
        log.warning(
            "%d class(es) of %s have no image (e.g. %s); skipping them", len(empty), where, names
        )
        images = images.subset(np.ones(len(images), dtype=bool))
    return images


def load_labelled_images(
    format: str,
    root: str | Path,
    csv: str | None = None,
    images: str | None = None,
    missing: str = "error",
) -> LabelledImages:
    """Read a labelled image set.

    ``gldv2``: a GLDv2 ``train.csv`` (id,url,landmark_id) or ``train_clean.csv``
    (landmark_id,images) at ``root/csv``, images under ``images`` (default: ``train/`` beside the
    CSV) as ``a/b/c/<id>.jpg``. ``folders``: ``root/<class>/<image>``. ``generic``: ``root/csv``
    (default groundtruth.csv) with columns path,object_id. Images without a file raise, or are
    dropped with ``missing='drop'``; classes without images are skipped with a warning.
    """
    if format not in FORMATS:
        raise ValueError(f"Unknown label format {format!r}; valid: {', '.join(FORMATS)}")
    if missing not in MISSING:
        raise ValueError(f"missing must be one of {MISSING}, got {missing!r}")
    root = Path(root).expanduser()
    if format == "gldv2":
        if not csv:
            raise ValueError("the gldv2 label format needs data.csv (e.g. gldv2/train_clean.csv)")
        where = root / csv
        image_dir = Path(images).expanduser() if images else None
        if image_dir is not None and not image_dir.is_absolute():
            image_dir = root / image_dir
        train = formats.read_gldv2_train(where, image_dir)
        names = sorted({int(v) for v in train.landmark_ids} | set(train.empty_landmarks))
        index = {name: k for k, name in enumerate(names)}
        labels = np.array([index[int(v)] for v in train.landmark_ids], dtype=np.int64)
        out = LabelledImages(train.image_paths, labels, [str(n) for n in names], train.ids)
    elif format == "folders":
        where = root
        paths, labels, names = formats.read_class_folders(root)
        out = LabelledImages(paths, labels, names)
    else:
        where = root / (csv or "groundtruth.csv")
        paths, labels = formats.read_labelled_images(root, csv or "groundtruth.csv", False)
        names = [str(k) for k in range(int(labels.max()) + 1)] if len(labels) else []
        out = LabelledImages(paths, labels, names)
    out = _drop_empty_classes(out, str(where))
    out = _drop_missing(out, str(where), missing)
    if len(out) == 0:
        raise formats.DatasetFormatError(f"{where}: no labelled image to train on")
    return out


def sfm_val_images(root: str | Path, name: str) -> LabelledImages:
    """The val split of an SfM database as labelled images (class = 3D model)."""
    split = formats.load_sfm_db(root, name)["val"]
    clusters, labels = np.unique(np.asarray(split.cluster), return_inverse=True)
    return LabelledImages(list(split.image_paths), labels.reshape(-1), [str(c) for c in clusters])


def label_splits(
    format: str,
    root: str | Path,
    csv: str | None = None,
    images: str | None = None,
    missing: str = "error",
    val_sfm: str | None = None,
    val_classes: int | float = 0,
    seed: int = 0,
) -> tuple[LabelledImages, LabelledImages | None]:
    """Training and validation images: the val split of SfM db ``val_sfm`` under root, or
    ``val_classes`` classes held out of the labelled set (LabelledImages.split_classes)."""
    labelled = load_labelled_images(format, root, csv, images, missing)
    if val_sfm:
        return labelled, sfm_val_images(root, val_sfm)
    return labelled.split_classes(val_classes, seed)


# --------------------------------------------------------------------------------------------------
# m classes x k images per batch
# --------------------------------------------------------------------------------------------------


def eligible_classes(
    labels: np.ndarray, images_per_class: int, small_classes: str = "drop", what: str = "data"
) -> np.ndarray:
    """Classes that can fill k = images_per_class slots (logs what is dropped or repeated).

    'drop' keeps classes with at least k images; 'repeat' also keeps classes with 2..k-1 images,
    whose images then repeat to fill the k slots. A class with one image has no positive pair and
    is always left out.
    """
    if small_classes not in SMALL_CLASSES:
        raise ValueError(
            f"small_classes must be one of {SMALL_CLASSES} (data.small_classes), "
            f"got {small_classes!r}"
        )
    k = int(images_per_class)
    if k < 2:
        raise ValueError(f"data.images_per_class must be >= 2 (a positive pair), got {k}")
    counts = np.bincount(np.asarray(labels, dtype=np.int64))
    present = counts > 0
    minimum = k if small_classes == "drop" else 2
    keep = counts >= minimum
    small = present & (counts < k)
    if not keep.any():
        raise ValueError(
            f"data.images_per_class={k} is larger than every class of the {what} (the largest "
            f"has {int(counts.max(initial=0))} images): lower it, or set "
            "data.small_classes=repeat to repeat the images of classes with fewer"
        )
    if small.any():
        dropped = present & ~keep
        log.info(
            "%s: %d of %d classes have fewer than %d images; %s (%d classes, %d images dropped)",
            what,
            int(small.sum()),
            int(present.sum()),
            k,
            "dropped" if small_classes == "drop" else "their images repeat to fill a batch",
            int(dropped.sum()),
            int(counts[dropped].sum()),
        )
    return np.flatnonzero(keep)


class ClassBatchSampler(Sampler[list[int]]):
    """Batches of m classes x k images (dataset indices), the same for a given (seed, epoch).

    Classes are visited in a random order before any repeats; each batch takes k random images of
    each of its m classes. Classes with fewer than k images are handled as ``small_classes`` says
    (see :func:`eligible_classes`). Use it as a DataLoader's ``batch_sampler``, or as its
    ``sampler`` with ``batch_size=None`` and a dataset that takes index lists (as under DDP, where
    Lightning hands whole batches to the ranks).
    """

    def __init__(
        self,
        labels: Sequence[int] | np.ndarray,
        classes_per_batch: int,
        images_per_class: int,
        small_classes: str = "drop",
        num_batches: int | None = None,
        seed: int = 0,
        what: str = "data",
    ) -> None:
        labels = np.asarray(labels, dtype=np.int64)
        self.m, self.k = int(classes_per_batch), int(images_per_class)
        classes = eligible_classes(labels, self.k, small_classes, what)
        if self.m < 1 or self.m > len(classes):
            raise ValueError(
                f"data.classes_per_batch={self.m} but the {what} has {len(classes)} classes with "
                f"enough images (data.images_per_class={self.k}); use 1..{len(classes)}"
            )
        order = np.argsort(labels, kind="stable")
        starts = np.searchsorted(labels[order], classes)
        ends = np.searchsorted(labels[order], classes, side="right")
        self.members = [order[a:b] for a, b in zip(starts, ends, strict=True)]
        usable = sum(len(m) for m in self.members)
        self.num_batches = int(num_batches) if num_batches else max(1, usable // (self.m * self.k))
        self.seed, self.epoch = int(seed), 0

    def set_epoch(self, epoch: int) -> None:
        """Draw the batches of this epoch (Lightning calls it at every epoch start)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.num_batches

    def __iter__(self) -> Iterator[list[int]]:
        rng = np.random.default_rng([self.seed, self.epoch])
        n_classes = len(self.members)
        order, position = rng.permutation(n_classes), 0
        for _ in range(self.num_batches):
            if position + self.m > n_classes:
                order, position = rng.permutation(n_classes), 0
            batch: list[int] = []
            for c in order[position : position + self.m]:
                members = self.members[c]
                if len(members) >= self.k:
                    picked = rng.choice(members, self.k, replace=False)
                else:  # small_classes=repeat: all of them, then repeats
                    extra = rng.choice(members, self.k - len(members), replace=True)
                    picked = np.concatenate([rng.permutation(members), extra])
                batch += picked.tolist()
            position += self.m
            yield batch


class ClassBatchDataset(Dataset):
    """Item = a list of indices -> a label batch: images zero-padded to S x S, sizes, labels.

    Images keep their aspect ratio (longest side S) on a fixed S x S canvas, so an image's
    descriptor does not depend on the other images of its batch or chunk (multi-stage is exact).
    """

    def __init__(
        self,
        images: LabelledImages,
        image_size: int,
        mean: Sequence[float],
        std: Sequence[float],
    ) -> None:
        self.images, self.size = images, int(image_size)
        self.mean, self.std = tuple(mean), tuple(std)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, indices: Sequence[int]) -> dict[str, torch.Tensor]:
        batch = torch.zeros(len(indices), 3, self.size, self.size)
        sizes = torch.zeros(len(indices), 2, dtype=torch.long)
        for row, i in enumerate(indices):
            img = prepare_image(self.images.paths[i], self.size, self.mean, self.std)
            batch[row, :, : img.shape[1], : img.shape[2]] = img
            sizes[row] = torch.tensor(img.shape[1:])
        labels = torch.as_tensor(self.images.labels[list(indices)], dtype=torch.long)
        return {"images": batch, "sizes": sizes, "labels": labels}


# --------------------------------------------------------------------------------------------------
# Cleaning: drop images whose descriptor disagrees with their class (on descriptors, not a network)
# --------------------------------------------------------------------------------------------------


def class_consistent(descriptors: np.ndarray, labels: np.ndarray, k: int = 5) -> np.ndarray:
    """Keep mask: an image is kept when it is among the k nearest neighbours (itself excluded) of
    at least one other image of its class."""
    from retrieval.index import search

    labels = np.asarray(labels)
    n = len(labels)
    if n < 2:
        return np.zeros(n, dtype=bool)
    _, ranks = search(descriptors, descriptors, k=min(int(k) + 1, n))
    # Each row's first k neighbours other than itself (ties may push it out of its own row).
    is_self = ranks == np.arange(n)[:, None]
    others = np.take_along_axis(ranks, np.argsort(is_self, axis=1, kind="stable"), axis=1)[:, :k]
    owner = np.broadcast_to(np.arange(n)[:, None], others.shape)
    valid = (others >= 0) & (others != owner)
    agree = valid & (labels[np.where(valid, others, 0)] == labels[owner])
    keep = np.zeros(n, dtype=bool)
    keep[others[agree]] = True
    return keep


def write_labelled_csv(images: LabelledImages, path: str | Path) -> Path:
    """Write a cleaned image set: GLDv2 train.csv (id,url,landmark_id) when the images have GLDv2
    ids, else a generic groundtruth.csv (path,object_id) with paths relative to its folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if images.ids is not None:
        landmarks = [int(images.classes[c]) for c in images.labels]
        formats.write_gldv2_train_csv(path, images.ids, landmarks)
    else:
        rows = [
            {"path": os.path.relpath(p, path.parent), "object_id": images.classes[c]}
            for p, c in zip(images.paths, images.labels, strict=True)
        ]
        formats.write_generic_groundtruth(path, rows)
    return path
