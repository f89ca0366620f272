"""Pixel retrieval: IoU, mIoU and pixel mAP on hand-made cases; PROxford file formats."""

import io
import pickle

import numpy as np
import pytest

from retrieval.data import formats
from retrieval.eval.pixel import (
    THRESHOLDS,
    box_iou,
    evaluate_pixel,
    mask_iou,
    mean_iou,
    pixel_map,
)


def test_thresholds_are_50_to_95_by_5():
    assert THRESHOLDS == (0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95)


def test_box_iou_by_hand():
    assert box_iou((0, 0, 2, 2), (1, 1, 3, 3)) == pytest.approx(1 / 7)
    assert box_iou((0, 0, 2, 2), (0, 0, 2, 2)) == 1.0
    assert box_iou((0, 0, 1, 1), (2, 2, 3, 3)) == 0.0
    assert box_iou((0, 0, 4, 2), (0, 0, 2, 2)) == 0.5
    assert box_iou(None, (0, 0, 1, 1)) == 0.0


def test_mask_iou_by_hand():
    a = np.zeros((4, 5), bool)
    a[1:3, 1:4] = True  # 6 pixels
    b = np.zeros((4, 5), bool)
    b[2:4, 2:5] = True  # 6 pixels, 2 shared
    assert mask_iou(a, b) == pytest.approx(2 / 10)
    assert mask_iou(a, np.zeros_like(a)) == 0.0
    assert mask_iou(np.zeros_like(a), np.zeros_like(a)) == 0.0
    with pytest.raises(ValueError, match="resize first"):
        mask_iou(a, np.zeros((5, 4), bool))


def test_mean_iou_averages_positives_then_queries():
    ious = {(0, 1): 1.0, (0, 2): 0.0, (1, 3): 0.4}
    positives = [np.array([1, 2]), np.array([3, 4]), np.array([], dtype=int)]
    # query 0: 0.5; query 1: pair (1, 4) has no labels and is left out -> 0.4; query 2: none
    assert mean_iou(ious, positives) == pytest.approx(45.0)
    with pytest.raises(ValueError, match="outside"):
        mean_iou({(0, 1): 1.5}, positives)


def test_pixel_map_official_semantics_by_hand():
    ranks = np.array([[1, 2, 0]])  # db 2 is a negative
    gnd = [{"ok": np.array([0, 1]), "junk": np.array([], dtype=int)}]
    ious = {(0, 0): 0.9, (0, 1): 0.6}
    # t = 0.50, 0.55: both pass, at positions 0 and 2: (1 + 1) / 4 + (1/2 + 2/3) / 4
    both = 0.5 + (0.5 + 2 / 3) / 4
    # t = 0.60 .. 0.85: 0.6 fails (strict >), so db 1 is a negative and only db 0 counts, at 2
    one = (0 + 1 / 3) / 2
    # t = 0.90, 0.95: nobody passes; no query is left, the threshold scores 0
    expected = 100 * (2 * both + 6 * one) / 10
    assert pixel_map(ranks, gnd, ious) == pytest.approx(expected)


def test_pixel_map_skipped_queries_count_as_zero_and_junk_is_removed():
    ranks = np.array([[0, 1], [0, 1]])
    gnd = [{"ok": np.array([1]), "junk": np.array([0])}] * 2
    ious = {(0, 1): 0.99, (1, 1): 0.99}
    assert pixel_map(ranks, gnd, ious) == pytest.approx(100.0)  # junk at rank 0 removed
    assert pixel_map(ranks, gnd, ious, skipped=[1]) == pytest.approx(50.0)
    assert pixel_map(ranks, gnd, {}) == 0.0  # a missing pair has IoU 0


