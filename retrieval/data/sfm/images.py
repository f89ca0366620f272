"""The photo folder: find the images, skip unreadable ones (listed), write oriented, downscaled
JPEG copies that COLMAP, the network and training all read."""

from __future__ import annotations

import hashlib
import json
import logging
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image, ImageOps
from tqdm.auto import tqdm

from retrieval.atomic import atomic_write
from retrieval.data.formats.images import IMAGE_SUFFIXES
from retrieval.data.sfm.errors import SfmInputError

log = logging.getLogger(__name__)

JPEG_QUALITY = 92
MANIFEST = "images.json"


@dataclass
class PreparedImages:
    """Usable photos: their ids (cids), source paths (relative to the folder) and copies."""

    folder: Path  # the prepared copies, <cid>.jpg
    cids: list[str]
    sources: list[str]
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (source, reason)

    def __len__(self) -> int:
        return len(self.cids)

    @property
    def names(self) -> list[str]:
        """File names of the copies inside :attr:`folder` (COLMAP's image names)."""
        return [f"{cid}.jpg" for cid in self.cids]

    @property
    def paths(self) -> list[Path]:
        """The prepared copies."""
        return [self.folder / name for name in self.names]


def image_id(relative: str) -> str:
    """A stable 32-hex-digit id of a photo from its path inside the folder (cirtorch's cid)."""
    return hashlib.sha1(relative.encode("utf-8")).hexdigest()[:32]


def find_images(folder: str | Path, exclude: Path | None = None) -> list[Path]:
    """Image files under ``folder`` (recursively, sorted; none under ``exclude``, the output
    when it lies inside); errors name an empty or absent folder."""
    folder = Path(folder)
    if not folder.is_dir():
        raise SfmInputError(f"photo folder not found: {folder} (pass --images DIR, a folder)")
    skip = exclude.resolve() if exclude is not None else None
    files = sorted(
        p
        for p in folder.rglob("*")
        if p.is_file()
        and p.suffix.lower() in IMAGE_SUFFIXES
        and (skip is None or skip not in p.resolve().parents)
    )
    if not files:
        suffixes = ", ".join(sorted(IMAGE_SUFFIXES))
        raise SfmInputError(
            f"no images in {folder} (looked for {suffixes}, in subfolders too): point --images "
            "at the folder that holds your photos"
        )
    return files


def _prepare_one(source: Path, target: Path, max_side: int) -> None:
    """Decode ``source`` fully, apply its EXIF orientation, shrink and write it as a JPEG."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        with Image.open(source) as image:
            image.load()  # a truncated file fails here, not later in COLMAP
            rgb = ImageOps.exif_transpose(image).convert("RGB")
    if min(rgb.size) < 16:
        raise ValueError(f"{rgb.size[0]}x{rgb.size[1]} pixels is too small for SIFT")
    rgb.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    atomic_write(target, lambda handle: rgb.save(handle, format="JPEG", quality=JPEG_QUALITY))


def prepare_images(
    folder: str | Path, work: Path, max_side: int, exclude: Path | None = None
) -> PreparedImages:
    """Copies of every readable photo under ``folder`` in ``work/images`` (kept across runs)."""
    folder = Path(folder)
    files = find_images(folder, exclude)
    if len(files) < 2:
        only = files[0].relative_to(folder).as_posix()
        _check_enough(PreparedImages(work / "images", [image_id(only)], [only]), folder)
    prepared = PreparedImages(work / "images", [], [])
    for source in tqdm(files, desc="sfm: images", unit="img"):
        relative = source.relative_to(folder).as_posix()
        cid = image_id(relative)
        target = prepared.folder / f"{cid}.jpg"
        if not target.is_file():
            try:
                _prepare_one(source, target, max_side)
            except (OSError, ValueError, SyntaxError, Image.DecompressionBombWarning) as err:
                prepared.skipped.append((relative, f"{type(err).__name__}: {err}"))
                continue
        prepared.cids.append(cid)
        prepared.sources.append(relative)
    for relative, reason in prepared.skipped:
        log.warning("skipped unreadable image %s (%s)", folder / relative, reason)
    _check_enough(prepared, folder)
    return prepared


def _check_enough(prepared: PreparedImages, folder: Path) -> None:
    """At least two usable photos, or an error listing what was skipped."""
    if len(prepared) >= 2:
        return
    skipped = "; ".join(f"{name} ({reason})" for name, reason in prepared.skipped[:10])
    what = (
        "no readable image"
        if not len(prepared)
        else f"a single readable image ({prepared.sources[0]})"
    )
    raise SfmInputError(
        f"{folder} holds {what}: structure from motion needs at least two overlapping photos of "
        "the same place (in practice dozens per landmark)"
        + (f"; skipped as unreadable: {skipped}" if skipped else "")
    )


def write_manifest(prepared: PreparedImages, path: Path) -> None:
    """The prepared list as JSON (the stage's output, read back by a resumed run)."""
    data = {"cids": prepared.cids, "sources": prepared.sources, "skipped": prepared.skipped}
    atomic_write(path, lambda handle: handle.write(json.dumps(data, indent=1).encode()))


def read_manifest(path: Path) -> PreparedImages:
    """The prepared list written by :func:`write_manifest`."""
    data = json.loads(path.read_text())
    skipped = [(str(a), str(b)) for a, b in data["skipped"]]
    return PreparedImages(
        path.parent / "images", list(data["cids"]), list(data["sources"]), skipped
    )
