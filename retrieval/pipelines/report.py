"""Terminal reports: Markdown tables of figures."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def markdown_table(rows: Mapping[str, Mapping[str, float]], digits: int = 2) -> str:
    """A Markdown table with one row per name and one column per figure."""
    columns: list[str] = []
    for figures in rows.values():
        columns += [c for c in figures if c not in columns]
    lines = ["| | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for name, figures in rows.items():
        cells = [f"{figures[c]:.{digits}f}" if c in figures else "" for c in columns]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def print_before_after(results: dict[str, Any]) -> None:
    """Print the validation benchmark's figures before and after training."""
    rows = {k: results[k] for k in ("before", "after") if results.get(k)}
    if rows:
        print(f"\n{results['benchmark']} (percent):\n{markdown_table(rows)}")
    print(f"\nrun directory: {results['run_dir']}\nmodel: {results['model']}")
