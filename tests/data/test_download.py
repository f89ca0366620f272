"""Dataset downloads against a local HTTP server: extraction, checksums, resume, idempotence."""

from __future__ import annotations

import hashlib
import io
import os
import random
import re
import tarfile
import threading
import zipfile
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from retrieval.data import download as D
from retrieval.data import formats as F


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


def make_tgz(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def make_zip(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zipped:
        for name, data in members.items():
            zipped.writestr(name, data)
    return buffer.getvalue()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# an incompressible payload large enough to be cut mid-transfer
BIG = random.Random(0).randbytes(256 * 1024)


def toy_registry(srv: FileServer) -> dict[str, D.DatasetSpec]:
    tgz = make_tgz({"oxbuild/a/all_souls_000001.jpg": b"A1", "oxbuild/b/big.jpg": BIG})
    zipped = make_zip({"full/ukbench00000.jpg": b"U0", "index.html": b"<html/>"})
    gnd = b"gnd-bytes"
    srv.files.update({"/ox.tgz": tgz, "/ukb.zip": zipped, "/gnd_toy.pkl": gnd})
    resources = (
        D.Resource(
            f"{srv.url}/ox.tgz", "test/toy/jpg", sha256=sha256(tgz), extract=True, flatten=True
        ),
        D.Resource(f"{srv.url}/ukb.zip", "test/ukbench/full", extract=True, subdir="full"),
        D.Resource(f"{srv.url}/gnd_toy.pkl", "test/toy/gnd_toy.pkl", sha256=sha256(gnd)),
    )
    return {"toy": D.DatasetSpec("toy", "toy dataset", resources)}


def leftovers(root: Path) -> list[str]:
    """Temporary or partial files anywhere under ``root``."""
    return [str(p) for p in root.rglob("*") if ".extract-" in p.name or p.name.endswith(".part")]


def test_full_download_extraction_and_checksum(server: FileServer, tmp_path: Path) -> None:
    registry = toy_registry(server)
    assert D.download_dataset("toy", tmp_path, registry=registry, retries=0)
    jpg = tmp_path / "test/toy/jpg"
    assert sorted(p.name for p in jpg.iterdir()) == ["all_souls_000001.jpg", "big.jpg"]
    assert (jpg / "big.jpg").read_bytes() == BIG
    assert (tmp_path / "test/ukbench/full/ukbench00000.jpg").read_bytes() == b"U0"
    assert not (tmp_path / "test/ukbench/index.html").exists()
    assert (tmp_path / "test/toy/gnd_toy.pkl").read_bytes() == b"gnd-bytes"
    assert (tmp_path / D.STATE_DIR / "toy.complete").is_file()
    assert not (tmp_path / D.STATE_DIR / "toy").exists()  # archives and markers cleaned up
    assert leftovers(tmp_path) == []


def test_second_run_makes_no_request(server: FileServer, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(D, "REGISTRY", toy_registry(server))
    assert D.download_main(["toy", "--root", str(tmp_path)]) == 0
    made = len(server.requests)
    assert made == 3
    assert D.download_main(["toy", "--root", str(tmp_path)]) == 0
    assert len(server.requests) == made
    assert D.download_main(["toy", "--root", str(tmp_path), "--force"]) == 0
    assert len(server.requests) == 2 * made


def test_resume_after_dropped_connection(server: FileServer, tmp_path: Path) -> None:
    registry = toy_registry(server)
    server.cut_first["/ox.tgz"] = 100_000
    assert D.download_dataset("toy", tmp_path, registry=registry, retries=2, retry_wait=0)
    ranges = [r for path, r in server.requests if path == "/ox.tgz"]
    assert ranges == [None, "bytes=100000-"]
    assert (tmp_path / "test/toy/jpg/big.jpg").read_bytes() == BIG


def test_resume_in_a_later_run(server: FileServer, tmp_path: Path) -> None:
    registry = toy_registry(server)
    server.cut_first["/ox.tgz"] = 50_000
    with pytest.raises(D.DownloadError) as info:
        D.download_dataset("toy", tmp_path, registry=registry, retries=0)
    assert f"{server.url}/ox.tgz" in str(info.value) and "ox.tgz" in str(info.value)
    part = tmp_path / D.STATE_DIR / "toy" / "ox.tgz.part"
    assert part.stat().st_size == 50_000
    assert not (tmp_path / "test/toy/jpg").exists()
    assert not (tmp_path / D.STATE_DIR / "toy.complete").exists()
    assert D.download_dataset("toy", tmp_path, registry=registry, retries=0)
    assert server.requests[-3] == ("/ox.tgz", "bytes=50000-")
    assert (tmp_path / "test/toy/jpg/big.jpg").read_bytes() == BIG


def test_server_ignoring_range_restarts_cleanly(server: FileServer, tmp_path: Path) -> None:
    payload = BIG[:70_000]
    server.files["/f.bin"] = payload
    part = tmp_path / "f.bin.part"
    part.write_bytes(b"stale prefix")
    server.ignore_range = True
    D.download_file(
        f"{server.url}/f.bin", tmp_path / "f.bin", sha256=sha256(payload), retries=0, progress=False
    )
    assert (tmp_path / "f.bin").read_bytes() == payload and not part.exists()


def test_part_already_complete_gets_416(server: FileServer, tmp_path: Path) -> None:
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


def test_bad_checksum_leaves_no_marker(server: FileServer, tmp_path: Path) -> None:
    registry = toy_registry(server)
    server.files["/gnd_toy.pkl"] = b"tampered"
    with pytest.raises(D.DownloadError) as info:
        D.download_dataset("toy", tmp_path, registry=registry, retries=0)
    message = str(info.value)
    assert f"sha256 mismatch for {server.url}/gnd_toy.pkl" in message
    assert f"got {sha256(b'tampered')}" in message
    assert not (tmp_path / "test/toy/gnd_toy.pkl").exists()
    assert not (tmp_path / D.STATE_DIR / "toy.complete").exists()
    assert leftovers(tmp_path) == []


def test_corrupt_archive_is_not_half_extracted(server: FileServer, tmp_path: Path) -> None:
    good = make_tgz({"p1/first.jpg": b"1"})
    bad = make_tgz({"p2/small.jpg": b"s", "p2/big.jpg": BIG})
    server.files.update({"/p1.tgz": good, "/p2.tgz": bad[: len(bad) * 2 // 3]})  # truncated
    resources = tuple(
        D.Resource(f"{server.url}/p{i}.tgz", "test/toy/jpg", extract=True, flatten=True)
        for i in (1, 2)
    )
    registry = {"toy": D.DatasetSpec("toy", "", resources)}
    with pytest.raises(D.DownloadError, match=r"could not extract .*p2.tgz into .*test/toy/jpg"):
        D.download_dataset("toy", tmp_path, registry=registry, retries=0)
    # the first archive is in place; nothing of the broken one (not even its intact member)
    assert [p.name for p in (tmp_path / "test/toy/jpg").iterdir()] == ["first.jpg"]
    assert leftovers(tmp_path) == []
    assert sorted(p.name for p in (tmp_path / "test/toy").iterdir()) == ["jpg"]
    assert not (tmp_path / D.STATE_DIR / "toy" / "p2.tgz").exists()  # the bad archive is gone
    assert not (tmp_path / D.STATE_DIR / "toy.complete").exists()
    server.files["/p2.tgz"] = bad
    assert D.download_dataset("toy", tmp_path, registry=registry, retries=0)
    assert server.paths_requested().count("/p1.tgz") == 1  # the finished part is not redone
    names = sorted(p.name for p in (tmp_path / "test/toy/jpg").iterdir())
    assert names == ["big.jpg", "first.jpg", "small.jpg"]


def test_zip_member_escaping_the_folder_is_refused(tmp_path: Path) -> None:
    archive = tmp_path / "evil.zip"
    archive.write_bytes(make_zip({"../outside.txt": b"x"}))
    with pytest.raises(D.DownloadError, match="escapes the target folder"):
        D.extract_archive(archive, tmp_path / "out" / "dest")
    assert not (tmp_path / "out" / "outside.txt").exists()
    assert not (tmp_path / "out" / "dest").exists()


def test_second_archive_merges_into_existing_folder(tmp_path: Path) -> None:
    for i in (1, 2):
        archive = tmp_path / f"p{i}.tgz"
        archive.write_bytes(
            make_tgz({f"paris/site{i}/img{i}.jpg": b"x", "paris/common/c.jpg": b"y"})
        )
        D.extract_archive(archive, tmp_path / "jpg", subdir="paris")
    assert sorted(
        p.relative_to(tmp_path / "jpg").as_posix() for p in (tmp_path / "jpg").rglob("*.jpg")
    ) == ["common/c.jpg", "site1/img1.jpg", "site2/img2.jpg"]


def test_http_404_and_offline_errors_name_url_and_destination(
    server: FileServer, tmp_path: Path
) -> None:
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


def test_published_md5_file_is_checked(server: FileServer, tmp_path: Path) -> None:
    tar = make_tgz({"0/1/2/0123.jpg": b"img"})
    server.files["/images_000.tar"] = tar
    server.files["/md5.images_000.txt"] = (
        f"{hashlib.md5(tar).hexdigest()}  images_000.tar\n".encode()
    )
    server.files["/images_001.tar"] = tar
    server.files["/md5.images_001.txt"] = b"00000000000000000000000000000000  images_001.tar\n"
    resources = tuple(
        D.Resource(
            f"{server.url}/images_00{i}.tar",
            "gldv2/index",
            extract=True,
            part=i,
            md5_url=f"{server.url}/md5.images_00{i}.txt",
        )
        for i in (0, 1)
    )
    registry = {"shards": D.DatasetSpec("shards", "", resources)}
    assert not D.download_dataset("shards", tmp_path, registry=registry, parts={0}, retries=0)
    assert (tmp_path / "gldv2/index/0/1/2/0123.jpg").read_bytes() == b"img"
    assert "/images_001.tar" not in server.paths_requested()
    with pytest.raises(D.DownloadError, match="md5 mismatch for .*images_001.tar"):
        D.download_dataset("shards", tmp_path, registry=registry, parts={1}, retries=0)
    assert not (tmp_path / D.STATE_DIR / "shards.complete").exists()
    server.files["/md5.images_001.txt"] = server.files["/md5.images_000.txt"]
    before = server.paths_requested().count("/images_000.tar")
    assert D.download_dataset("shards", tmp_path, registry=registry, retries=0)
    assert server.paths_requested().count("/images_000.tar") == before  # part 0 not fetched again


def test_required_dataset_and_symlink(server: FileServer, tmp_path: Path) -> None:
    registry = toy_registry(server)
    server.files["/gnd_rtoy.pkl"] = b"r"
    registry["rtoy"] = D.DatasetSpec(
        "rtoy",
        "",
        (D.Resource(f"{server.url}/gnd_rtoy.pkl", "test/rtoy/gnd_rtoy.pkl"),),
        links=(("test/rtoy/jpg", "test/toy/jpg"),),
        requires=("toy",),
    )
    assert D.download_dataset("rtoy", tmp_path, registry=registry, retries=0)
    link = tmp_path / "test/rtoy/jpg"
    assert link.is_symlink() and os.readlink(link) == "../toy/jpg"
    assert (link / "big.jpg").read_bytes() == BIG


def test_cli_list_unknown_name_and_parts(capsys) -> None:
    assert D.download_main(["--list"]) == 0
    listed = capsys.readouterr().out
    for name in (
        "retrieval-sfm-120k",
        "roxford5k",
        "rparis6k",
        "revisitop1m",
        "ukbench",
        "holidays",
        "gldv2",
        "gldv2-train",
    ):
        assert re.search(rf"^{re.escape(name)}\s", listed, re.M), name
    with pytest.raises(SystemExit) as info:
        D.download_main(["roxford6k", "--root", "/tmp/x"])
    assert info.value.code == 2
    assert "unknown dataset 'roxford6k'; known:" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        D.download_main(["roxford5k", "--root", "/tmp/x", "--parts", "1-3"])
    assert "--parts applies to sharded datasets only" in capsys.readouterr().err
    assert D.parse_parts("0-2, 7,9-10") == {0, 1, 2, 7, 9, 10}
    with pytest.raises(ValueError, match="range '5-1' is reversed"):
        D.parse_parts("5-1")


def test_registry_matches_loader_layout() -> None:
    def dests(name: str) -> set[str]:
        return {r.dest for r in D.REGISTRY[name].resources}

    root = Path("/r")
    for name in ("roxford5k", "rparis6k", "oxford5k", "paris6k"):
        assert F.gnd_path(root, name).relative_to(root).as_posix() in dests(name)
        assert D.REGISTRY[name].resources[-1].url == (
            f"http://cmp.felk.cvut.cz/cnnimageretrieval/data/test/{name}/gnd_{name}.pkl"
        )
    sfm = "retrieval-SfM-120k"
    assert {
        F.sfm_db_path(root, sfm).relative_to(root).as_posix(),
        F.sfm_whiten_path(root, sfm).relative_to(root).as_posix(),
        F.sfm_ims_dir(root, sfm).relative_to(root).as_posix(),
    } <= dests("retrieval-sfm-120k")
    r1m = D.REGISTRY["revisitop1m"].resources
    assert len([r for r in r1m if r.part is not None]) == 100
    assert (
        r1m[-1].url == "http://ptak.felk.cvut.cz/revisitop/revisitop1m/jpg/revisitop1m.100.tar.gz"
    )
    assert len(D.REGISTRY["gldv2-train"].resources) == 502
    for spec in D.REGISTRY.values():
        for resource in spec.resources:
            assert re.match(r"(https?|ftp)://", resource.url) and not resource.dest.startswith("/")
