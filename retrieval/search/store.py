"""The search index directory: descriptors, FAISS index and metadata, updated incrementally.

Layout of ``INDEX_DIR``::

    index.json                  the commit point: network, settings, images, skipped files
    descriptors-NNNNNN-T.npy    N x D float32, row i is images[i]
    faiss-NNNNNN-T.index        the FAISS inner-product index over those rows
    index.lock                  held by the one `update_index` run at a time (holds its PID)

Every save writes a new generation of the two data files, under names no other save uses (the
generation and a random tag T), then replaces ``index.json`` (which names them and records their
sizes) atomically, then deletes the other generations: a killed run leaves the previous index
readable, and index.json never names files of another run. Loading verifies every file and names
a damaged one; `update_index` repairs it (re-extracting only when the descriptors are lost).
Images are keyed by path, size and modification time, so re-indexing extracts only new or changed
images and drops deleted ones; unreadable ones are tried again on every run. The network's
fingerprint (its meta and weights) is stored, and an index is never mixed with, nor queried by,
another network.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import torch
from PIL import Image

from retrieval.atomic import atomic_write
from retrieval.data.formats import IMAGE_SUFFIXES
from retrieval.data.transforms import load_image
from retrieval.extraction.extract import extract_descriptors
from retrieval.index import build_index
from retrieval.models.net import RetrievalNet
from retrieval.search.defaults import (
    DEFAULT_BACKBONE,
    DEFAULT_IMAGE_SIZE,
    DEFAULT_POOLING,
    DEFAULT_SCALES,
)
from retrieval.search.errors import (
    DamagedIndexError,
    NetworkMismatchError,
    SearchError,
    is_system_error,
)
from retrieval.search.lock import index_lock
from retrieval.search.network import (
    check_index_options,
    describe_source,
    load_network,
    network_record,
    network_source,
)

log = logging.getLogger(__name__)

INDEX_FILE = "index.json"
FORMAT_VERSION = 1


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
    sizes: dict[str, int] = field(default_factory=dict)  # bytes of each file in `files`

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
        """Read an index directory (metadata and descriptors), verifying both."""
        store = cls.load_metadata(index_dir)
        store.descriptors = store._read_descriptors()
        return store

    @classmethod
    def load_metadata(cls, index_dir: str | Path) -> IndexStore:
        """Read and verify index.json only (`descriptors` stays None)."""
        root = Path(index_dir)
        if not cls.exists(root):
            raise SearchError(
                f"no search index in {root} (no {INDEX_FILE}); build one with "
                f"`retrieval-search index PHOTOS_DIR --out {root}`"
            )
        payload = _read_payload(root / INDEX_FILE)
        return cls(
            root=root,
            network=payload["network"],
            settings=payload["settings"],
            photos=payload.get("photos"),
            images=payload["images"],
            skipped=payload.get("skipped", []),
            generation=int(payload["generation"]),
            files=payload["files"],
            sizes=payload["sizes"] if isinstance(payload.get("sizes"), dict) else {},
        )

    def _damaged(self, role: str, reason: str) -> DamagedIndexError:
        """The error of a damaged data file ('descriptors' or 'faiss')."""
        return DamagedIndexError(self.root / self.files[role], reason, self.photos)

    def _check_file(self, role: str) -> Path:
        """The path of a data file, present and of the size index.json recorded."""
        path = self.root / self.files[role]
        if not path.is_file():
            raise self._damaged(role, "missing")
        expected, actual = self.sizes.get(role), path.stat().st_size
        if expected is not None and actual != expected:
            raise self._damaged(role, f"{actual} bytes instead of {expected}: truncated?")
        return path

    def _read_descriptors(self) -> np.ndarray:
        """The descriptors file, verified against index.json."""
        path = self._check_file("descriptors")
        try:
            descriptors = np.load(path, allow_pickle=False)
        except (ValueError, OSError, EOFError) as err:  # numpy's ways to say truncated or garbage
            raise self._damaged("descriptors", f"unreadable: {err}") from None
        if descriptors.ndim != 2 or len(descriptors) != len(self.images):
            raise self._damaged(
                "descriptors",
                f"{descriptors.shape} descriptors for {len(self.images)} images",
            )
        return descriptors

    def faiss_index(self) -> faiss.Index:
        """The stored FAISS index, verified against the images (and descriptors, when loaded)."""
        path = self._check_file("faiss")
        try:
            index = faiss.read_index(str(path))
        except RuntimeError as err:  # faiss's error for a truncated or foreign file
            reason = str(err).strip().splitlines()[-1] if str(err).strip() else "unreadable"
            raise self._damaged("faiss", f"unreadable: {reason}") from None
        dim = None if self.descriptors is None else self.descriptors.shape[1]
        if index.ntotal != len(self.images) or dim not in (None, index.d):
            raise self._damaged(
                "faiss",
                f"{index.ntotal} vectors of {index.d} dimensions for {len(self.images)} images",
            )
        return index

    def check_network(self, record: dict[str, Any]) -> None:
        """Refuse a network other than the index's own."""
        mine = self.network
        if record["fingerprint"] != mine["fingerprint"]:
            raise NetworkMismatchError(
                f"the index {self.root} was built by another network: {mine['name']} "
                f"(fingerprint {mine['fingerprint']}, from {describe_source(mine['source'])}), "
                f"not {record['name']} (fingerprint {record['fingerprint']}, from "
                f"{describe_source(record['source'])}). Use the network that built it, "
                "or index with this one into another --out folder."
            )

    def save(self) -> None:
        """Write a new generation of the data files, then commit it by replacing index.json."""
        self.root.mkdir(parents=True, exist_ok=True)
        generation = self.generation + 1
        descriptors = np.ascontiguousarray(self.descriptors, dtype=np.float32)
        tag = f"{generation:06d}-{secrets.token_hex(4)}"  # never the name of another run's file
        files = {"descriptors": f"descriptors-{tag}.npy", "faiss": f"faiss-{tag}.index"}
        atomic_write(self.root / files["descriptors"], lambda h: np.save(h, descriptors))
        serialized = faiss.serialize_index(build_index(descriptors, use_gpu=False))
        atomic_write(self.root / files["faiss"], lambda h: h.write(serialized.tobytes()))
        sizes = {role: (self.root / name).stat().st_size for role, name in files.items()}
        payload = {
            "format": FORMAT_VERSION,
            "generation": generation,
            "files": files,
            "sizes": sizes,
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
        self.generation, self.files, self.sizes = generation, files, sizes
        self._remove_stale_files()

    def _remove_stale_files(self) -> None:
        """Delete data files of other generations (older, damaged or of a killed run)."""
        keep = set(self.files.values())
        for pattern in ("descriptors-*.npy", "faiss-*.index", ".*.tmp"):
            for path in self.root.glob(pattern):
                if path.name not in keep:
                    path.unlink(missing_ok=True)


# The keys every index.json holds, and the type of their values.
_PAYLOAD_KEYS = {
    "format": int,
    "generation": int,
    "files": dict,
    "network": dict,
    "settings": dict,
    "images": list,
}


def _read_payload(path: Path) -> dict[str, Any]:
    """index.json, checked to be an index's (else DamagedIndexError naming it)."""
    try:
        payload = json.loads(path.read_bytes())
    except (ValueError, UnicodeDecodeError) as err:
        raise DamagedIndexError(path, f"not valid JSON: {err}") from None
    if not isinstance(payload, dict):
        raise DamagedIndexError(path, f"a JSON {type(payload).__name__}, not an index")
    if payload.get("format") != FORMAT_VERSION:
        raise SearchError(
            f"{path.parent} holds index format {payload.get('format')}, this version reads "
            f"{FORMAT_VERSION}; rebuild it with `retrieval-search index ... --out NEW_DIR`"
        )
    photos = payload.get("photos") if isinstance(payload.get("photos"), str) else None
    for key, kind in _PAYLOAD_KEYS.items():
        if not isinstance(payload.get(key), kind):
            raise DamagedIndexError(path, f"no valid {key!r}", photos)
    files = payload["files"]
    if not all(isinstance(files.get(role), str) for role in ("descriptors", "faiss")) or not all(
        isinstance(e, dict) and {"path", "size", "mtime_ns"} <= set(e) for e in payload["images"]
    ):
        raise DamagedIndexError(path, "its files or images are incomplete", photos)
    return payload


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
    repaired: list[str] = field(default_factory=list)  # damaged files rebuilt, and how

    def summary(self) -> str:
        """One line of counts (and of the repairs, if any)."""
        repaired = "".join(f"; repaired {what}" for what in self.repaired)
        return (
            f"{self.total} images indexed: {len(self.added)} added, {len(self.updated)} updated, "
            f"{len(self.removed)} removed, {self.unchanged} unchanged, "
            f"{len(self.skipped)} unreadable skipped{repaired}"
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

    Options are checked before any work. One run at a time holds the index folder (a second one
    raises IndexInUseError at once). The index is committed after every `chunk_size` extracted
    images, so a killed run resumes where it stopped. Unreadable images are skipped and listed
    (in the report and the index), and tried again on the next run; damaged index files are
    rebuilt.
    """
    device = check_index_options(image_size, scales, precision, batch_size, chunk_size, device)
    index_dir = Path(os.path.abspath(Path(index_dir).expanduser()))
    settings = {
        "image_size": int(image_size),
        "scales": [float(s) for s in scales],
        "precision": precision,
    }
    options = dict(
        max_side=int(image_size),
        scales=tuple(scales),
        precision=precision,
        batch_size=int(batch_size),
        device=device,
        progress=progress,
    )
    found = scan_images(photos_dir, exclude=index_dir)  # before the index folder is made
    with index_lock(index_dir):
        return _update_locked(
            photos_dir,
            found,
            index_dir,
            network_source(checkpoint, backbone, pooling),
            settings,
            options,
            int(chunk_size),
        )


def _update_locked(
    photos_dir: str | Path,
    found: dict[str, list[int]],
    index_dir: Path,
    source: dict[str, str],
    settings: dict[str, Any],
    options: dict[str, Any],
    chunk_size: int,
) -> UpdateReport:
    """`update_index` once the options are checked and the index folder is held."""
    net = load_network(source)
    report = UpdateReport()
    store = _open_store(index_dir, net, network_record(net, source), settings, report)
    photos, store.photos = store.photos, os.path.abspath(Path(photos_dir).expanduser())
    if photos not in (None, store.photos):
        log.warning("the index %s held %s; it now mirrors %s", index_dir, photos, store.photos)
    known = _keep_unchanged(store, found, report)
    old_skipped = list(store.skipped)
    todo, dims = _images_to_extract(store, found, known, report, options["max_side"])

    chunks = [todo[i : i + chunk_size] for i in range(0, len(todo), chunk_size)]
    if not chunks and (
        report.removed
        or report.updated
        or report.repaired
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
    index_dir: Path,
    net: RetrievalNet,
    record: dict[str, Any],
    settings: dict[str, Any],
    report: UpdateReport,
) -> IndexStore:
    """The existing index (same network and settings, repaired if damaged), or a new one."""
    empty = np.zeros((0, int(net.meta["out_dim"])), dtype=np.float32)
    if not IndexStore.exists(index_dir):
        return IndexStore(index_dir, record, settings, descriptors=empty)
    try:
        store = IndexStore.load_metadata(index_dir)
    except DamagedIndexError as err:
        log.warning("%s; re-extracting every image", err)
        report.repaired.append(f"{INDEX_FILE} (every image re-extracted)")
        return IndexStore(index_dir, record, settings, descriptors=empty)
    store.check_network(record)
    if store.settings != settings:
        raise SearchError(
            f"the index {index_dir} was extracted with {store.settings}, not {settings}; "
            "pass the same --image-size/--scales/--precision, or use another --out folder"
        )
    _repair_data_files(store, empty, report)
    return store


def _repair_data_files(store: IndexStore, empty: np.ndarray, report: UpdateReport) -> None:
    """Load the descriptors and verify the FAISS index; a damaged file is rebuilt on save.

    Lost descriptors are re-extracted (their images are dropped from the store, so they count as
    new); a damaged FAISS index alone is rebuilt from the descriptors."""
    try:
        store.descriptors = store._read_descriptors()
    except DamagedIndexError as err:
        log.warning("%s; re-extracting its images", err)
        report.repaired.append(f"{err.path.name} (every image re-extracted)")
        store.images, store.descriptors = [], empty
        return
    try:
        store.faiss_index()
    except DamagedIndexError as err:
        log.warning("%s; rebuilding it from the descriptors", err)
        report.repaired.append(f"{err.path.name} (rebuilt from the descriptors)")


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

    Files skipped before are probed again: what failed once (a share offline, a file being
    copied) may read now. Errors of the system (memory, the disk) are raised, not recorded."""
    store.skipped = []
    todo: list[str] = []
    dims: dict[str, tuple[int, int]] = {}
    for path, stat in found.items():
        if path in known and path not in report.updated:
            continue
        try:
            dims[path] = probe_image(path, max_side)
            todo.append(path)
        # PIL signals broken files with many exception types (OSError, SyntaxError, ...).
        except Exception as err:
            if is_system_error(err):
                raise
            store.skipped.append(_skipped(path, stat, f"{type(err).__name__}: {err}"))
            log.warning("skipping unreadable image %s (%s)", path, err)
    return todo, dims


def _entry(path: str, stat: list[int], dims: tuple[int, int]) -> dict[str, Any]:
    """The metadata of an indexed image."""
    return {"path": path, "size": stat[0], "mtime_ns": stat[1], "width": dims[0], "height": dims[1]}


def _skipped(path: str, stat: list[int], error: str) -> dict[str, Any]:
    """The metadata of an unreadable image."""
    return {"path": path, "size": stat[0], "mtime_ns": stat[1], "error": error}


def _image_fault(path: str) -> str | None:
    """Why the image at `path` does not load, or None when it loads (system errors raise)."""
    try:
        load_image(path)
    except Exception as err:
        if is_system_error(err):
            raise
        return f"{type(err).__name__}: {err}"
    return None


def _extract_readable(
    net: RetrievalNet, paths: list[str], options: dict[str, Any]
) -> tuple[list[str], np.ndarray, list[tuple[str, str]]]:
    """Descriptors of the images that extract; on a failure, one at a time to isolate it.

    An image is recorded as unreadable only when it does not load by itself: any other failure
    (an option, memory, the disk, a bug) is raised."""
    try:
        return paths, extract_descriptors(net, paths, **options), []
    except Exception as err:
        if is_system_error(err):
            raise
        log.warning("extraction failed (%s); retrying the %d images one by one", err, len(paths))
    kept, rows, failed = [], [], []
    for path in paths:
        try:
            rows.append(extract_descriptors(net, [path], **{**options, "progress": False}))
            kept.append(path)
        except Exception as err:
            fault = None if is_system_error(err) else _image_fault(path)
            if fault is None:
                raise  # the image loads: the failure is not the file's
            failed.append((path, fault))
    empty = np.zeros((0, int(net.meta["out_dim"])), dtype=np.float32)
    return kept, np.concatenate(rows) if rows else empty, failed
