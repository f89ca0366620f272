"""Plain records shared by the layers: boxes and retrieval benchmarks (no I/O)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

# A region of an image in pixels: (x1, y1, x2, y2), x2 > x1 and y2 > y1.
Box = tuple[float, float, float, float]

PROTOCOLS = ("revisited", "oxford", "ukbench", "holidays", "gldv2", "generic")


@dataclass
class RetrievalBenchmark:
    """A retrieval test set: database images, queries (with optional boxes) and ground truth.

    ``gnd[q]`` holds int64 index arrays into ``images``: 'easy'/'hard'/'junk' for the revisited
    protocol, 'ok'/'junk' for all others. When a query is itself a database image
    (``query_db_index[q] >= 0``; UKBench, Holidays, generic leave-one-out) that image is listed in
    its 'junk' so that it counts neither as a hit nor a miss.
    """

    name: str
    images: list[Path]
    queries: list[Path]
    query_boxes: list[Box | None]
    gnd: list[dict[str, Any]]
    protocol: str
    labels: list[str] | None = None
    query_labels: list[str] | None = None
    query_db_index: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.protocol not in PROTOCOLS:
            raise ValueError(
                f"benchmark {self.name!r}: unknown protocol {self.protocol!r}; "
                f"use one of {', '.join(PROTOCOLS)}"
            )
        if not len(self.queries) == len(self.query_boxes) == len(self.gnd):
            raise ValueError(
                f"benchmark {self.name!r}: {len(self.queries)} queries, "
                f"{len(self.query_boxes)} boxes and {len(self.gnd)} gnd entries; need one each"
            )

    @property
    def query_in_db(self) -> bool:
        """True when the queries are database images (leave-one-out evaluation)."""
        return self.query_db_index is not None and bool(np.any(self.query_db_index >= 0))
