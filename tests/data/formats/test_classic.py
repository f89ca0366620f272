"""Classic benchmarks: Oxford/Paris original gnd, UKBench groups of four, Holidays."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from retrieval.data import formats as F

Touch = Callable[[list[Path]], None]


def test_oxford_old_protocol_round_trip(tmp_path: Path, touch: Touch) -> None:
    imlist, qimlist = ["a", "b", "c"], ["q1"]
    F.write_oxford_gnd(
        F.gnd_path(tmp_path, "oxford5k"),
        imlist,
        qimlist,
        [{"bbx": [1, 1, 9, 9], "ok": [0, 2], "junk": [1]}],
    )
    touch([tmp_path / "test/oxford5k/jpg" / f"{x}.jpg" for x in imlist + qimlist])
    bench = F.load_oxford(tmp_path, "oxford5k")
    assert bench.protocol == "oxford"
    np.testing.assert_array_equal(bench.gnd[0]["ok"], [0, 2])
    np.testing.assert_array_equal(bench.gnd[0]["junk"], [1])
    assert bench.query_boxes == [(1.0, 1.0, 9.0, 9.0)]
    F.write_oxford_gnd(
        F.gnd_path(tmp_path, "oxford5k"),
        imlist,
        qimlist,
        [{"bbx": [1, 1, 9, 9], "ok": [], "junk": [1]}],
    )
    with pytest.raises(F.DatasetFormatError, match=r"no positive images in ok"):
        F.load_oxford(tmp_path, "oxford5k")


def test_ukbench_groups_of_four(tmp_path: Path, touch: Touch) -> None:
    folder = tmp_path / "test/ukbench/full"
    touch([folder / f"ukbench{i:05d}.jpg" for i in range(8)])
    bench = F.load_ukbench(tmp_path)
    assert bench.protocol == "ukbench" and len(bench.queries) == 8 and bench.query_in_db
    np.testing.assert_array_equal(bench.gnd[5]["ok"], [4, 6, 7])
    np.testing.assert_array_equal(bench.gnd[5]["junk"], [5])
    np.testing.assert_array_equal(bench.query_db_index, np.arange(8))
    assert bench.labels == ["0"] * 4 + ["1"] * 4


def test_ukbench_missing_gives_download_command(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="download ukbench --root"):
        F.load_ukbench(tmp_path)


def test_holidays_groups_and_first_query(tmp_path: Path, touch: Touch) -> None:
    names = ["100000", "100001", "100002", "100100", "100101", "100200"]
    touch([tmp_path / "holidays/jpg" / f"{n}.jpg" for n in names[:5]])
    bench = F.load_holidays(tmp_path)
    assert [q.stem for q in bench.queries] == ["100000", "100100"]
    np.testing.assert_array_equal(bench.gnd[0]["ok"], [1, 2])
    np.testing.assert_array_equal(bench.gnd[1]["ok"], [4])
    np.testing.assert_array_equal(bench.gnd[1]["junk"], [3])
    np.testing.assert_array_equal(bench.query_db_index, [0, 3])
    touch([tmp_path / "holidays/jpg/100200.jpg"])  # a one-image group: database only
    bench = F.load_holidays(tmp_path)
    assert [q.stem for q in bench.queries] == ["100000", "100100"] and len(bench.images) == 6


def test_ukbench_loader_on_real_sample(shared_folder: Callable[[str], Path]) -> None:
    sample = shared_folder("ukbench_sample")
    bench = F.load_ukbench(sample)
    assert len(bench.images) == 1000 and bench.images[0].name == "ukbench00000.jpg"
    np.testing.assert_array_equal(bench.gnd[999]["ok"], [996, 997, 998])


def test_holidays_first_present_image_queries_when_nn00_is_missing(tmp_path, touch) -> None:
    touch([tmp_path / "jpg" / f"{n}.jpg" for n in ("100000", "100001", "100103", "100107")])
    bench = F.load_holidays(tmp_path)  # the <root>/jpg layout of holidays805
    assert [q.stem for q in bench.queries] == ["100000", "100103"]
    np.testing.assert_array_equal(bench.gnd[1]["ok"], [3])


def test_holidays_loader_on_real_holidays805(shared_folder: Callable[[str], Path]) -> None:
    root = shared_folder("holidays805")
    bench = F.load_holidays(root)
    truth = {}  # group -> sorted image names, from the folder's own groundtruth.csv
    for line in (root / "groundtruth.csv").read_text().splitlines()[1:]:
        path, group = line.split(",")
        truth.setdefault(group, []).append(Path(path).name)
    assert len(bench.images) == 805 and len(truth) == 300
    groups = {g: sorted(names) for g, names in truth.items() if len(names) > 1}
    assert len(bench.queries) == len(groups) == 299
    assert sorted(q.name for q in bench.queries) == sorted(n[0] for n in groups.values())
    names = [p.name for p in bench.images]
    for query, entry in zip(bench.queries, bench.gnd, strict=True):
        group = groups[str(int(query.stem) // 100)]
        assert sorted(names[i] for i in entry["ok"]) == group[1:]
        assert [names[i] for i in entry["junk"]] == [query.name]


def write_gt_files(folder: Path, queries: dict[str, tuple[str, dict[str, list[str]]]]) -> None:
    """The original Oxford text layout: NAME_query.txt (oxc1_ prefix) and good/ok/junk lists."""
    folder.mkdir(parents=True)
    for name, (line, lists) in queries.items():
        (folder / f"{name}_query.txt").write_text(line + "\n")
        for kind in ("good", "ok", "junk"):
            (folder / f"{name}_{kind}.txt").write_text("".join(f"{x}\n" for x in lists[kind]))


def test_oxford_from_the_original_text_files(tmp_path: Path, touch: Touch) -> None:
    gt = F.gt_files_dir(tmp_path, "oxford5k")
    lists = {"good": ["b"], "ok": ["c"], "junk": ["a"]}
    write_gt_files(gt, {"x_1": ("oxc1_q 1.5 2 30 40.5", lists)})
    touch([tmp_path / "test/oxford5k/jpg" / f"{x}.jpg" for x in ("a", "b", "c", "d", "q")])
    bench = F.load_oxford(tmp_path, "oxford5k")
    assert [p.stem for p in bench.images] == ["a", "b", "c", "d", "q"]
    assert [p.stem for p in bench.queries] == ["q"] and bench.query_boxes == [(1.5, 2, 30, 40.5)]
    np.testing.assert_array_equal(bench.gnd[0]["ok"], [1, 2])
    np.testing.assert_array_equal(bench.gnd[0]["junk"], [0])
    (tmp_path / "test/oxford5k/jpg/q.jpg").unlink()
    with pytest.raises(FileNotFoundError, match=r"1 of the 1 images .* are missing: q.jpg"):
        F.load_oxford(tmp_path, "oxford5k")


def test_gt_files_problems_are_named(tmp_path: Path) -> None:
    lists = {"good": [], "ok": [], "junk": []}
    write_gt_files(tmp_path / "gt", {"x_1": ("q 5 5 1 1", lists), "x_2": ("q 1 2", lists)})
    (tmp_path / "gt/x_2_junk.txt").unlink()
    with pytest.raises(F.DatasetFormatError) as info:
        F.read_gt_files(tmp_path / "gt")
    message = str(info.value)
    assert "x_1_query.txt box: bounding box must be [x1, y1, x2, y2] with x2>x1" in message
    assert "x_2_query.txt: expected 'image x1 y1 x2 y2', found 'q 1 2'" in message
    assert "x_2_junk.txt is missing" in message
