"""Image loading: every photo mode to 8-bit RGB, query boxes checked and clipped, bad files."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from retrieval.data.transforms import (
    clip_box,
    load_image,
    open_image,
    prepare_pixels,
    prepared_size,
    thumbnail_size,
    to_rgb,
)


def _gray(mode: str, values: list) -> Image.Image:
    """A 1-row image of `mode` holding `values`."""
    img = Image.new(mode, (len(values), 1))
    img.putdata(values)
    return img


def _palette(mode: str) -> Image.Image:
    """A 1x1 palette image whose index 1 is (10, 20, 30)."""
    img = Image.new(mode, (1, 1))
    img.putpalette([0, 0, 0, 10, 20, 30])
    img.putpixel((0, 0), (1, 0) if mode == "PA" else 1)
    return img


def _gray_row(img: Image.Image) -> list[int]:
    """The 8-bit values of a gray image's row, checking that R = G = B."""
    rgb = to_rgb(img)
    assert rgb.mode == "RGB"
    pixels = np.asarray(rgb)
    assert (pixels == pixels[..., :1]).all()
    return pixels[0, :, 0].tolist()


# Expected values computed by hand: 16-bit v -> round(v * 255 / 65535) = round(v / 257).
@pytest.mark.parametrize(
    ("image", "expected"),
    [
        (Image.new("L", (1, 1), 77), (77, 77, 77)),
        (Image.new("LA", (1, 1), (77, 10)), (77, 77, 77)),  # alpha dropped
        (_palette("P"), (10, 20, 30)),
        (_palette("PA"), (10, 20, 30)),
        (Image.new("RGBA", (1, 1), (10, 20, 30, 0)), (10, 20, 30)),  # alpha dropped
        # (255 - C)(255 - K) / 255: 155 * 195 / 255 = 118.5 -> 119, 205 * 195 / 255 = 156.8 -> 157
        (Image.new("CMYK", (1, 1), (100, 50, 0, 60)), (119, 157, 195)),
        (Image.new("RGB", (1, 1), (1, 2, 3)), (1, 2, 3)),
    ],
    ids=["L", "LA", "P", "PA", "RGBA", "CMYK", "RGB"],
)
def test_eight_bit_modes_give_the_hand_computed_rgb(image, expected):
    assert to_rgb(image).getpixel((0, 0)) == expected


def test_palette_transparency_is_dropped_without_a_warning(recwarn):
    img = _palette("P")
    img.info["transparency"] = b"\x00\xff"  # per-entry alpha, as in some PNGs
    assert to_rgb(img).getpixel((0, 0)) == (10, 20, 30)
    assert not recwarn.list


@pytest.mark.parametrize("mode", ["I;16", "I;16B", "I;16L", "I"])
def test_sixteen_bit_gray_is_scaled_not_clipped(mode):
    # 1000 / 257 = 3.89 -> 4; 32896 / 257 = 128 exactly; 20000 / 257 = 77.8 -> 78
    assert _gray_row(_gray(mode, [0, 1000, 20000, 32896, 65535])) == [0, 4, 78, 128, 255]


def test_thirty_two_bit_integers_use_their_full_range():
    # 2**29 * 255 / (2**31 - 1) = 63.75 -> 64; negatives are black
    assert _gray_row(_gray("I", [-5, 0, 2**29, 2**31 - 1])) == [0, 0, 64, 255]


def test_float_images_scale_from_unit_or_integer_ranges():
    # [0, 1]: 0.25 * 255 = 63.75 -> 64; NaN is black
    assert _gray_row(_gray("F", [0.0, 0.25, 1.0, float("nan")])) == [0, 64, 255, 0]
    # above 1 and within 8 bits: as stored; within 16 bits: / 257 (1000 -> 3.89 -> 4)
    assert _gray_row(_gray("F", [0.0, 100.4, 255.0])) == [0, 100, 255]
    assert _gray_row(_gray("F", [0.0, 1000.0, 65535.0])) == [0, 4, 255]


def test_sixteen_bit_png_is_not_read_as_white(tmp_path):
    path = tmp_path / "deep.png"
    _gray("I;16", [0, 1000, 20000, 32896, 65535]).save(path)
    assert Image.open(path).mode.startswith("I")
    assert np.asarray(load_image(path))[0, :, 1].tolist() == [0, 4, 78, 128, 255]


def test_partly_outside_box_is_clipped_to_the_image():
    assert clip_box((-10, 5.4, 70, 30), (64, 48)) == (0, 5, 64, 30)
    assert clip_box((2, 3, 10, 12), (64, 48)) == (2, 3, 10, 12)


@pytest.mark.parametrize(
    ("box", "match"),
    [
        ((0, 0, float("inf"), 10), r"non-finite"),
        ((float("nan"), 0, 5, 10), r"non-finite"),
        ((5, 5, 5, 10), r"x1 < x2"),
        ((100, 0, 200, 10), r"outside the 64 x 48 image"),
        ((0, -30, 10, -1), r"outside the 64 x 48 image"),
        ((3.1, 0, 3.4, 10), r"outside the 64 x 48 image|empty"),
        ((1, 2, 3), r"4 numbers"),
    ],
)
def test_bad_boxes_are_refused_naming_the_box(box, match):
    with pytest.raises(ValueError, match=match) as err:
        clip_box(box, (64, 48))
    assert "box" in str(err.value)


