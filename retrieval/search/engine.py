"""Queries against an index directory: an image (optionally a box of it) to ranked paths."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from retrieval.data.transforms import load_image, prepared_size
from retrieval.eval.metrics import ukbench_ns_score
from retrieval.extraction.extract import extract_descriptors
from retrieval.extraction.inference import inference_copy
from retrieval.search.errors import DamagedIndexError, SearchError
from retrieval.search.network import load_network, network_record, network_source, usable_device
from retrieval.search.store import INDEX_FILE, IndexStore
from retrieval.types import Box

log = logging.getLogger(__name__)

UKBENCH_NAME = re.compile(r"ukbench(\d{5})\.jpg")


@dataclass
class Hit:
    """One search result: its rank (1 = best), row in the index, path and similarity."""

    rank: int
    row: int
    path: str
    score: float


class Searcher:
    """An index directory with the network that built it, ready to answer queries."""

    def __init__(
        self,
        index_dir: str | Path,
        checkpoint: str | Path | None = None,
        device: str = "auto",
    ) -> None:
        self.index_dir = Path(index_dir)
        self.device = usable_device(device)
        self._load()
        source = network_source(checkpoint) if checkpoint else self.store.network["source"]
        self.net = load_network(source)
        self.store.check_network(network_record(self.net, source))
        # Prepared once: every query's extraction reuses it instead of copying the network.
        self._inference_net = inference_copy(self.net, self.device)

    def _load(self, attempts: int = 3) -> None:
        """(Re)read the index files, verified (a damaged one is named with its remedy)."""
        for attempt in range(attempts):
            stamp = self._index_mtime()  # before reading: a later update is then seen
            try:
                store = IndexStore.load(self.index_dir)
                index = store.faiss_index()
            except DamagedIndexError:
                # An update may have committed a newer generation and removed this one meanwhile.
                if attempt == attempts - 1 or self._index_mtime() == stamp:
                    raise
                continue
            self.store, self.index, self._stamp = store, index, stamp
            self._rows = {path: row for row, path in enumerate(store.paths)}
            return

    def _index_mtime(self) -> int | None:
        """Modification time of index.json (None when it is missing)."""
        try:
            return (self.index_dir / INDEX_FILE).stat().st_mtime_ns
        except FileNotFoundError:
            return None

    def reload_if_changed(self) -> bool:
        """Re-read the index when it was updated on disk since it was loaded (same network)."""
        if self._index_mtime() in (None, self._stamp):
            return False
        network = self.store.network
        self._load()
        if self.store.network["fingerprint"] != network["fingerprint"]:
            raise SearchError(f"the index {self.index_dir} was rebuilt with another network")
        log.info("reloaded %s (%d images)", self.index_dir, len(self.store.images))
        return True

    def __len__(self) -> int:
        return len(self.store.images)

    def describe(self, image: str | Path, box: Box | None = None) -> np.ndarray:
        """The 1 x D descriptor of an image (cropped to `box`) with the index's settings."""
        settings = self.store.settings
        # An int8 index is queried in fp32: calibrating for one image costs more than the query,
        # and an fp32 query ranks int8 descriptors as it ranks their fp32 originals (README).
        precision = "fp32" if settings["precision"] == "int8" else settings["precision"]
        return extract_descriptors(
            self._inference_net,
            [image],
            max_side=int(settings["image_size"]),
            boxes=None if box is None else [box],
            scales=tuple(settings["scales"]),
            precision=precision,
            device=self.device,
            progress=False,
        )

    def search(self, descriptors: np.ndarray, k: int = 10) -> list[list[Hit]]:
        """The top-k indexed images for each row of Q x D descriptors."""
        k = min(int(k), len(self))
        if k <= 0:
            return [[] for _ in descriptors]
        scores, rows = self.index.search(np.ascontiguousarray(descriptors, dtype=np.float32), k)
        paths = self.store.paths
        return [
            [
                Hit(rank + 1, int(row), paths[row], float(score))
                for rank, (row, score) in enumerate(zip(row_ids, row_scores, strict=True))
            ]
            for row_ids, row_scores in zip(rows, scores, strict=True)
        ]

    def search_image(self, image: str | Path, box: Box | None = None, k: int = 10) -> list[Hit]:
        """The top-k indexed images for a query image (optionally its box only)."""
        check_query(image, box)
        return self.search(self.describe(image, box), k)[0]

    def search_path(self, path: str, k: int = 10) -> list[Hit]:
        """The top-k indexed images for an indexed image (its stored descriptor)."""
        row = self._rows.get(str(path))
        if row is None:
            raise SearchError(f"{path} is not in the index {self.index_dir}")
        return self.search(self.store.descriptors[row : row + 1], k)[0]


def check_query(image: str | Path, box: Box | None = None) -> None:
    """Refuse a query image that is missing or does not load, or a box that misses it, by name."""
    if not Path(image).is_file():
        raise SearchError(f"query image {image} not found; pass the path of a photo")
    try:
        size = load_image(image).size
        if box is not None:
            prepared_size(size, max(size), box)  # the box check of the extraction itself
    except ValueError as err:  # the loader's and the box check's messages name the file or box
        raise SearchError(f"query {image}: {err}") from err


def ukbench_score(store: IndexStore) -> float:
    """UKBench N-S score of an index of ukbench%05d.jpg images, each querying the index.

    As the benchmark (evaluate.py datasets=[ukbench]): the stored descriptors query the stored
    FAISS index and every image's top 4, itself included, is scored.
    """
    labels = []
    for path in store.paths:
        match = UKBENCH_NAME.fullmatch(Path(path).name)
        if match is None:
            raise SearchError(
                f"{path} is not a UKBench image (ukbench%05d.jpg); index a UKBench folder only"
            )
        labels.append(int(match.group(1)) // 4)  # 4 photos per object, as formats.load_ukbench
    _, ranks = store.faiss_index().search(store.descriptors, min(4, len(store.images)))
    return ukbench_ns_score(ranks, np.asarray(labels))
