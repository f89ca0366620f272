"""``python -m retrieval.export``: a checkpoint in, a checked file out; refusals in one line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torchvision.transforms.functional import normalize

from retrieval.checkpoint import LIGHTNING_META_KEY, save_checkpoint
from retrieval.export.__main__ import main
from retrieval.models.net import build_net

REPO = Path(__file__).resolve().parents[2]


def _lightning_checkpoint(path: Path, net) -> Path:
    """A checkpoint in Lightning's layout (RetrievalModule: meta in hparams, weights under net.)."""
    state = {f"net.{k}": v for k, v in net.state_dict().items()}
    state["criterion.margin"] = torch.tensor(0.7)  # the module's other weights are left out
    torch.save({"hyper_parameters": {LIGHTNING_META_KEY: net.meta}, "state_dict": state}, path)
    return path


@pytest.mark.filterwarnings("ignore::FutureWarning")  # torch.jit is deprecated in favour of export
def test_cli_exports_a_lightning_checkpoint_beside_it(tmp_path: Path, capsys) -> None:
    torch.manual_seed(0)
    net = build_net("resnet18", "gem", pooling_args={"p": 2.5}).eval()
    checkpoint = _lightning_checkpoint(tmp_path / "last.ckpt", net)
    code = main([str(checkpoint), "--format", "torchscript", "--check-sizes", "64x64", "97x75"])
    out = capsys.readouterr().out
    assert code == 0, out
    written = tmp_path / "last.torchscript.pt"
    assert f"wrote {written} (torchscript, resnet18-gem)" in out
    assert "cosine to the eager network at 97x75: " in out and "H and W >= 33" in out
    # The file, run at a size the check did not use, gives the trained network's descriptors.
    images = torch.rand(2, 3, 90, 121)
    with torch.no_grad():
        got = torch.jit.load(str(written))(images)
        expected = net(normalize(images, net.meta["mean"], net.meta["std"]))
    cosines = torch.nn.functional.cosine_similarity(got, expected)
    assert cosines.min() >= 0.9999, cosines


def test_cli_refuses_a_checkpoint_that_is_not_one_in_one_line(tmp_path: Path, capsys) -> None:
    bad = tmp_path / "model.pt"
    bad.write_bytes(b"not a checkpoint")
    assert main([str(bad), "--format", "torchscript"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: Checkpoint {bad} holds pickled objects")
    assert "Traceback" not in err


def test_cli_refuses_an_unknown_checkpoint_layout(tmp_path: Path, capsys) -> None:
    raw = tmp_path / "weights.pt"
    torch.save(build_net("resnet18", "gem").state_dict(), raw)
    assert main([str(raw), "--format", "torchscript"]) == 2
    assert "has no 'meta' describing the network" in capsys.readouterr().err


def test_cli_rejects_a_malformed_size(tmp_path: Path, capsys) -> None:
    model = save_checkpoint(tmp_path / "model.pt", build_net("resnet18", "gem"))
    with pytest.raises(SystemExit) as exit_info:
        main([str(model), "--format", "onnx", "--check-sizes", "224"])
    assert exit_info.value.code == 2
    assert "'224' is not HEIGHTxWIDTH in pixels, e.g. 362x272" in capsys.readouterr().err


def test_python_m_retrieval_export_runs_and_refuses_cleanly(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "retrieval.export", str(tmp_path / "none.pt"), "--format", "onnx"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.strip() == f"error: Checkpoint not found: {tmp_path / 'none.pt'}"
    assert not (tmp_path / "none.onnx").exists()
