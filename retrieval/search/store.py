"""The search index directory: descriptors, FAISS index and metadata, updated incrementally.

Layout of ``INDEX_DIR``::

    index.json                  the commit point: network, settings, images, skipped files
    descriptors-NNNNNN.npy      N x D float32, row i is images[i]
    faiss-NNNNNN.index          the FAISS inner-product index over those rows

Every save writes a new generation of the two data files, then replaces ``index.json`` (which
names them) atomically, then deletes older generations: a killed run leaves the previous index
readable. Images are keyed by path, size and modification time, so re-indexing extracts only new
or changed images and drops deleted ones. The network's fingerprint (its meta and weights) is
stored, and an index is never mixed with, nor queried by, another network.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import torch
from PIL import Image

from retrieval.atomic import atomic_write
from retrieval.checkpoint import load_checkpoint
from retrieval.data.formats import IMAGE_SUFFIXES
from retrieval.extraction.cache import network_fingerprint
from retrieval.extraction.extract import extract_descriptors
from retrieval.index import build_index
from retrieval.models.net import RetrievalNet, build_net

log = logging.getLogger(__name__)

INDEX_FILE = "index.json"
FORMAT_VERSION = 1
# The extraction of evaluate.py (conf/evaluate.yaml), so that the tool and the benchmarks agree.
DEFAULT_IMAGE_SIZE = 1024
DEFAULT_SCALES = (1.0, 2**-0.5, 0.5)
DEFAULT_BACKBONE = "efficientnet_lite0"
DEFAULT_POOLING = "gem"


class SearchError(Exception):
    """A problem the user can fix (missing index, wrong network, bad settings); says how."""


class NetworkMismatchError(SearchError):
    """The index was built by another network than the one given."""


# ----------------------------------------------------------------------------------------------
# networks
# ----------------------------------------------------------------------------------------------


def network_source(
    checkpoint: str | Path | None = None,
    backbone: str = DEFAULT_BACKBONE,
    pooling: str = DEFAULT_POOLING,
) -> dict[str, str]:
    """How to rebuild a network: a checkpoint file, or an off-the-shelf ImageNet backbone."""
    if checkpoint:
        return {"checkpoint": os.path.abspath(Path(checkpoint).expanduser())}
    return {"backbone": backbone, "pooling": pooling, "weights": "imagenet"}


def load_network(source: dict[str, str]) -> RetrievalNet:
    """The network a `network_source` describes."""
    if "checkpoint" in source:
        path = Path(source["checkpoint"])
        if not path.is_file():
            raise SearchError(
                f"checkpoint {path} not found; pass --checkpoint with the network of the index"
            )
        return load_checkpoint(path)
    return build_net(source["backbone"], source["pooling"], weights=source["weights"])


def network_name(meta: dict[str, Any]) -> str:
    """A short human name of a network, e.g. 'efficientnet_lite0-gem-whiten512'."""
    name = f"{meta['backbone']}-{meta['pooling']}"
    return name + (f"-whiten{meta['whitening']}" if meta.get("whitening") else "")


def network_record(net: RetrievalNet, source: dict[str, str]) -> dict[str, Any]:
    """What the index stores about its network: source, meta, name and fingerprint."""
    return {
        "source": dict(source),
        "name": network_name(net.meta),
        "fingerprint": network_fingerprint(net),
        "meta": net.meta,
    }


# ----------------------------------------------------------------------------------------------
# photos on disk
# ----------------------------------------------------------------------------------------------


def scan_images(folder: str | Path, exclude: str | Path | None = None) -> dict[str, list[int]]:
    """{absolute path: [size, mtime_ns]} of the images under `folder`, recursively, sorted.

    Hidden files and folders (a leading dot: .Trash, ._IMG.jpg) and `exclude` are skipped.
    """
    folder = Path(os.path.abspath(Path(folder).expanduser()))
    if not folder.is_dir():
        raise SearchError(f"photo folder {folder} not found")
    excluded = os.path.abspath(exclude) if exclude is not None else None
    found: dict[str, list[int]] = {}
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = [
            d for d in dirnames if not d.startswith(".") and os.path.join(dirpath, d) != excluded
        ]
        for name in filenames:
            if name.startswith(".") or Path(name).suffix.lower() not in IMAGE_SUFFIXES:
                continue
            path = os.path.join(dirpath, name)
            try:
                stat = os.stat(path)
            except OSError:  # vanished meanwhile, or a dangling link
                continue
            found[path] = [stat.st_size, stat.st_mtime_ns]
    return dict(sorted(found.items()))


def probe_image(path: str | Path, max_side: int = 1024) -> tuple[int, int]:
    """(width, height) of an image, after decoding all of it (raises when it is unreadable)."""
    with Image.open(path) as img:
        size = img.size
        # JPEG decodes at a reduced scale here, but every byte is still read and checked.
        img.draft("RGB", (max_side, max_side))
        img.load()
    return size


# ----------------------------------------------------------------------------------------------
# the index directory
# ----------------------------------------------------------------------------------------------


@dataclass
class IndexStore:
    """An index directory in memory: its images, their descriptors and how they were made."""

    root: Path
    network: dict[str, Any]
    settings: dict[str, Any]
    photos: str | None = None
    images: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[dict[str, Any]] = field(default_factory=list)
    descriptors: np.ndarray | None = None
    generation: int = 0
    files: dict[str, str] = field(default_factory=dict)

    @property
    def paths(self) -> list[str]:
        """The indexed image paths, in row order."""
        return [entry["path"] for entry in self.images]

    @staticmethod
    def exists(index_dir: str | Path) -> bool:
        """Whether `index_dir` holds an index."""
        return (Path(index_dir) / INDEX_FILE).is_file()

    @classmethod
    def load(cls, index_dir: str | Path) -> IndexStore:
        """Read an index directory (metadata and descriptors)."""
        root = Path(index_dir)
        if not cls.exists(root):
            raise SearchError(
                f"no search index in {root} (no {INDEX_FILE}); build one with "
                f"`retrieval-search index PHOTOS_DIR --out {root}`"
            )
        payload = json.loads((root / INDEX_FILE).read_text())
        if payload.get("format") != FORMAT_VERSION:
            raise SearchError(
                f"{root} holds index format {payload.get('format')}, this version reads "
                f"{FORMAT_VERSION}; rebuild it with `retrieval-search index ... --out NEW_DIR`"
            )
        descriptors = np.load(root / payload["files"]["descriptors"])
        if len(descriptors) != len(payload["images"]):
            raise SearchError(
                f"{root} is inconsistent: {len(descriptors)} descriptors for "
                f"{len(payload['images'])} images; rebuild it"
            )
        return cls(
            root=root,
            network=payload["network"],
            settings=payload["settings"],
            photos=payload.get("photos"),
            images=payload["images"],
            skipped=payload.get("skipped", []),
            descriptors=descriptors,
            generation=int(payload["generation"]),
            files=payload["files"],
        )

    def faiss_index(self) -> faiss.Index:
        """The stored FAISS index (checked against the descriptors)."""
        index = faiss.read_index(str(self.root / self.files["faiss"]))
        if index.ntotal != len(self.images):
            raise SearchError(
                f"{self.root} is inconsistent: FAISS holds {index.ntotal} vectors for "
                f"{len(self.images)} images; rebuild it"
            )
        return index

    def check_network(self, record: dict[str, Any]) -> None:
        """Refuse a network other than the index's own."""
        mine = self.network
        if record["fingerprint"] != mine["fingerprint"]:
            raise NetworkMismatchError(
                f"the index {self.root} was built by another network: {mine['name']} "
                f"(fingerprint {mine['fingerprint']}, from {_describe_source(mine['source'])}), "
                f"not {record['name']} (fingerprint {record['fingerprint']}, from "
                f"{_describe_source(record['source'])}). Use the network that built it, "
                "or index with this one into another --out folder."
            )

    def save(self) -> None:
        """Write a new generation of the data files, then commit it by replacing index.json."""
        self.root.mkdir(parents=True, exist_ok=True)
        generation = self.generation + 1
        descriptors = np.ascontiguousarray(self.descriptors, dtype=np.float32)
        files = {
            "descriptors": f"descriptors-{generation:06d}.npy",
            "faiss": f"faiss-{generation:06d}.index",
        }
        atomic_write(self.root / files["descriptors"], lambda h: np.save(h, descriptors))
        serialized = faiss.serialize_index(build_index(descriptors, use_gpu=False))
        atomic_write(self.root / files["faiss"], lambda h: h.write(serialized.tobytes()))
        payload = {
            "format": FORMAT_VERSION,
            "generation": generation,
            "files": files,
            "photos": self.photos,
            "network": self.network,
            "settings": self.settings,
            "count": len(self.images),
            "dim": int(descriptors.shape[1]),
            "images": self.images,
            "skipped": self.skipped,
        }
        text = json.dumps(payload, indent=1).encode()
        atomic_write(self.root / INDEX_FILE, lambda h: h.write(text))
        self.generation, self.files = generation, files
        self._remove_stale_files()

    def _remove_stale_files(self) -> None:
        """Delete data files of other generations (older ones, or those of a killed run)."""
        keep = set(self.files.values())
        for pattern in ("descriptors-*.npy", "faiss-*.index"):
            for path in self.root.glob(pattern):
                if path.name not in keep:
                    path.unlink(missing_ok=True)


