"""Resumable stages: each finished stage leaves a marker (its parameters, seconds and summary);
a later run skips a stage whose marker matches, unless an earlier stage had to run again."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from retrieval.atomic import atomic_write

STAGES = (
    "images",
    "descriptors",
    "pairs",
    "features",
    "matches",
    "verification",
    "mapping",
    "dataset",
)


class Stages:
    """The markers of one work folder, and the seconds and summaries of this run's stages."""

    def __init__(self, work: Path) -> None:
        self.folder = work / "stages"
        self.rerun = False  # an earlier stage ran in this run: later ones must run too
        self.report: dict[str, dict[str, Any]] = {}

    def _marker(self, stage: str) -> Path:
        return self.folder / f"{stage}.json"

    def finished(
        self, stage: str, key: dict[str, Any], outputs: tuple[Path, ...] = ()
    ) -> dict[str, Any] | None:
        """The summary of ``stage`` when a previous run finished it with the same ``key`` and its
        ``outputs`` are still on disk."""
        path = self._marker(stage)
        if self.rerun or not path.is_file() or not all(p.exists() for p in outputs):
            return None
        marker = json.loads(path.read_text())
        if marker.get("key") != json.loads(json.dumps(key)):
            return None
        self.report[stage] = {"seconds": marker["seconds"], "resumed": True, **marker["summary"]}
        return marker["summary"]

    def run(
        self,
        stage: str,
        key: dict[str, Any],
        work: Callable[[], dict[str, Any]],
        outputs: tuple[Path, ...] = (),
    ) -> dict[str, Any]:
        """``work()``'s summary: from the marker when finished before, else run and mark it."""
        summary = self.finished(stage, key, outputs)
        if summary is not None:
            return summary
        self.rerun = True
        for later in STAGES[STAGES.index(stage) :]:
            self._marker(later).unlink(missing_ok=True)
        start = time.perf_counter()
        summary = work()
        seconds = round(time.perf_counter() - start, 3)
        marker = {"key": key, "seconds": seconds, "summary": summary}
        text = json.dumps(marker, indent=1).encode()
        atomic_write(self._marker(stage), lambda handle: handle.write(text))
        self.report[stage] = {"seconds": seconds, "resumed": False, **summary}
        return summary
