"""Revisited benchmarks: gnd pickles round-trip, R1M distractors, problems collected."""

from __future__ import annotations

import pickle
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from retrieval.data import formats as F

Touch = Callable[[list[Path]], None]


def revisitop_fixture(root: Path, touch: Touch, name: str = "synthetic-rox") -> dict:
    imlist = ["all_souls_000001", "all_souls_000002", "balliol_000001", "radcliffe_000001"]
    qimlist = ["all_souls_000013", "radcliffe_000010"]
    gnd = [
        {"bbx": [10, 20, 110, 220], "easy": [0], "hard": [1], "junk": [2]},
        {"bbx": [0.5, 1.5, 50.5, 60.5], "easy": [], "hard": [3], "junk": []},
    ]
    F.write_revisitop_gnd(F.gnd_path(root, name), imlist, qimlist, gnd)
    jpg = F.test_dir(root, name) / "jpg"
    touch([jpg / f"{x}.jpg" for x in imlist + qimlist])
    return {"imlist": imlist, "qimlist": qimlist, "gnd": gnd}


def test_revisitop_round_trip_with_free_name(tmp_path: Path, touch: Touch) -> None:
    revisitop_fixture(tmp_path, touch)
    bench = F.load_revisitop(tmp_path, "synthetic-rox")
    jpg = tmp_path / "test/synthetic-rox/jpg"
    assert bench.name == "synthetic-rox" and bench.protocol == "revisited"
    assert bench.images[2] == jpg / "balliol_000001.jpg"
    assert bench.queries == [jpg / "all_souls_000013.jpg", jpg / "radcliffe_000010.jpg"]
    assert bench.query_boxes == [(10.0, 20.0, 110.0, 220.0), (0.5, 1.5, 50.5, 60.5)]
    np.testing.assert_array_equal(bench.gnd[0]["easy"], [0])
    np.testing.assert_array_equal(bench.gnd[0]["hard"], [1])
    np.testing.assert_array_equal(bench.gnd[0]["junk"], [2])
    assert bench.gnd[1]["easy"].size == 0 and bench.gnd[1]["easy"].dtype == np.int64
    assert not bench.query_in_db


def test_revisitop_reads_numpy_gnd_like_the_published_files(tmp_path: Path, touch: Touch) -> None:
    cfg = {
        "imlist": ["a", "b"],
        "qimlist": ["q"],
        "gnd": [
            {
                "bbx": np.array([1.0, 2.0, 3.0, 4.0]),
                "easy": np.array([1]),
                "hard": np.array([], dtype=np.int64),
                "junk": np.array([0]),
            }
        ],
    }
    path = F.gnd_path(tmp_path, "roxford5k")
    path.parent.mkdir(parents=True)
    path.write_bytes(pickle.dumps(cfg, protocol=2))
    touch([tmp_path / "test/roxford5k/jpg" / f"{x}.jpg" for x in ("a", "b", "q")])
    bench = F.load_revisitop(tmp_path, "roxford5k")
    assert bench.query_boxes == [(1.0, 2.0, 3.0, 4.0)]
    np.testing.assert_array_equal(bench.gnd[0]["easy"], [1])


def test_revisitop_with_r1m_distractors(tmp_path: Path, touch: Touch) -> None:
    revisitop_fixture(tmp_path, touch, "roxford5k")
    r1m = tmp_path / "test/revisitop1m"
    (r1m).mkdir(parents=True)
    (r1m / "revisitop1m.txt").write_text("0/00/a1\n0/00/a2.jpg\n\n")
    touch([r1m / "jpg/0/00/a1.jpg", r1m / "jpg/0/00/a2.jpg"])
    bench = F.load_revisitop(tmp_path, "roxford5k", distractors=True)
    assert bench.name == "roxford5k+r1m"
    assert bench.images[4:] == [r1m / "jpg/0/00/a1.jpg", r1m / "jpg/0/00/a2.jpg"]
    assert len(bench.images) == 6
    (r1m / "jpg/0/00/a2.jpg").unlink()
    with pytest.raises(F.DatasetFormatError, match="distractor 1: image file missing"):
        F.load_revisitop(tmp_path, "roxford5k", distractors=True)


def test_revisitop_problems_are_collected(tmp_path: Path, touch: Touch) -> None:
    fixture = revisitop_fixture(tmp_path, touch, "roxford5k")
    gnd = fixture["gnd"]
    gnd[0]["hard"] = [9]
    gnd[1]["hard"] = []
    path = F.gnd_path(tmp_path, "roxford5k")
    F.write_revisitop_gnd(path, fixture["imlist"], fixture["qimlist"], gnd)
    (tmp_path / "test/roxford5k/jpg/radcliffe_000010.jpg").unlink()
    with pytest.raises(F.DatasetFormatError) as info:
        F.load_revisitop(tmp_path, "roxford5k")
    message = str(info.value)
    assert message.startswith(f"3 problem(s) in {path}")
    assert "gnd[0] (query all_souls_000013)['hard'][0] = 9 is out of range [0, 4)" in message
    assert "gnd[1] (query radcliffe_000010): no positive images in easy/hard" in message
    assert "query image 1: image file missing" in message


def test_revisitop_missing_key(tmp_path: Path) -> None:
    path = F.gnd_path(tmp_path, "rparis6k")
    path.parent.mkdir(parents=True)
    (path.parent / "jpg").mkdir()
    path.write_bytes(
        pickle.dumps(
            {"imlist": ["a"], "qimlist": ["q"], "gnd": [{"bbx": None, "easy": [0], "junk": []}]}
        )
    )
    with pytest.raises(
        F.DatasetFormatError, match=r"gnd\[0\] \(query q\): missing key\(s\) \['hard'\]"
    ):
        F.load_revisitop(tmp_path, "rparis6k", check_images=False)


def test_missing_revisitop_names_file_and_command(tmp_path: Path, touch: Touch) -> None:
    with pytest.raises(FileNotFoundError) as info:
        F.load_revisitop(tmp_path, "roxford5k")
    message = str(info.value)
    assert "<data root>/test/roxford5k/gnd_roxford5k.pkl" in message
    assert "paths.data_root=DIR" in message
    assert f"python -m retrieval.data download roxford5k --root {tmp_path}" in message
    revisitop_fixture(tmp_path, touch, "roxford5k")
    with pytest.raises(FileNotFoundError, match="revisitop1m image list"):
        F.load_revisitop(tmp_path, "roxford5k", distractors=True)


def test_missing_synthetic_benchmark_does_not_suggest_a_download(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError) as info:
        F.load_revisitop(tmp_path, "synthetic-rox")
    assert "test/synthetic-rox/gnd_synthetic-rox.pkl" in str(info.value)
    assert "'synthetic-rox' is not a downloadable dataset" in str(info.value)
    assert "download synthetic-rox" not in str(info.value)