def _describe_source(source: dict[str, str]) -> str:
    if "checkpoint" in source:
        return f"checkpoint {source['checkpoint']}"
    return f"{source['weights']} {source['backbone']}-{source['pooling']}"


# ----------------------------------------------------------------------------------------------
# incremental update
# ----------------------------------------------------------------------------------------------


@dataclass
class UpdateReport:
    """What one `update_index` run did."""

    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    skipped: list[dict[str, Any]] = field(default_factory=list)
    unchanged: int = 0
    total: int = 0

    def summary(self) -> str:
        """One line of counts."""
        return (
            f"{self.total} images indexed: {len(self.added)} added, {len(self.updated)} updated, "
            f"{len(self.removed)} removed, {self.unchanged} unchanged, "
            f"{len(self.skipped)} unreadable skipped"
        )


def update_index(
    photos_dir: str | Path,
    index_dir: str | Path,
    checkpoint: str | Path | None = None,
    backbone: str = DEFAULT_BACKBONE,
    pooling: str = DEFAULT_POOLING,
    image_size: int = DEFAULT_IMAGE_SIZE,
    scales: tuple[float, ...] = DEFAULT_SCALES,
    precision: str = "fp32",
    batch_size: int = 16,
    device: str | torch.device = "cpu",
    chunk_size: int = 1000,
    progress: bool = True,
) -> UpdateReport:
    """Create or update the index of a photo folder; only new or changed images are extracted.

    The index is committed after every `chunk_size` extracted images, so a killed run resumes
    where it stopped. Unreadable images are skipped and listed (in the report and the index).
    """
    index_dir = Path(os.path.abspath(Path(index_dir).expanduser()))
    source = network_source(checkpoint, backbone, pooling)
    net = load_network(source)
    settings = {
        "image_size": int(image_size),
        "scales": [float(s) for s in scales],
        "precision": precision,
    }
    found = scan_images(photos_dir, exclude=index_dir)
    store = _open_store(index_dir, net, network_record(net, source), settings)
    photos, store.photos = store.photos, os.path.abspath(Path(photos_dir).expanduser())
    if photos not in (None, store.photos):
        log.warning("the index %s held %s; it now mirrors %s", index_dir, photos, store.photos)
    report = UpdateReport()
    known = _keep_unchanged(store, found, report)
    old_skipped = list(store.skipped)
    todo, dims = _images_to_extract(store, found, known, report, int(image_size))

    options = dict(
        max_side=int(image_size),
        scales=tuple(scales),
        precision=precision,
        batch_size=batch_size,
        device=device,
        progress=progress,
    )
    chunks = [todo[i : i + chunk_size] for i in range(0, len(todo), chunk_size)]
    if not chunks and (
        report.removed
        or report.updated
        or store.generation == 0
        or store.skipped != old_skipped
        or store.photos != photos
    ):
        chunks = [[]]  # nothing to extract, but the index changed: commit it
    for chunk in chunks:
        paths, descriptors, failed = _extract_readable(net, chunk, options)
        store.skipped += [_skipped(path, found[path], error) for path, error in failed]
        store.skipped.sort(key=lambda s: s["path"])
        store.images += [_entry(path, found[path], dims[path]) for path in paths]
        store.descriptors = np.concatenate([store.descriptors, descriptors])
        store.save()
        log.info("index %s: %d images committed", index_dir, len(store.images))
    indexed = set(store.paths)
    updated = set(report.updated)
    report.added = [p for p in todo if p in indexed and p not in updated]
    report.updated = [p for p in report.updated if p in indexed]
    report.skipped = [{"path": s["path"], "error": s["error"]} for s in store.skipped]
    report.total = len(store.images)
    return report