def test_evaluate_pixel_medium_and_hard_positives():
    gnd = [{"easy": np.array([0]), "hard": np.array([1]), "junk": np.array([2])}]
    ranks = np.array([[0, 2, 1]])
    box = {(0, 0): 1.0, (0, 1): 0.0}
    mask = {(0, 0): 0.2, (0, 1): 0.8}
    got = evaluate_pixel(ranks, gnd, box, mask)
    assert got["M/mIoU-box"] == pytest.approx(50.0) and got["H/mIoU-box"] == 0.0
    assert got["M/mIoU-mask"] == pytest.approx(50.0) and got["H/mIoU-mask"] == pytest.approx(80)
    assert got["H/pmAP-box"] == 0.0
    assert got["M/pmAP-box"] == pytest.approx(100.0)  # only db 0 passes, ranked first
    # Hard: db 1 passes up to t = 0.75 and sits at position 1 once junk and easy are removed,
    # i.e. position 0: AP 1 for 6 of the 10 thresholds
    assert got["H/pmAP-mask"] == pytest.approx(60.0)


# --------------------------------------------------------------------------------------------
# files: labelme polygons and the pair -> label map
# --------------------------------------------------------------------------------------------


def test_labelme_round_trip_and_rectangles(tmp_path):
    polygons = [np.array([[1, 1], [3, 1], [3, 3]]), np.array([[5, 5], [6, 5], [6, 6]])]
    path = tmp_path / "a.json"
    formats.write_labelme(path, polygons, (8, 7), "../jpg/a.jpg")
    back, size = formats.read_labelme(path)
    assert size == (8, 7)
    for a, b in zip(polygons, back, strict=True):
        np.testing.assert_array_equal(a, b)
    path.write_text(
        '{"shapes": [{"points": [[1, 2], [4, 6]], "shape_type": "rectangle"}], '
        '"imageWidth": 9, "imageHeight": 9}'
    )
    (rect,), _ = formats.read_labelme(path)
    np.testing.assert_array_equal(rect, [[1, 2], [4, 2], [4, 6], [1, 6]])
    path.write_text("{}")
    with pytest.raises(formats.DatasetFormatError, match="not a labelme annotation"):
        formats.read_labelme(path)


def test_pair_labels_npy_as_published_and_restricted(tmp_path):
    path = tmp_path / "oxford_pair2labelpath.npy"
    formats.write_pair_labels(path, {(0, 12): "labels/0_12.json", (3, 4): "labels/3_4.json"})
    # the official code reads it with np.load(allow_pickle=True).item()
    assert np.load(path, allow_pickle=True).item() == {
        "0_12": "labels/0_12.json",
        "3_4": "labels/3_4.json",
    }
    expected = {(0, 12): "labels/0_12.json", (3, 4): "labels/3_4.json"}
    assert formats.read_pair_labels(path) == expected
    # a pickle that calls anything is refused
    evil = io.BytesIO()
    np.lib.format.write_array_header_1_0(evil, {"descr": "|O", "fortran_order": False, "shape": ()})
    pickle.dump(_Evil(), evil)
    path.write_bytes(evil.getvalue())
    with pytest.raises(pickle.UnpicklingError, match="refusing"):
        formats.read_pair_labels(path)


class _Evil:
    def __reduce__(self):
        import os

        return (os.getcwd, ())


def test_pixel_groundtruth_paths(tmp_path):
    assert formats.pair_labels_path(tmp_path, "roxford5k") == (
        tmp_path / "test" / "pixel_retrieval_benchmarks" / "oxford_pair2labelpath.npy"
    )
    assert formats.pair_labels_path(tmp_path, "synthetic-rox") == (
        tmp_path / "test" / "synthetic-rox" / "pixel" / "synthetic-rox_pair2labelpath.npy"
    )
    with pytest.raises(FileNotFoundError, match="pixel_retrieval_benchmarks archive"):
        formats.load_pixel_groundtruth(tmp_path, "rparis6k")
    formats.write_pair_labels(formats.pair_labels_path(tmp_path, "rparis6k"), {(1, 2): "x.json"})
    assert formats.load_pixel_groundtruth(tmp_path, "rparis6k") == {
        (1, 2): tmp_path / "test" / "pixel_retrieval_benchmarks" / "x.json"
    }
