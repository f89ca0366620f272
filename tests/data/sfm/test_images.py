"""The photo folder: empty, single and unreadable images are refused or listed with a reason;
copies are oriented and downscaled."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from retrieval.data.sfm.errors import SfmInputError
from retrieval.data.sfm.images import (
    find_images,
    image_id,
    prepare_images,
    read_manifest,
    write_manifest,
)


def photo(path, size=(200, 100), colour=(200, 30, 30), exif_orientation=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.new("RGB", size, colour)
    exif = Image.Exif()
    if exif_orientation:
        exif[0x0112] = exif_orientation
    image.save(path, exif=exif)
    return path


def test_empty_folder_names_the_folder_and_the_suffixes(tmp_path):
    (tmp_path / "notes.txt").write_text("no photos here")
    with pytest.raises(SfmInputError, match=r"no images in .*\.jpg"):
        find_images(tmp_path)


def test_missing_folder_is_named(tmp_path):
    with pytest.raises(SfmInputError, match="photo folder not found"):
        find_images(tmp_path / "nope")


def test_single_image_is_refused_before_anything_is_written(tmp_path):
    photo(tmp_path / "in" / "only.jpg")
    with pytest.raises(SfmInputError, match=r"a single readable image \(only.jpg\).*at least two"):
        prepare_images(tmp_path / "in", tmp_path / "work", 64)
    assert not (tmp_path / "work").exists()


def test_corrupt_images_are_listed_and_skipped(tmp_path):
    source = tmp_path / "in"
    photo(source / "a.jpg")
    photo(source / "sub" / "b.png")
    (source / "text.jpg").write_text("not an image")
    buffer = io.BytesIO()
    Image.new("RGB", (300, 300), (1, 2, 3)).save(buffer, format="JPEG")
    (source / "truncated.jpg").write_bytes(buffer.getvalue()[:400])
    prepared = prepare_images(source, tmp_path / "work", 64)
    assert prepared.sources == ["a.jpg", "sub/b.png"]
    assert sorted(name for name, _ in prepared.skipped) == ["text.jpg", "truncated.jpg"]
    assert all(reason for _, reason in prepared.skipped)
    assert prepared.cids == [image_id("a.jpg"), image_id("sub/b.png")]
    assert all(p.is_file() for p in prepared.paths)


def test_all_unreadable_lists_what_was_skipped(tmp_path):
    for name in ("x.jpg", "y.png"):
        (tmp_path / "in").mkdir(exist_ok=True)
        (tmp_path / "in" / name).write_bytes(b"\x00garbage")
    with pytest.raises(SfmInputError, match=r"no readable image.*skipped as unreadable: x.jpg"):
        prepare_images(tmp_path / "in", tmp_path / "work", 64)


def test_copies_are_oriented_downscaled_jpegs(tmp_path):
    photo(tmp_path / "in" / "a.jpg", size=(400, 200), exif_orientation=6)  # rotated 90 degrees
    photo(tmp_path / "in" / "b.jpg", size=(50, 40))
    prepared = prepare_images(tmp_path / "in", tmp_path / "work", 100)
    with Image.open(prepared.paths[0]) as a, Image.open(prepared.paths[1]) as b:
        assert a.format == "JPEG" and a.size == (50, 100)  # upright, longest side 100
        assert b.size == (50, 40)  # never enlarged


def test_manifest_round_trips(tmp_path):
    photo(tmp_path / "in" / "a.jpg")
    photo(tmp_path / "in" / "b.jpg")
    (tmp_path / "in" / "c.jpg").write_text("broken")
    prepared = prepare_images(tmp_path / "in", tmp_path / "work", 64)
    write_manifest(prepared, tmp_path / "work" / "images.json")
    again = read_manifest(tmp_path / "work" / "images.json")
    assert (again.cids, again.sources, again.skipped) == (
        prepared.cids,
        prepared.sources,
        prepared.skipped,
    )
    assert again.paths == prepared.paths


def test_an_output_inside_the_photo_folder_is_not_read_as_photos(tmp_path):
    photo(tmp_path / "a.jpg")
    photo(tmp_path / "b.jpg")
    photo(tmp_path / "out" / "train" / "set" / "colmap" / "images" / "copy.jpg")
    found = find_images(tmp_path, exclude=tmp_path / "out" / "train" / "set")
    assert [p.name for p in found] == ["a.jpg", "b.jpg"]
