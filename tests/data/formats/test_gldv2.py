"""Google Landmarks v2: training CSVs, the retrieval solution and the benchmark."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from retrieval.data import formats as F

Touch = Callable[[list[Path]], None]


def test_gldv2_train_csv_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "gldv2/train.csv"
    F.write_gldv2_train_csv(path, ["0123456789abcdef", "fedcba9876543210"], [7, 12])
    assert path.read_text().splitlines() == [
        "id,url,landmark_id",
        "0123456789abcdef,,7",
        "fedcba9876543210,,12",
    ]
    train = F.read_gldv2_train(path)
    assert train.ids == ["0123456789abcdef", "fedcba9876543210"]
    np.testing.assert_array_equal(train.landmark_ids, [7, 12])
    assert train.image_paths[0] == tmp_path / "gldv2/train/0/1/2/0123456789abcdef.jpg"
    with pytest.raises(ValueError, match="2 ids but 1 landmark_ids"):
        F.write_gldv2_train_csv(path, ["a", "b"], [1])


def test_gldv2_train_clean_format(tmp_path: Path) -> None:
    path = tmp_path / "train_clean.csv"
    path.write_text("landmark_id,images\n1,aaa111 bbb222\n5,ccc333\n")
    train = F.read_gldv2_train(path)
    assert train.ids == ["aaa111", "bbb222", "ccc333"]
    np.testing.assert_array_equal(train.landmark_ids, [1, 1, 5])
    path.write_text("landmark_id,images\nx,aaa111\n")
    with pytest.raises(F.DatasetFormatError, match="row 2 landmark_id: expected an integer"):
        F.read_gldv2_train(path)


def gldv2_fixture(root: Path, touch: Touch) -> None:
    folder = root / "gldv2"
    folder.mkdir(parents=True)
    (folder / "index.csv").write_text("id\nidx000a\nidx000b\nidx000c\n")
    (folder / "retrieval_solution_v2.1.csv").write_text(
        "id,images,Usage\n"
        "tst000a,idx000b idx000c,Private\n"
        "tst000b,idx000a,Public\n"
        "tst000c,None,Ignored\n"
    )
    touch([F.gldv2_image_path(folder / "index", i) for i in ("idx000a", "idx000b", "idx000c")])
    touch([F.gldv2_image_path(folder / "test", i) for i in ("tst000a", "tst000b", "tst000c")])


def test_gldv2_solution_and_benchmark(tmp_path: Path, touch: Touch) -> None:
    gldv2_fixture(tmp_path, touch)
    solution = F.read_gldv2_solution(tmp_path / "gldv2/retrieval_solution_v2.1.csv")
    assert [(q.id, q.images, q.usage) for q in solution] == [
        ("tst000a", ["idx000b", "idx000c"], "Private"),
        ("tst000b", ["idx000a"], "Public"),
        ("tst000c", [], "Ignored"),
    ]
    private = F.load_gldv2(tmp_path)
    assert private.name == "gldv2-private" and private.protocol == "gldv2"
    assert private.queries == [tmp_path / "gldv2/test/t/s/t/tst000a.jpg"]
    np.testing.assert_array_equal(private.gnd[0]["ok"], [1, 2])
    both = F.load_gldv2(tmp_path, usage="all")
    assert [q.stem for q in both.queries] == ["tst000a", "tst000b"]
    with pytest.raises(ValueError, match="usage must be one of"):
        F.load_gldv2(tmp_path, usage="index")


def test_gldv2_unknown_index_image(tmp_path: Path, touch: Touch) -> None:
    gldv2_fixture(tmp_path, touch)
    (tmp_path / "gldv2/index.csv").write_text("id\nidx000a\nidx000b\n")
    with pytest.raises(
        F.DatasetFormatError, match=r"query tst000a: index image\(s\) \['idx000c'\]"
    ):
        F.load_gldv2(tmp_path)


def test_gldv2_missing_names_command(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"gldv2/index.csv.*download gldv2 --root"):
        F.load_gldv2(tmp_path)
