"""Sweeps (`python train.py -m a=x,y b=u,v`): a summary table of every run's validation mAPs."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from retrieval.pipelines.report import markdown_table

log = logging.getLogger(__name__)

SUMMARY_NAME = "sweep_summary.md"


def _natural_key(path: Path) -> list[Any]:
    """Sort job folders 2 before 10."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", str(path))]


def collect_runs(sweep_dir: str | Path) -> list[dict[str, Any]]:
    """The results.json of every run under a sweep folder, in job order, with their folder."""
    sweep_dir = Path(sweep_dir)
    runs = []
    for path in sorted(sweep_dir.rglob("results.json"), key=_natural_key):
        results = json.loads(path.read_text())
        results["job_dir"] = str(path.parent.relative_to(sweep_dir))
        runs.append(results)
    return runs


def run_labels(runs: list[dict[str, Any]]) -> list[str]:
    """A label per run: the overrides whose values differ between runs (else the job folder)."""
    parsed = [dict(o.split("=", 1) for o in r.get("overrides") or [] if "=" in o) for r in runs]
    keys = list(dict.fromkeys(k for p in parsed for k in p))  # command-line order
    varying = [k for k in keys if len({p.get(k) for p in parsed}) > 1] or keys
    labels = [" ".join(f"{k}={p[k]}" for k in varying if k in p) for p in parsed]
    if len(set(labels)) < len(labels) or not all(labels):  # not telling runs apart
        return [
            f"{r['job_dir']}: {label}".rstrip(": ") for r, label in zip(runs, labels, strict=True)
        ]
    return labels


def sweep_summary(sweep_dir: str | Path) -> str:
    """A Markdown summary of a sweep: one row per run, its validation mAPs after training."""
    runs = collect_runs(sweep_dir)
    if not runs:
        return f"# Sweep {sweep_dir}\n\nNo run wrote results.json.\n"
    rows = {}
    for label, run in zip(run_labels(runs), runs, strict=True):
        after = run.get("after") or {}
        rows[label] = {k: float(v) for k, v in after.items() if "mAP" in k}
    benchmarks = sorted({str(r.get("benchmark")) for r in runs})
    return (
        f"# Sweep {sweep_dir}\n\n{len(runs)} runs; validation mAP after training (percent) on "
        f"{', '.join(benchmarks)}:\n\n{markdown_table(rows)}\n"
    )


def write_sweep_summary(sweep_dir: str | Path) -> Path:
    """Write SWEEP_DIR/sweep_summary.md and return its path."""
    path = Path(sweep_dir) / SUMMARY_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(sweep_summary(sweep_dir))
    return path


class SweepSummary(Callback):
    """Hydra callback: at the end of a multirun, writes and logs the sweep's summary table."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        path = write_sweep_summary(str(config.hydra.sweep.dir))
        log.info("sweep summary written to %s\n%s", path, path.read_text())
