"""Archive extraction: escaping members are refused, a second archive merges into the folder."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from retrieval.data import download as D


def test_zip_member_escaping_the_folder_is_refused(
    tmp_path: Path, make_zip: Callable[[dict[str, bytes]], bytes]
) -> None:
    archive = tmp_path / "evil.zip"
    archive.write_bytes(make_zip({"../outside.txt": b"x"}))
    with pytest.raises(D.DownloadError, match="escapes the target folder"):
        D.extract_archive(archive, tmp_path / "out" / "dest")
    assert not (tmp_path / "out" / "outside.txt").exists()
    assert not (tmp_path / "out" / "dest").exists()


def test_second_archive_merges_into_existing_folder(
    tmp_path: Path, make_tgz: Callable[[dict[str, bytes]], bytes]
) -> None:
    for i in (1, 2):
        archive = tmp_path / f"p{i}.tgz"
        archive.write_bytes(
            make_tgz({f"paris/site{i}/img{i}.jpg": b"x", "paris/common/c.jpg": b"y"})
        )
        D.extract_archive(archive, tmp_path / "jpg", subdir="paris")
    assert sorted(
        p.relative_to(tmp_path / "jpg").as_posix() for p in (tmp_path / "jpg").rglob("*.jpg")
    ) == ["common/c.jpg", "site1/img1.jpg", "site2/img2.jpg"]
