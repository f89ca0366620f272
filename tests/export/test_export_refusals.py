"""What cannot be exported is refused with a message that says why and what to do; a file that
fails its check is never written."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from retrieval.export import ExportError, export_network
from retrieval.models.net import build_net

SMALL = ((64, 48),)


@pytest.fixture(scope="module")
def resnet18():
    torch.manual_seed(0)
    return build_net("resnet18", "gem").eval()


def test_a_missing_package_names_the_install_command(
    resnet18, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "onnxscript", None)  # as if not installed
    with pytest.raises(ExportError, match=r'onnxscript.*pip install -e "\.\[export\]"'):
        export_network(resnet18, tmp_path / "net.onnx", "onnx")
    assert not (tmp_path / "net.onnx").exists()


def test_an_unknown_format_lists_the_formats(resnet18, tmp_path: Path) -> None:
    listed = r"unknown export format 'tflite'; choose one of \['onnx', 'torchscript'\]"
    with pytest.raises(ExportError, match=listed):
        export_network(resnet18, tmp_path / "net.tflite", "tflite")


def test_an_int8_trunk_is_refused(resnet18, tmp_path: Path) -> None:
    from retrieval.extraction.quantize import CalibrationError, quantize_trunk

    net = build_net("resnet18", "gem").eval()
    try:
        net.backbone.features = quantize_trunk(net.backbone.features, [torch.rand(1, 3, 64, 64)])
    except CalibrationError as err:
        pytest.skip(f"no int8 engine here: {err}")
    with pytest.raises(ExportError, match="int8-quantised.*export the fp32 network"):
        export_network(net, tmp_path / "int8.pt", "torchscript")


def test_a_pooling_computed_from_the_size_in_python_is_refused(tmp_path: Path) -> None:
    """R-MAC picks its regions in Python from the map's size: no dynamic-size export exists."""
    torch.manual_seed(0)
    net = build_net("resnet18", "rmac")
    with pytest.raises(ExportError, match="cannot capture the network resnet18-rmac for every"):
        export_network(net, tmp_path / "rmac.pt", "torchscript")
    assert not (tmp_path / "rmac.pt").exists()


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_a_file_below_the_cosine_is_not_written(resnet18, tmp_path: Path) -> None:
    """A cosine of 1.5 cannot be reached: the measured ones are reported, the old file stays."""
    out = tmp_path / "net.pt"
    out.write_bytes(b"previous export")
    with pytest.raises(ExportError, match=r"disagrees.*64x48: 1\.0000.*nothing written") as err:
        export_network(resnet18, out, "torchscript", check_sizes=SMALL, min_cosine=1.5)
    assert "needs >= 1.5" in str(err.value)
    assert out.read_bytes() == b"previous export"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["net.pt"]  # no temporary file left


def test_check_sizes_below_the_smallest_side_are_refused(resnet18, tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="each side at least 33 px for resnet18-gem"):
        export_network(resnet18, tmp_path / "net.pt", "torchscript", check_sizes=((20, 64),))


def test_a_folder_as_output_is_refused(resnet18, tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="is a folder; name the file"):
        export_network(resnet18, tmp_path, "torchscript")


def test_only_retrieval_networks_are_exported(tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="takes a RetrievalNet.*got Conv2d"):
        export_network(torch.nn.Conv2d(3, 4, 3), tmp_path / "x.pt", "torchscript")
