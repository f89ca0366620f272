"""Whole datasets against a local HTTP server: extraction, checksums, resume, idempotence."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from retrieval.data import download as D


def test_full_download_extraction_and_checksum(
    server: Any,
    tmp_path: Path,
    big: bytes,
    toy_registry: dict[str, D.DatasetSpec],
    leftovers: Callable[[Path], list[str]],
) -> None:
    registry = toy_registry
    assert D.download_dataset("toy", tmp_path, registry=registry, retries=0)
    jpg = tmp_path / "test/toy/jpg"
    assert sorted(p.name for p in jpg.iterdir()) == ["all_souls_000001.jpg", "big.jpg"]
    assert (jpg / "big.jpg").read_bytes() == big
    assert (tmp_path / "test/ukbench/full/ukbench00000.jpg").read_bytes() == b"U0"
    assert not (tmp_path / "test/ukbench/index.html").exists()
    assert (tmp_path / "test/toy/gnd_toy.pkl").read_bytes() == b"gnd-bytes"
    assert (tmp_path / D.STATE_DIR / "toy.complete").is_file()
    assert not (tmp_path / D.STATE_DIR / "toy").exists()  # archives and markers cleaned up
    assert leftovers(tmp_path) == []


def test_resume_after_dropped_connection(
    server: Any, tmp_path: Path, big: bytes, toy_registry: dict[str, D.DatasetSpec]
) -> None:
    registry = toy_registry
    server.cut_first["/ox.tgz"] = 100_000
    assert D.download_dataset("toy", tmp_path, registry=registry, retries=2, retry_wait=0)
    ranges = [r for path, r in server.requests if path == "/ox.tgz"]
    assert ranges == [None, "bytes=100000-"]
    assert (tmp_path / "test/toy/jpg/big.jpg").read_bytes() == big


def test_resume_in_a_later_run(
    server: Any, tmp_path: Path, big: bytes, toy_registry: dict[str, D.DatasetSpec]
) -> None:
    registry = toy_registry
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
    assert (tmp_path / "test/toy/jpg/big.jpg").read_bytes() == big


def test_bad_checksum_leaves_no_marker(
    server: Any,
    tmp_path: Path,
    sha256: Callable[[bytes], str],
    toy_registry: dict[str, D.DatasetSpec],
    leftovers: Callable[[Path], list[str]],
) -> None:
    registry = toy_registry
    server.files["/gnd_toy.pkl"] = b"tampered"
    with pytest.raises(D.DownloadError) as info:
        D.download_dataset("toy", tmp_path, registry=registry, retries=0)
    message = str(info.value)
    assert f"sha256 mismatch for {server.url}/gnd_toy.pkl" in message
    assert f"got {sha256(b'tampered')}" in message
    assert not (tmp_path / "test/toy/gnd_toy.pkl").exists()
    assert not (tmp_path / D.STATE_DIR / "toy.complete").exists()
    assert leftovers(tmp_path) == []


def test_corrupt_archive_is_not_half_extracted(
    server: Any,
    tmp_path: Path,
    make_tgz: Callable[[dict[str, bytes]], bytes],
    big: bytes,
    leftovers: Callable[[Path], list[str]],
) -> None:
    good = make_tgz({"p1/first.jpg": b"1"})
    bad = make_tgz({"p2/small.jpg": b"s", "p2/big.jpg": big})
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


def test_published_md5_file_is_checked(
    server: Any, tmp_path: Path, make_tgz: Callable[[dict[str, bytes]], bytes]
) -> None:
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


def test_required_dataset_and_symlink(
    server: Any, tmp_path: Path, big: bytes, toy_registry: dict[str, D.DatasetSpec]
) -> None:
    registry = toy_registry
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
    assert (link / "big.jpg").read_bytes() == big
