"""The suite's report: tables, the summary against the goals, and warnings about a busy machine."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from typing import Any

import torch

# The speed-up each part must reach against the reference (issue 19: CPU; bench/gpu.sh: GPU).
CPU_GOALS = {"extraction": 2.5, "mining": 2.5, "training": 1.5, "epoch": 1.5}
GPU_GOAL = 5.0
SPREAD_WARNING = 1.25  # slowest / fastest of one figure's repeats above this: a busy machine

# label -> slowest / fastest of its repeats, for every figure timed in this run.
SPREADS: dict[str, float] = {}
# Figures that cannot hold on a quiet machine (e.g. a bare forward slower than the full path).
ODDITIES: list[str] = []


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(
    fn: Callable[[], Any],
    device: torch.device,
    repeats: int = 1,
    label: str = "",
    warm_up: bool = True,
) -> tuple[float, Any]:
    """(seconds, result): the fastest of `repeats` calls after one untimed warm-up call.

    The warm-up builds oneDNN primitives per shape, cuDNN plans, fills the file cache; the best of
    a few is the figure least disturbed by a noisy machine, and their spread (recorded under
    `label`) says how noisy it was.
    """
    if warm_up:
        fn()
    times, result = [], None
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        result = fn()
        sync(device)
        times.append(time.perf_counter() - start)
    if label and len(times) > 1:
        SPREADS[label] = max(times) / min(times)
    return min(times), result


def load_per_core() -> float:
    """The 1-minute load average per CPU core (0 where unknown)."""
    try:
        return os.getloadavg()[0] / (os.cpu_count() or 1)
    except OSError:
        return 0.0


def table(rows: Mapping[str, Mapping[str, Any]], digits: int = 2) -> str:
    """A Markdown table: one row per name, one column per figure (numbers rounded, text as is)."""
    columns: list[str] = []
    for figures in rows.values():
        columns += [c for c in figures if c not in columns]
    lines = ["| | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for name, figures in rows.items():
        cells = [_cell(figures[c], digits) if c in figures else "" for c in columns]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _cell(value: Any, digits: int) -> str:
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def summary(sections: dict[str, dict[str, dict]], device: torch.device) -> dict[str, dict]:
    """One row per variant of ours: reference and our throughput, the speed-up, the goal."""
    rows = {}
    for name, section in sections.items():
        part = name.split(" ")[0].rstrip(":")
        if part == "search":  # one reference/ours pair per database size
            pairs = [
                (r, o)
                for (r, o) in zip(list(section)[::2], list(section)[1::2], strict=False)
                if "dense" in r
            ]
        else:
            reference, *variants = section
            pairs = [(reference, ours) for ours in variants]
        for reference, ours in pairs:
            unit = next(k for k in section[ours] if k.endswith("/s"))
            label = reference.split(":")[0]
            if part != "search":
                label = f"{name}, ours ({ours.split('(', 1)[1]}"
            speedup = section[ours]["speed-up vs reference"]
            rows[label] = {
                "reference": section[reference][unit],
                "ours": section[ours][unit],
                "speed-up": speedup,
            }
            goal = GPU_GOAL if device.type == "cuda" else CPU_GOALS.get(part)
            if goal is not None and part != "search":
                rows[label]["goal"] = f">= {goal:g}x"
                rows[label]["met"] = "yes" if speedup >= goal else "no"
    return rows


def warnings_text(start_load: float) -> str:
    """What says the figures were taken on a busy machine, or that none did."""
    lines = []
    if start_load > 0.5:
        lines.append(
            f"- the load average was {start_load:.1f} per core before the suite started: other "
            "work shared the CPU"
        )
    noisy = {label: s for label, s in SPREADS.items() if s > SPREAD_WARNING}
    for label, spread in sorted(noisy.items(), key=lambda item: -item[1]):
        lines.append(f"- {label}: repeats spread {spread:.2f}x (slowest / fastest)")
    lines += [f"- {oddity}" for oddity in ODDITIES]
    if not lines:
        worst = max(SPREADS.values(), default=1.0)
        return f"No sign of contention: repeats within {worst:.2f}x of each other."
    return (
        "WARNING: contended measurements; re-run on a quiet machine before quoting ratios:\n"
        + "\n".join(lines)
    )
