"""retrieval-search's errors: an expected failure is one line naming the thing and the fix."""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest
import torch

import retrieval.search.cli as cli_module
import retrieval.search.engine as engine_module
import retrieval.search.store as store_module
from retrieval.search import update_index
from tests.search.helpers import FAST, FAST_CLI, cli, photo


@pytest.fixture
def indexed(tmp_path):
    photos, out = tmp_path / "photos", tmp_path / "index"
    paths = [photo(photos / f"p{i}.jpg", i) for i in range(3)]
    update_index(photos, out, **FAST)
    return photos, out, paths


def one_error_line(err: str, *expected: str) -> None:
    """`err` holds one error line, with no traceback, mentioning every `expected` text."""
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if "error:" in line]
    assert len(lines) == 1, err
    for text in expected:
        assert text in lines[0], (text, lines[0])


def test_query_input_errors(indexed, capsys, tmp_path):
    _, out, paths = indexed
    garbage = tmp_path / "garbage.jpg"
    garbage.write_bytes(b"not an image")
    missing = tmp_path / "missing.jpg"
    cases = [
        ([missing], [str(missing), "not found"]),
        ([garbage], [str(garbage)]),
        ([paths[0], "--box", "10", "10", "5", "5"], ["box"]),
        ([paths[0], "--box", "nan", "0", "10", "10"], ["box"]),
        ([paths[0], "--box", "500", "500", "600", "600"], ["box"]),
    ]
    for args, expected in cases:
        code, _, err = cli(capsys, "query", *args, "--index", out)
        assert code == 1
        one_error_line(err, *expected)


@pytest.mark.parametrize("command", ["index", "query"])
def test_cuda_without_a_gpu_suggests_the_cpu(indexed, capsys, monkeypatch, command):
    photos, out, paths = indexed
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    args = {"index": [photos, "--out", out, *FAST_CLI], "query": [paths[0], "--index", out]}
    code, _, err = cli(capsys, command, *args[command], "--device", "cuda")
    assert code == 1
    one_error_line(err, "--device cuda", "--device cpu")


def test_an_unknown_device_is_named(indexed, capsys):
    _, out, paths = indexed
    code, _, err = cli(capsys, "query", paths[0], "--index", out, "--device", "gpu0")
    assert code == 1
    one_error_line(err, "--device gpu0")


def test_a_port_in_use_is_named(indexed, capsys):
    _, out, _ = indexed
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        code, _, err = cli(capsys, "serve", "--index", out, "--port", port, "--device", "cpu")
    assert code == 1
    one_error_line(err, f"port {port}", "--port")


def test_an_unusable_out_folder_is_named(indexed, capsys, tmp_path):
    photos, _, _ = indexed
    a_file = tmp_path / "a_file"
    a_file.write_text("")
    code, _, err = cli(capsys, "index", photos, "--out", a_file, *FAST_CLI)
    assert code == 1
    one_error_line(err, str(a_file))


@pytest.mark.parametrize(
    "bug", [ValueError("a bug"), KeyError("a bug"), RuntimeError("a bug"), OSError("a bug")]
)
def test_an_unexpected_error_keeps_its_traceback(tmp_path, monkeypatch, bug):
    def buggy(*args, **kwargs):
        raise bug

    monkeypatch.setattr(store_module, "update_index", buggy)  # the command imports it on use
    with pytest.raises(type(bug), match="a bug"):
        cli_module.main(["index", str(tmp_path), "--out", str(tmp_path / "index")])


HEAVY = ("torch", "torchvision", "faiss", "numpy", "PIL")


def test_help_and_option_errors_import_neither_torch_nor_faiss():
    # A fresh interpreter: this one imported torch long ago.
    script = (
        "import sys\n"
        "from retrieval.search.cli import main\n"
        "for argv in (['--help'], ['index', '--help'], ['query', '--help'], ['serve', '--help'],"
        " ['query', 'photo.jpg']):\n"
        "    try:\n"
        "        main(argv)\n"
        "    except SystemExit as done:\n"
        "        print('exit', done.code)\n"
        f"print('loaded', sorted(set({HEAVY!r}) & set(sys.modules)))\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=120
    )
    assert run.stdout.count("exit 0") == 4 and "exit 2" in run.stdout  # 4 helps, 1 usage error
    assert "the following arguments are required: --index" in run.stderr
    assert "ImageNet efficientnet_lite0" in " ".join(run.stdout.split())  # the default shown
    assert "loaded []" in run.stdout, run.stdout.splitlines()[-1]


def test_a_wrong_query_is_named_before_the_network_loads(indexed, capsys, monkeypatch, tmp_path):
    _, out, _ = indexed

    def no_network(*args, **kwargs):
        raise AssertionError("the network was loaded for a query that cannot run")

    monkeypatch.setattr(engine_module, "load_network", no_network)
    code, _, err = cli(capsys, "query", tmp_path / "missing.jpg", "--index", out)
    assert code == 1
    one_error_line(err, "missing.jpg", "not found")