def _open_store(
    index_dir: Path, net: RetrievalNet, record: dict[str, Any], settings: dict[str, Any]
) -> IndexStore:
    """The existing index (made by the same network and settings), or a new empty one."""
    if not IndexStore.exists(index_dir):
        empty = np.zeros((0, int(net.meta["out_dim"])), dtype=np.float32)
        return IndexStore(index_dir, record, settings, descriptors=empty)
    store = IndexStore.load(index_dir)
    store.check_network(record)
    if store.settings != settings:
        raise SearchError(
            f"the index {index_dir} was extracted with {store.settings}, not {settings}; "
            "pass the same --image-size/--scales/--precision, or use another --out folder"
        )
    return store


def _keep_unchanged(store: IndexStore, found: dict[str, list[int]], report: UpdateReport) -> set:
    """Keep the rows whose file is unchanged; the others are re-extracted or dropped.

    Returns the paths the index held before."""
    keep = []
    for row, entry in enumerate(store.images):
        stat = found.get(entry["path"])
        if stat == [entry["size"], entry["mtime_ns"]]:
            keep.append(row)
        elif stat is None:
            report.removed.append(entry["path"])
        else:
            report.updated.append(entry["path"])
    report.unchanged = len(keep)
    known = {entry["path"] for entry in store.images}
    store.images = [store.images[row] for row in keep]
    store.descriptors = store.descriptors[keep]
    return known


