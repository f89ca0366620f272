"""Command line: ``python -m retrieval.export CHECKPOINT --format onnx|torchscript [--out PATH]``.

Writes the network of a checkpoint (train.py's model.pt or a Lightning .ckpt) as one file that
takes float32 RGB images B x 3 x H x W in [0, 1] and returns L2-normalised descriptors. The file
is run back at --check-sizes first and written only if it agrees with the eager network.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from retrieval.checkpoint import CheckpointError
from retrieval.export import (
    DEFAULT_CHECK_SIZES,
    FORMATS,
    INPUT_NAME,
    MIN_COSINE,
    OUTPUT_NAME,
    ExportError,
    export_checkpoint,
)


def image_size(text: str) -> tuple[int, int]:
    """'362x272' -> (362, 272): height x width in pixels."""
    height, sep, width = text.lower().partition("x")
    if not sep or not height.isdigit() or not width.isdigit() or "0" in (height, width):
        raise argparse.ArgumentTypeError(f"{text!r} is not HEIGHTxWIDTH in pixels, e.g. 362x272")
    return int(height), int(width)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m retrieval.export", description=__doc__)
    parser.add_argument("checkpoint", help="RUN/model.pt or RUN/checkpoints/*.ckpt of train.py")
    parser.add_argument("--format", required=True, choices=sorted(FORMATS))
    parser.add_argument(
        "--out", default=None, help="file to write (default: the checkpoint's name, new suffix)"
    )
    parser.add_argument(
        "--check-sizes",
        nargs="+",
        type=image_size,
        default=list(DEFAULT_CHECK_SIZES),
        metavar="HxW",
        help="sizes the written file must agree at (default: "
        + " ".join(f"{h}x{w}" for h, w in DEFAULT_CHECK_SIZES)
        + ")",
    )
    parser.add_argument(
        "--min-cosine",
        type=float,
        default=MIN_COSINE,
        help=f"lowest cosine to the eager network accepted at every size (default {MIN_COSINE})",
    )
    return parser


def _log_stages() -> None:
    """Our stage lines on stderr; the exporters' own INFO chatter stays off."""
    logger = logging.getLogger("retrieval.export")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
    logger.setLevel(logging.INFO)


def main(argv: Sequence[str] | None = None) -> int:
    """Export, print the cosines measured; 2 with a one-line reason when refused."""
    args = _parser().parse_args(argv)
    _log_stages()
    try:
        report = export_checkpoint(
            args.checkpoint, args.out, args.format, tuple(args.check_sizes), args.min_cosine
        )
    except (ExportError, CheckpointError, FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for (height, width), cosine in report.cosines.items():
        print(f"cosine to the eager network at {height}x{width}: {cosine:.7f}")
    print(
        f"wrote {report.path} ({report.format}, {report.network})\n"
        f"  input  '{INPUT_NAME}': float32 RGB, B x 3 x H x W, values in [0, 1], "
        f"H and W >= {report.min_side} (normalisation inside)\n"
        f"  output '{OUTPUT_NAME}': float32 B x {report.out_dim}, L2-normalised rows"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
