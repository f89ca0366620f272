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
    with pytest.raises(F.DatasetFormatError) as info:
        F.load_revisitop(tmp_path, "roxford5k")
    message = str(info.value)
    assert message.startswith(f"2 problem(s) in {path}")
    assert "gnd[0] (query all_souls_000013)['hard'][0] = 9 is out of range [0, 4)" in message
    assert "gnd[1] (query radcliffe_000010): no positive images in easy/hard" in message


def test_missing_images_are_named_with_their_folder(tmp_path: Path, touch: Touch) -> None:
    revisitop_fixture(tmp_path, touch, "roxford5k")
    jpg = tmp_path / "test/roxford5k/jpg"
    (jpg / "radcliffe_000010.jpg").unlink()
    (jpg / "balliol_000001.jpg").unlink()
    with pytest.raises(FileNotFoundError) as info:
        F.load_revisitop(tmp_path, "roxford5k")
    message = str(info.value)
    assert "2 of the 6 images listed in" in message and "(4 database, 2 query)" in message
    assert "are missing: balliol_000001.jpg, radcliffe_000010.jpg." in message
    assert f"Put them in {jpg} " in message
    assert f"download roxford5k --root {tmp_path}" in message


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


# --------------------------------------------------------------------------------------------------
# The real annotation files (../shared/data/revisitop_gnd)
# --------------------------------------------------------------------------------------------------

# published structure (Radenovic et al. CVPR'18): queries, images, easy/hard/junk totals
REAL_GND = {
    "roxford5k": (70, 4993, (3029, 2497, 1356), "oxford_gt_files_170407"),
    "rparis6k": (70, 6322, (6874, 10350, 7153), "paris_gt_120310"),
}


@pytest.mark.parametrize("name", sorted(REAL_GND))
def test_real_gnd_pickles_have_the_published_structure(
    name: str, shared_folder: Callable[[str], Path], tmp_path: Path
) -> None:
    source = shared_folder("revisitop_gnd")
    n_queries, n_images, totals, old_gt = REAL_GND[name]
    raw = F.load_pickle(source / f"gnd_{name}.pkl")  # the restricted unpickler
    assert len(raw["qimlist"]) == len(raw["gnd"]) == n_queries and len(raw["imlist"]) == n_images
    assert tuple(sum(len(g[k]) for g in raw["gnd"]) for k in ("easy", "hard", "junk")) == totals
    # through the benchmark loader, from a data root holding only a link to the pickle
    F.test_dir(tmp_path, name).mkdir(parents=True)
    F.gnd_path(tmp_path, name).symlink_to(source / f"gnd_{name}.pkl")
    bench = F.load_revisitop(tmp_path, name, check_images=False)
    assert len(bench.queries) == n_queries and len(bench.images) == n_images
    # the first query's box, against the original (2007/2008) ground-truth text file
    old = F.read_gt_files(source / old_gt)
    assert bench.queries[0].stem == old[0].image
    assert bench.query_boxes[0] == pytest.approx(old[0].box)
    # revisitop kept the 55 original queries with their boxes and added 15
    boxes = {q.stem: box for q, box in zip(bench.queries, bench.query_boxes, strict=True)}
    assert all(boxes[q.image] == pytest.approx(q.box) for q in old)


def test_first_roxford_query_is_the_published_all_souls_box(
    shared_folder: Callable[[str], Path],
) -> None:
    raw = F.load_pickle(shared_folder("revisitop_gnd") / "gnd_roxford5k.pkl")
    assert raw["qimlist"][0] == "all_souls_000013"
    assert raw["gnd"][0]["bbx"] == pytest.approx([136.5, 34.1, 648.5, 955.7])


@pytest.mark.parametrize("folder", ["oxford_gt_files_170407", "paris_gt_120310"])
def test_original_gt_text_files_give_55_queries(
    folder: str, shared_folder: Callable[[str], Path]
) -> None:
    queries = F.read_gt_files(shared_folder("revisitop_gnd") / folder)
    assert len(queries) == 55
    # 11 landmarks, 5 queries each (Philbin et al.)
    landmarks = {q.name.rsplit("_", 1)[0] for q in queries}
    assert len(landmarks) == 11 and all(q.name[-1] in "12345" for q in queries)
    assert all(not q.image.startswith("oxc1_") for q in queries)
    assert all(q.box[2] > q.box[0] and q.box[3] > q.box[1] for q in queries)
    assert all(q.good or q.ok for q in queries)


def test_missing_photos_of_the_real_gnd_are_named(
    shared_folder: Callable[[str], Path], tmp_path: Path
) -> None:
    F.test_dir(tmp_path, "roxford5k").mkdir(parents=True)
    F.gnd_path(tmp_path, "roxford5k").symlink_to(
        shared_folder("revisitop_gnd") / "gnd_roxford5k.pkl"
    )
    with pytest.raises(FileNotFoundError) as info:
        F.load_revisitop(tmp_path, "roxford5k")
    message = str(info.value)
    assert "5063 of the 5063 images listed in" in message  # 4,993 database + 70 queries
    assert f"Put them in {tmp_path / 'test/roxford5k/jpg'} " in message
    assert f"download roxford5k --root {tmp_path}" in message