def _images_to_extract(
    store: IndexStore,
    found: dict[str, list[int]],
    known: set,
    report: UpdateReport,
    max_side: int,
) -> tuple[list[str], dict[str, tuple[int, int]]]:
    """New or changed images that open, with their prepared sizes; the others are skipped.

    Unreadable files that have not changed since are not probed again."""
    old_skipped = {s["path"]: s for s in store.skipped}
    store.skipped = []
    todo: list[str] = []
    dims: dict[str, tuple[int, int]] = {}
    for path, stat in found.items():
        if path in known and path not in report.updated:
            continue
        old = old_skipped.get(path)
        if old is not None and [old["size"], old["mtime_ns"]] == stat:
            store.skipped.append(old)
            continue
        try:
            dims[path] = probe_image(path, max_side)
            todo.append(path)
        # PIL signals broken files with many exception types (OSError, SyntaxError, ...).
        except Exception as err:
            store.skipped.append(_skipped(path, stat, f"{type(err).__name__}: {err}"))
            log.warning("skipping unreadable image %s (%s)", path, err)
    return todo, dims


def _entry(path: str, stat: list[int], dims: tuple[int, int]) -> dict[str, Any]:
    """The metadata of an indexed image."""
    return {"path": path, "size": stat[0], "mtime_ns": stat[1], "width": dims[0], "height": dims[1]}


def _skipped(path: str, stat: list[int], error: str) -> dict[str, Any]:
    """The metadata of an unreadable image."""
    return {"path": path, "size": stat[0], "mtime_ns": stat[1], "error": error}


def _extract_readable(
    net: RetrievalNet, paths: list[str], options: dict[str, Any]
) -> tuple[list[str], np.ndarray, list[tuple[str, str]]]:
    """Descriptors of the images that extract; on a failure, one at a time to isolate it."""
    try:
        return paths, extract_descriptors(net, paths, **options), []
    except (OSError, ValueError) as err:
        log.warning("extraction failed (%s); retrying the %d images one by one", err, len(paths))
    kept, rows, failed = [], [], []
    for path in paths:
        try:
            rows.append(extract_descriptors(net, [path], **{**options, "progress": False}))
            kept.append(path)
        except (OSError, ValueError) as err:
            failed.append((path, f"{type(err).__name__}: {err}"))
    empty = np.zeros((0, int(net.meta["out_dim"])), dtype=np.float32)
    return kept, np.concatenate(rows) if rows else empty, failed
