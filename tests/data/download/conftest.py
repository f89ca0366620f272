"""Download test fixtures: a local HTTP server with Range support, archives, a toy registry."""

from __future__ import annotations

import hashlib
import io
import random
import re
import tarfile
import threading
import zipfile
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from retrieval.data import download as D

# an incompressible payload large enough to be cut mid-transfer
BIG = random.Random(0).randbytes(256 * 1024)


class FileServer:
    """Serves ``files`` over HTTP with Range support; can cut the first response of a path."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.requests: list[tuple[str, str | None]] = []
        self.cut_first: dict[str, int] = {}  # path -> bytes sent before the first drop
        self.ignore_range = False
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802
                server.requests.append((self.path, self.headers.get("Range")))
                data = server.files.get(self.path)
                if data is None:
                    self.send_error(404, "Not Found")
                    return
                start = 0
                match = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
                if match and not server.ignore_range:
                    start = int(match.group(1))
                    if start >= len(data):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(data)}")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(len(data) - start))
                self.end_headers()
                body = data[start:]
                cut = server.cut_first.pop(self.path, None)
                self.wfile.write(body if cut is None else body[:cut])
                self.close_connection = True

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    def paths_requested(self) -> list[str]:
        return [path for path, _ in self.requests]


@pytest.fixture
def server() -> Iterator[FileServer]:
    srv = FileServer()
    srv.thread.start()
    yield srv
    srv.httpd.shutdown()
    srv.httpd.server_close()
    srv.thread.join(timeout=5)


def _make_tgz(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _make_zip(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zipped:
        for name, data in members.items():
            zipped.writestr(name, data)
    return buffer.getvalue()


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def make_tgz() -> Callable[[dict[str, bytes]], bytes]:
    """make_tgz({name: bytes}): a gzipped tar archive in memory."""
    return _make_tgz


@pytest.fixture
def make_zip() -> Callable[[dict[str, bytes]], bytes]:
    """make_zip({name: bytes}): a zip archive in memory."""
    return _make_zip


@pytest.fixture
def sha256() -> Callable[[bytes], str]:
    """sha256(bytes): the hex digest."""
    return _sha256


@pytest.fixture
def big() -> bytes:
    """An incompressible 256 KiB payload, large enough to be cut mid-transfer."""
    return BIG


@pytest.fixture
def toy_registry(server: FileServer) -> dict[str, D.DatasetSpec]:
    """A dataset 'toy': a flattened tgz, a zip subfolder and a checked file, all on ``server``."""
    tgz = _make_tgz({"oxbuild/a/all_souls_000001.jpg": b"A1", "oxbuild/b/big.jpg": BIG})
    zipped = _make_zip({"full/ukbench00000.jpg": b"U0", "index.html": b"<html/>"})
    gnd = b"gnd-bytes"
    server.files.update({"/ox.tgz": tgz, "/ukb.zip": zipped, "/gnd_toy.pkl": gnd})
    resources = (
        D.Resource(
            f"{server.url}/ox.tgz", "test/toy/jpg", sha256=_sha256(tgz), extract=True, flatten=True
        ),
        D.Resource(f"{server.url}/ukb.zip", "test/ukbench/full", extract=True, subdir="full"),
        D.Resource(f"{server.url}/gnd_toy.pkl", "test/toy/gnd_toy.pkl", sha256=_sha256(gnd)),
    )
    return {"toy": D.DatasetSpec("toy", "toy dataset", resources)}


@pytest.fixture
def leftovers() -> Callable[[Path], list[str]]:
    """leftovers(root): temporary or partial files anywhere under ``root``."""

    def find(root: Path) -> list[str]:
        return [
            str(p) for p in root.rglob("*") if ".extract-" in p.name or p.name.endswith(".part")
        ]

    return find
