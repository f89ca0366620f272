"""Text files shared by the CSV and JSON formats: atomic writes and CSV with a checked header."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from retrieval.atomic import atomic_write
from retrieval.data.formats.checks import DatasetFormatError


def write_text(path: str | Path, text: str) -> None:
    """Write ``text`` as UTF-8, atomically."""
    atomic_write(path, lambda h: h.write(text.encode("utf-8")))


def csv_text(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A CSV document with ``header`` and ``rows`` (newline line ends)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()


def read_csv(path: Path, required: Sequence[str]) -> list[dict[str, str]]:
    """Rows of a CSV file with a header that must contain ``required`` columns."""
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        header = [h.strip() for h in reader.fieldnames or []]
        missing = [c for c in required if c not in header]
        if missing:
            raise DatasetFormatError(
                f"{path}: missing column(s) {missing}; the header is {header}, "
                f"expected at least {list(required)}"
            )
        reader.fieldnames = header
        return [{k: (v or "").strip() for k, v in row.items() if k is not None} for row in reader]
