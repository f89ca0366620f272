"""Generic folders: groundtruth.csv with roles, boxes and junk; leave-one-out; labelled images."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from retrieval.data import formats as F

Touch = Callable[[list[Path]], None]


def test_generic_with_roles_boxes_and_junk(tmp_path: Path, touch: Touch) -> None:
    rows = [
        {"path": "q/cat.jpg", "object_id": "cat", "role": "query", "bbx": [1, 2, 30, 40]},
        {"path": "q/dog.jpg", "object_id": "dog", "role": "query"},
        {"path": "db/cat1.jpg", "object_id": "cat", "role": "database"},
        {"path": "db/dog1.jpg", "object_id": "dog", "role": "database"},
        {"path": "db/cat2.jpg", "object_id": "cat", "role": "database", "junk": True},
        {"path": "db/dog2.jpg", "object_id": "dog", "role": "database", "junk": False},
    ]
    F.write_generic_groundtruth(tmp_path / "groundtruth.csv", rows)
    lines = (tmp_path / "groundtruth.csv").read_text().splitlines()
    assert lines[0] == "path,object_id,role,x1,y1,x2,y2,junk"
    assert lines[1] == "q/cat.jpg,cat,query,1,2,30,40,"
    touch([tmp_path / r["path"] for r in rows])
    bench = F.load_generic(tmp_path)
    assert bench.protocol == "generic" and not bench.query_in_db
    assert bench.queries == [tmp_path / "q/cat.jpg", tmp_path / "q/dog.jpg"]
    assert [p.name for p in bench.images] == ["cat1.jpg", "dog1.jpg", "cat2.jpg", "dog2.jpg"]
    assert bench.query_boxes == [(1.0, 2.0, 30.0, 40.0), None]
    np.testing.assert_array_equal(bench.gnd[0]["ok"], [0])
    np.testing.assert_array_equal(bench.gnd[0]["junk"], [2])
    np.testing.assert_array_equal(bench.gnd[1]["ok"], [1, 3])
    assert bench.gnd[1]["junk"].size == 0
    assert bench.labels == ["cat", "dog", "cat", "dog"] and bench.query_labels == ["cat", "dog"]


def test_generic_leave_one_out(tmp_path: Path, touch: Touch) -> None:
    rows = [{"path": f"{i}.png", "object_id": i // 2} for i in range(4)]
    rows.append({"path": "4.png", "object_id": 0, "junk": 1})
    F.write_generic_groundtruth(tmp_path / "groundtruth.csv", rows)
    touch([tmp_path / r["path"] for r in rows])
    bench = F.load_generic(tmp_path)
    assert bench.query_in_db and len(bench.queries) == 4  # the junk image is database-only
    np.testing.assert_array_equal(bench.gnd[0]["ok"], [1])
    np.testing.assert_array_equal(bench.gnd[0]["junk"], [0, 4])
    np.testing.assert_array_equal(bench.gnd[3]["ok"], [2])
    np.testing.assert_array_equal(bench.query_db_index, [0, 1, 2, 3])


def test_generic_problems(tmp_path: Path, touch: Touch) -> None:
    csv_path = tmp_path / "groundtruth.csv"
    csv_path.write_text(
        "path,object_id,role,x1,y1,x2,y2\n"
        "a.jpg,1,query,,,,\n"
        "b.jpg,2,database,,,,\n"
        "c.jpg,1,seed,,,,\n"
        "d.jpg,1,query,5,5,1,1\n"
    )
    touch([tmp_path / n for n in ("a.jpg", "c.jpg", "d.jpg")])
    with pytest.raises(F.DatasetFormatError) as info:
        F.load_generic(tmp_path)
    message = str(info.value)
    assert str(csv_path) in message
    assert "row 4 (c.jpg): role 'seed' must be 'query' or 'database'" in message
    assert "row 5 (d.jpg) box: bounding box must be [x1, y1, x2, y2] with x2>x1" in message
    assert "image 1: image file missing" in message and "b.jpg" in message


def test_generic_query_without_positive(tmp_path: Path) -> None:
    F.write_generic_groundtruth(
        tmp_path / "groundtruth.csv",
        [
            {"path": "a.jpg", "object_id": 1, "role": "query"},
            {"path": "b.jpg", "object_id": 2, "role": "database"},
        ],
    )
    with pytest.raises(F.DatasetFormatError, match=r"a.jpg \(object 1\): no database image"):
        F.load_generic(tmp_path, check_images=False)


def test_generic_missing_column_and_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="groundtruth.csv.*'path,object_id'"):
        F.load_generic(tmp_path)
    (tmp_path / "groundtruth.csv").write_text("path,label\na.jpg,1\n")
    with pytest.raises(F.DatasetFormatError, match=r"missing column\(s\) \['object_id'\]"):
        F.load_generic(tmp_path)
    with pytest.raises(ValueError, match=r"unknown column\(s\) \['colour'\]"):
        F.write_generic_groundtruth(
            tmp_path / "g.csv", [{"path": "a", "object_id": 1, "colour": "red"}]
        )


def test_read_labelled_images_contiguous_numeric_order(tmp_path: Path, touch: Touch) -> None:
    rows = [
        {"path": "x.jpg", "object_id": 10},
        {"path": "y.jpg", "object_id": 9},
        {"path": "z.jpg", "object_id": 10},
        {"path": "w.jpg", "object_id": 100},
    ]
    F.write_generic_groundtruth(tmp_path / "groundtruth.csv", rows)
    touch([tmp_path / r["path"] for r in rows])
    paths, labels = F.read_labelled_images(tmp_path)
    assert [p.name for p in paths] == ["x.jpg", "y.jpg", "z.jpg", "w.jpg"]
    np.testing.assert_array_equal(labels, [1, 0, 1, 2])


def test_generic_reader_on_ukbench_sample(shared_folder: Callable[[str], Path]) -> None:
    sample = shared_folder("ukbench_sample")
    bench = F.load_generic(sample)
    assert len(bench.images) == len(bench.queries) == 1000  # image_index column ignored
    assert bench.images[4] == sample / "images/ukbench00004.jpg"
    np.testing.assert_array_equal(bench.gnd[4]["ok"], [5, 6, 7])
    np.testing.assert_array_equal(bench.gnd[4]["junk"], [4])


def test_generic_reader_on_coil100(shared_folder: Callable[[str], Path]) -> None:
    sample = shared_folder("coil100_15deg")
    bench = F.load_generic(sample)
    first = bench.labels[0]
    same = [i for i, label in enumerate(bench.labels) if label == first]
    np.testing.assert_array_equal(bench.gnd[0]["ok"], same[1:])
    paths, labels = F.read_labelled_images(sample)
    assert len(paths) == len(bench.images) and labels.min() == 0
    assert labels.max() + 1 == len(set(bench.labels))
