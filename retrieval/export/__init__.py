"""Export a retrieval network to ONNX or TorchScript, checked against the eager network.

``python -m retrieval.export CHECKPOINT --format onnx|torchscript`` or, from Python,
``export_checkpoint(path, format=...)`` / ``export_network(net, out, format=...)``. The exported
model takes float32 RGB images B x 3 x H x W in [0, 1] (normalisation inside) and returns
B x D L2-normalised descriptors at that one scale; batch, height and width are dynamic.
Before anything is written the file is run back at several sizes; below a cosine of 0.9999 to
the eager network at any of them, nothing is written.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torchvision.transforms.functional import normalize

from retrieval.atomic import atomic_write
from retrieval.checkpoint import load_checkpoint
from retrieval.export.capture import (
    ExportError,
    check_exportable,
    describe,
    export_program,
    first_line,
    min_side,
)
from retrieval.export.formats import FORMATS, INPUT_NAME, OUTPUT_NAME, Runner, export_format
from retrieval.models.net import RetrievalNet

log = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_CHECK_SIZES",
    "FORMATS",
    "INPUT_NAME",
    "MIN_COSINE",
    "OUTPUT_NAME",
    "ExportError",
    "ExportReport",
    "default_output",
    "export_checkpoint",
    "export_network",
]

# Sizes (height, width) the exported file is run at before it is written: square, portrait,
# landscape and odd sides, so that a size frozen at capture time cannot pass.
DEFAULT_CHECK_SIZES: tuple[tuple[int, int], ...] = ((224, 224), (362, 272), (300, 500), (517, 389))
MIN_COSINE = 0.9999
_CHECK_BATCH = 2  # two images per size: the batch dimension is checked too
_CHECK_SEED = 0


@dataclass(frozen=True)
class ExportReport:
    """What was written: the file, its format, the smallest side it takes and the cosine to the
    eager network (the lowest of the batch) at each checked (height, width)."""

    path: Path
    format: str
    network: str
    out_dim: int
    min_side: int
    cosines: dict[tuple[int, int], float]


def export_network(
    net: RetrievalNet,
    path: str | Path,
    format: str = "onnx",
    check_sizes: tuple[tuple[int, int], ...] = DEFAULT_CHECK_SIZES,
    min_cosine: float = MIN_COSINE,
) -> ExportReport:
    """Export `net`, run the result at `check_sizes`, and write it to `path` only if it agrees."""
    path = Path(path)
    if path.is_dir():
        raise ExportError(f"{path} is a folder; name the file to write, e.g. {path}/model.onnx")
    fmt = export_format(format)
    check_exportable(net)
    side = min_side(net)
    small = [(h, w) for h, w in check_sizes if min(h, w) < side]
    if small or not check_sizes:
        raise ExportError(
            f"check sizes must be given, each side at least {side} px for {describe(net)}; "
            f"got {list(check_sizes)}"
        )
    log.info("capturing %s with torch.export (dynamic batch, height, width)", describe(net))
    program, model = export_program(net, side)
    metadata = _metadata(net, side)
    log.info("writing %s", format)
    try:
        data = fmt.write(program, metadata)
        run = fmt.load(data)
    except Exception as err:  # the exporter's or the runtime's own failure, of many types
        others = " or ".join(sorted(set(FORMATS) - {format}))
        raise ExportError(
            f"the {format} exporter failed on {describe(net)}: {first_line(err)}; "
            f"try --format {others}"
        ) from err
    log.info("running the %s file at %s", format, ", ".join(f"{h}x{w}" for h, w in check_sizes))
    cosines = _compare(model.net, run, check_sizes)
    worst = min(cosines.values())
    if not worst >= min_cosine:  # also refuses NaN
        raise ExportError(
            f"the {format} export of {describe(net)} disagrees with the eager network "
            f"(cosine {_format_cosines(cosines)}; needs >= {min_cosine}): nothing written to {path}"
        )
    atomic_write(path, lambda handle: handle.write(data))
    return ExportReport(path, format, describe(net), net.out_dim, side, cosines)


def export_checkpoint(
    checkpoint: str | Path,
    path: str | Path | None = None,
    format: str = "onnx",
    check_sizes: tuple[tuple[int, int], ...] = DEFAULT_CHECK_SIZES,
    min_cosine: float = MIN_COSINE,
) -> ExportReport:
    """Export the network of a checkpoint (train.py's model.pt or a Lightning .ckpt)."""
    export_format(format)  # a missing package is said before the checkpoint is read
    net = load_checkpoint(checkpoint)
    out = default_output(checkpoint, format) if path is None else path
    return export_network(net, out, format, check_sizes, min_cosine)


def default_output(checkpoint: str | Path, format: str) -> Path:
    """The checkpoint's path with the format's suffix: RUN/model.pt -> RUN/model.onnx."""
    checkpoint = Path(checkpoint)
    return checkpoint.with_name(checkpoint.stem + export_format(format).suffix)


def _compare(
    net: RetrievalNet, run: Runner, sizes: tuple[tuple[int, int], ...]
) -> dict[tuple[int, int], float]:
    """Lowest cosine between `run` on images in [0, 1] and the eager `net` (in eval mode, on
    the CPU) on them normalised."""
    generator = torch.Generator().manual_seed(_CHECK_SEED)
    mean, std = net.meta["mean"], net.meta["std"]
    cosines = {}
    for height, width in sizes:
        images = torch.rand(_CHECK_BATCH, 3, height, width, generator=generator)
        with torch.no_grad():
            expected = net(normalize(images, mean, std)).numpy()
        try:
            got = np.asarray(run(images.numpy()), dtype=np.float32)
        except Exception as err:  # the runtime's failure, of its own types
            raise ExportError(
                f"the exported model fails at {height} x {width}: {first_line(err)}"
            ) from err
        if got.shape != expected.shape:
            raise ExportError(
                f"the exported model gives shape {got.shape} at {height} x {width}, "
                f"the eager network {expected.shape}"
            )
        cosines[(height, width)] = float(np.min(_row_cosines(got, expected)))
    return cosines


def _row_cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine of each row of `a` with the same row of `b` (not assuming unit rows)."""
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return np.sum(a * b, axis=1) / np.maximum(norms, np.finfo(np.float32).tiny)


def _metadata(net: RetrievalNet, side: int) -> dict[str, str]:
    """What the file says about itself (ONNX metadata_props, TorchScript extra file)."""
    return {
        "retrieval.network": json.dumps(net.meta),
        "retrieval.input": (
            f"{INPUT_NAME}: float32 RGB, B x 3 x H x W, values in [0, 1], H and W >= {side}; "
            "mean/std normalisation is inside"
        ),
        "retrieval.output": f"{OUTPUT_NAME}: float32 B x {net.out_dim}, L2-normalised rows",
        # p of the multi-scale mean (mean d^p)^(1/p) that extraction uses over several sizes
        "retrieval.multiscale_exponent": repr(net.multiscale_exponent()),
    }


def _format_cosines(cosines: dict[tuple[int, int], float]) -> str:
    return ", ".join(f"{h}x{w}: {c:.6f}" for (h, w), c in cosines.items())