def test_huge_box_costs_no_more_than_the_image(tmp_path):
    path = tmp_path / "small.png"
    Image.new("RGB", (64, 48), (9, 9, 9)).save(path)
    box = (0, 0, 12000, 12000)
    assert tuple(prepare_pixels(path, 1024, box).shape) == (3, 48, 64)
    assert prepared_size((64, 48), 1024, box) == (48, 64)
    assert prepared_size((64, 48), 1024, (0, 0, 1e9, 1e9)) == (48, 64)


def test_zero_byte_and_non_image_files_are_named(tmp_path):
    empty, text = tmp_path / "empty.jpg", tmp_path / "notes.png"
    empty.write_bytes(b"")
    text.write_text("not an image")
    for path in (empty, text):
        message = rf"Corrupt or unreadable image: .*{path.name}.*remove"
        with pytest.raises(ValueError, match=message):
            load_image(path)
        with pytest.raises(ValueError, match=path.name), open_image(path):
            pass


def test_decompression_bomb_names_the_file_and_the_fix(tmp_path, monkeypatch):
    path = tmp_path / "bomb.png"
    Image.new("RGB", (40, 40)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # 1600 > 2 x 100: refused as a bomb
    for read in (load_image, lambda p: open_image(p).__enter__()):
        with pytest.raises(ValueError, match=r"too large.*bomb\.png.*MAX_IMAGE_PIXELS"):
            read(path)


# --------------------------------------------------------------------------------------------
# Parity with cirtorch's loader (cirtorch/datasets/genericdataset.py ImagesFromList, re-written
# here from its source: pil_loader, crop by the box, imresize = thumbnail with ANTIALIAS)
# --------------------------------------------------------------------------------------------


def _cirtorch_image(path, imsize, bbx=None) -> np.ndarray:
    with open(path, "rb") as handle:
        img = Image.open(handle).convert("RGB")
    imfullsize = max(img.size)
    if bbx is not None:
        img = img.crop(bbx)
        img.thumbnail((imsize * max(img.size) / imfullsize,) * 2, Image.Resampling.LANCZOS)
    else:
        img.thumbnail((imsize, imsize), Image.Resampling.LANCZOS)
    return np.asarray(img).transpose(2, 0, 1)


def _photo(path, w: int, h: int, seed: int) -> None:
    """A smooth photo-like JPEG (gradients plus noise), so resampling differences show."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([x * 255 / w, y * 255 / h, (x + y) * 127 / (w + h)], axis=-1)
    noisy = np.clip(base + rng.normal(0, 40, base.shape), 0, 255).astype(np.uint8)
    Image.fromarray(noisy).save(path, quality=90)


@pytest.mark.parametrize(
    ("w", "h", "imsize", "bbx"),
    [
        (500, 375, 362, None),
        (375, 500, 362, None),
        (640, 427, 300, (12.3, 40.7, 501.5, 399.2)),
        (1024, 683, 1024, (136.5, 34.1, 648.5, 655.7)),  # a crop of a 1024 px image, not resized
        (800, 600, 256, (0, 0, 799.6, 301.4)),
        (333, 333, 1024, (10, 10, 100, 50)),  # no resize at all
    ],
)
def test_prepare_pixels_equals_cirtorch_loader(tmp_path, w, h, imsize, bbx):
    path = tmp_path / "photo.jpg"
    _photo(path, w, h, seed=w + h)
    ours = prepare_pixels(path, imsize, bbx).numpy()
    np.testing.assert_array_equal(ours, _cirtorch_image(path, imsize, bbx))
    assert prepared_size((w, h), imsize, bbx) == ours.shape[1:]


def test_query_crops_are_floored_like_cirtorch():
    # 1000 x 800 image, box 333 x 200 px: 362 * 333 / 1000 = 120.546 -> 120 (rounding: 121)
    assert prepared_size((1000, 800), 362, (0, 0, 333, 200)) == (72, 120)


def test_thumbnail_size_is_pillows_on_many_shapes():
    rng = np.random.default_rng(0)
    for w, h, side in rng.integers(1, 400, size=(400, 3)):
        img = Image.new("L", (int(w), int(h)))
        img.thumbnail((int(side), int(side)))
        assert thumbnail_size(int(w), int(h), int(side)) == img.size, (w, h, side)


def test_prepare_pixels_equals_cirtorch_loader_on_real_photos(shared_data):
    folder = shared_data / "holidays805/jpg"
    if not folder.is_dir():
        pytest.skip("holidays805 absent")
    for path in sorted(folder.glob("*.jpg"))[:6]:
        w, h = Image.open(path).size
        box = (w * 0.21, h * 0.13, w * 0.77, h * 0.91)
        for imsize, bbx in ((362, None), (300, box), (1024, box)):
            ours = prepare_pixels(path, imsize, bbx).numpy()
            np.testing.assert_array_equal(ours, _cirtorch_image(path, imsize, bbx))
