"""Command line: ``python -m retrieval.data download NAME --root DIR [--force] [--parts SPEC]``."""

from __future__ import annotations

import argparse
import logging
import re
import sys
from collections.abc import Sequence

from retrieval.data.download.datasets import download_dataset
from retrieval.data.download.registry import REGISTRY, DatasetSpec
from retrieval.data.download.transfer import DownloadError

logger = logging.getLogger(__name__)


def parse_parts(text: str) -> set[int]:
    """Parse a part selection such as ``"0-9,20,30-31"`` into a set of part numbers."""
    parts: set[int] = set()
    for chunk in filter(None, (c.strip() for c in text.split(","))):
        match = re.fullmatch(r"(\d+)(?:-(\d+))?", chunk)
        if not match:
            raise ValueError(f"--parts: cannot read {chunk!r}; use numbers and ranges like 0-9,20")
        lo, hi = int(match.group(1)), int(match.group(2) or match.group(1))
        if hi < lo:
            raise ValueError(f"--parts: range {chunk!r} is reversed; write it as {hi}-{lo}")
        parts.update(range(lo, hi + 1))
    return parts


def _listing(registry: dict[str, DatasetSpec]) -> str:
    width = max(len(n) for n in registry)
    lines = []
    for name, spec in registry.items():
        extra = f" [{spec.note}]" if spec.note else ""
        lines.append(f"{name:<{width}}  {spec.description}{extra}")
    return "\n".join(lines) + "\n"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m retrieval.data download",
        description="Download a public retrieval dataset into data.root (cirtorch layout).",
    )
    parser.add_argument("name", nargs="?", help="dataset name (see --list)")
    parser.add_argument("--root", help="data.root folder that receives train/ and test/")
    parser.add_argument("--force", action="store_true", help="download again even if complete")
    parser.add_argument(
        "--parts", help="shards of a sharded dataset to fetch now, e.g. 0-9,20 (default: all)"
    )
    parser.add_argument("--list", action="store_true", help="list the known datasets and exit")
    return parser


def download_main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point: ``NAME --root DIR [--force] [--parts SPEC]`` or ``--list``."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.list:
        sys.stdout.write(_listing(REGISTRY))
        return 0
    if not args.name or not args.root:
        parser.error("give a dataset NAME and --root DIR (or --list to see the names)")
    if args.name not in REGISTRY:
        parser.error(f"unknown dataset {args.name!r}; known: {', '.join(sorted(REGISTRY))}")
    try:
        parts = parse_parts(args.parts) if args.parts else None
    except ValueError as err:
        parser.error(str(err))
    if parts is not None and not REGISTRY[args.name].sharded:
        parser.error(f"--parts applies to sharded datasets only; {args.name} has no parts")
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        download_dataset(args.name, args.root, force=args.force, parts=parts, registry=REGISTRY)
    except DownloadError as err:
        logger.error("%s", err)
        return 1
    return 0
