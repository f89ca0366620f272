"""One file: resumed transfers, servers that ignore Range, 416, HTTP and network errors."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from retrieval.data import download as D


def test_server_ignoring_range_restarts_cleanly(
    server: Any, tmp_path: Path, sha256: Callable[[bytes], str], big: bytes
) -> None:
    payload = big[:70_000]
    server.files["/f.bin"] = payload
    part = tmp_path / "f.bin.part"
    part.write_bytes(b"stale prefix")
    server.ignore_range = True
    D.download_file(
        f"{server.url}/f.bin", tmp_path / "f.bin", sha256=sha256(payload), retries=0, progress=False
    )
    assert (tmp_path / "f.bin").read_bytes() == payload and not part.exists()


def test_part_already_complete_gets_416(server: Any, tmp_path: Path) -> None:
    payload = b"0123456789"
    server.files["/f.bin"] = payload
    (tmp_path / "f.bin.part").write_bytes(payload)
    D.download_file(
        f"{server.url}/f.bin",
        tmp_path / "f.bin",
        md5=hashlib.md5(payload).hexdigest(),
        retries=0,
        progress=False,
    )
    assert (tmp_path / "f.bin").read_bytes() == payload
    assert server.requests == [("/f.bin", "bytes=10-")]


def test_http_404_and_offline_errors_name_url_and_destination(server: Any, tmp_path: Path) -> None:
    dest = tmp_path / "x.pkl"
    with pytest.raises(D.DownloadError) as info:
        D.download_file(f"{server.url}/missing.pkl", dest, retries=2, retry_wait=0, progress=False)
    assert f"{server.url}/missing.pkl" in str(info.value) and str(dest) in str(info.value)
    assert "HTTP 404" in str(info.value)
    assert server.paths_requested() == ["/missing.pkl"]  # a 404 is not retried
    server.httpd.shutdown()
    server.httpd.server_close()
    with pytest.raises(D.DownloadError) as info:
        D.download_file(f"{server.url}/gone.pkl", dest, retries=1, retry_wait=0, progress=False)
    assert f"{server.url}/gone.pkl" in str(info.value) and "after 2 attempt(s)" in str(info.value)
    assert str(dest) in str(info.value)
