"""Checkpoints: our layout and Lightning's rebuild the same network from their meta."""

import pytest
import torch

from retrieval.checkpoint import (
    LIGHTNING_META_KEY,
    CheckpointError,
    load_checkpoint,
    save_checkpoint,
)
from retrieval.models.net import build_net


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    return build_net("resnet18", "gem", whitening=64).eval()


def test_checkpoint_round_trip_rebuilds_same_network(net, tmp_path):
    with torch.no_grad():
        net.pooling.p.fill_(4.5)
    path = save_checkpoint(tmp_path / "model.pt", net, epoch=3)
    loaded = load_checkpoint(path).eval()
    assert loaded.meta == net.meta
    x = torch.rand(2, 3, 64, 64)
    torch.testing.assert_close(loaded(x), net(x))
    payload = torch.load(path, weights_only=True)
    assert payload["epoch"] == 3
    assert not list(tmp_path.glob(".*tmp")), "no temporary file left behind"


def test_checkpoint_from_another_backbone_names_the_keys(net, tmp_path):
    path = save_checkpoint(tmp_path / "model.pt", net)
    payload = torch.load(path, weights_only=True)
    payload["meta"] = dict(payload["meta"], backbone="alexnet")
    torch.save(payload, path)
    with pytest.raises(ValueError, match=r"does not fit its network \(alexnet-gem\): missing keys"):
        load_checkpoint(path)


def test_checkpoint_without_meta_is_refused(tmp_path):
    path = tmp_path / "raw.pt"
    torch.save({"state_dict": {}}, path)
    with pytest.raises(ValueError, match="no 'meta'"):
        load_checkpoint(path)
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        load_checkpoint(tmp_path / "missing.pt")


def test_lightning_checkpoint_loads_the_net_it_holds(net, tmp_path):
    path = tmp_path / "last.ckpt"
    state = {f"net.{k}": v for k, v in net.state_dict().items()}
    state["loss_fn.weight"] = torch.zeros(3)  # other parts of the Lightning module are left out
    torch.save({"hyper_parameters": {LIGHTNING_META_KEY: net.meta}, "state_dict": state}, path)
    loaded = load_checkpoint(path).eval()
    x = torch.rand(2, 3, 64, 64)
    torch.testing.assert_close(loaded(x), net(x))


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("empty", "is empty or truncated"),
        ("truncated", "is empty or truncated"),
        ("cut_tail", "is empty or truncated"),
        ("text", "is not a PyTorch checkpoint"),
    ],
)
def test_damaged_checkpoint_is_named_with_a_fix(net, tmp_path, damage, message):
    path = save_checkpoint(tmp_path / "model.pt", net)
    whole = path.read_bytes()
    cuts = {"empty": b"", "truncated": whole[:500], "cut_tail": whole[:-10], "text": b"hello" * 9}
    path.write_bytes(cuts[damage])
    with pytest.raises(CheckpointError, match=f"checkpoint {path} {message}"):
        load_checkpoint(path)


def test_checkpoint_with_pickled_code_is_refused_whatever_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    marker, path = tmp_path / "pwned", tmp_path / "model.pt"
    torch.save({"meta": {}, "state_dict": {}, "x": Payload(marker)}, path)
    with pytest.raises(CheckpointError, match=f"{path} holds pickled objects"):
        load_checkpoint(path)
    assert not marker.exists()


class Payload:
    """Unpickling this runs code: it writes a marker file."""

    def __init__(self, marker) -> None:
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').write('pwned')",))
