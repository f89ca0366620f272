"""Dataset file formats: writers and readers round-trip, malformed files give clear errors."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest

from retrieval.data import formats as F

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"


def touch(paths: list[Path]) -> None:
    for path in paths:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"\xff\xd8")


def sfm_fixture(root: Path, name: str = "retrieval-SfM-120k") -> tuple[Path, dict]:
    splits = {
        "train": {
            "cids": ["a0b1c2d3e4f5", "ffeeddccbbaa", "000111222333", "abcabcabcabc"],
            "cluster": [0, 0, 1, 1],
            "qidxs": [0, 2],
            "pidxs": [1, 3],
            "bbxs": [None, [1, 2, 30, 40]],
        },
        "val": {
            "cids": ["999888777666", "555444333222"],
            "cluster": [5, 5],
            "qidxs": [1],
            "pidxs": [0],
            "bbxs": [None],
        },
    }
    path = F.sfm_db_path(root, name)
    F.write_sfm_db(path, splits)
    ims = F.sfm_ims_dir(root, name)
    touch([F.cid2filename(c, ims) for s in splits.values() for c in s["cids"]])
    return path, splits


# --------------------------------------------------------------------------------------------------
# SfM tuples, whitening pairs, positives sidecar
# --------------------------------------------------------------------------------------------------


def test_cid2filename_nests_by_trailing_characters() -> None:
    assert F.cid2filename("0123456789ab", "/ims") == Path("/ims/ab/89/67/0123456789ab")


def test_sfm_db_round_trip_in_cirtorch_layout(tmp_path: Path) -> None:
    path, splits = sfm_fixture(tmp_path)
    assert path == tmp_path / "train/retrieval-SfM-120k/retrieval-SfM-120k.pkl"
    db = F.load_sfm_db(tmp_path, "retrieval-SfM-120k")
    assert sorted(db) == ["train", "val"]
    train = db["train"]
    assert train.cids == splits["train"]["cids"]
    np.testing.assert_array_equal(train.cluster, [0, 0, 1, 1])
    np.testing.assert_array_equal(train.qidxs, [0, 2])
    np.testing.assert_array_equal(train.pidxs, [1, 3])
    assert train.bbxs == [None, (1.0, 2.0, 30.0, 40.0)]
    expected = tmp_path / "train/retrieval-SfM-120k/ims/f5/e4/d3/a0b1c2d3e4f5"
    assert train.image_paths[0] == expected
    # the file is a plain pickle of builtins, readable by cirtorch's own pickle.load
    with path.open("rb") as handle:
        raw = pickle.load(handle)
    assert raw["val"]["qidxs"] == [1] and raw["train"]["bbxs"][0] is None
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]


def test_sfm_db_problems_name_file_entries_and_count(tmp_path: Path) -> None:
    path, splits = sfm_fixture(tmp_path)
    splits["train"]["pidxs"] = [1, 7]  # out of range
    del splits["val"]["cluster"]
    F.write_sfm_db(path, {"train": splits["train"]})
    with open(path, "rb") as handle:
        db = pickle.load(handle)
    db["val"] = {k: v for k, v in splits["val"].items()}
    with open(path, "wb") as handle:
        pickle.dump(db, handle)
    (F.sfm_ims_dir(tmp_path, "retrieval-SfM-120k") / "aa").rename(tmp_path / "gone")
    with pytest.raises(F.DatasetFormatError) as info:
        F.read_sfm_db(path)
    message = str(info.value)
    assert str(path) in message
    assert "3 problem(s)" in message
    assert "'train'.pidxs[1] = 7 is out of range [0, 4)" in message
    assert "split 'val': missing key(s) ['cluster']" in message
    assert "'train' image 1: image file missing" in message and "ffeeddccbbaa" in message


def test_sfm_db_many_problems_are_summarised(tmp_path: Path) -> None:
    cids = [f"{i:012d}" for i in range(9)]
    path = tmp_path / "db.pkl"
    F.write_sfm_db(
        path, {"train": {"cids": cids, "cluster": list(range(9)), "qidxs": [0], "pidxs": [1]}}
    )
    with pytest.raises(F.DatasetFormatError) as info:
        F.read_sfm_db(path)
    message = str(info.value)
    assert message.startswith(f"9 problem(s) in {path}:")
    assert message.count("image file missing") == 5 and "... and 4 more" in message
    assert F.read_sfm_db(path, check_images=False)["train"].bbxs == [None]


def test_sfm_db_self_positive_and_length_mismatch(tmp_path: Path) -> None:
    path = tmp_path / "db.pkl"
    F.write_sfm_db(
        path,
        {
            "train": {
                "cids": ["aaaaaa", "bbbbbb"],
                "cluster": [0],
                "qidxs": [0, 1],
                "pidxs": [0, 0],
                "bbxs": [None, None],
            }
        },
    )
    with pytest.raises(F.DatasetFormatError) as info:
        F.read_sfm_db(path, check_images=False)
    assert "1 cluster ids for 2 cids" in str(info.value)
    assert "pair 0 uses image 0 as its own positive" in str(info.value)


def test_missing_sfm_db_names_location_and_download_command(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError) as info:
        F.load_sfm_db(tmp_path, "retrieval-SfM-120k")
    message = str(info.value)
    assert "train/retrieval-SfM-120k/retrieval-SfM-120k.pkl" in message
    assert "data.root" in message
    assert f"python -m retrieval.data download retrieval-sfm-120k --root {tmp_path}" in message


def test_whiten_pairs_round_trip_and_range_check(tmp_path: Path) -> None:
    root = tmp_path / "train" / "retrieval-SfM-30k"
    path = F.sfm_whiten_path(tmp_path, "retrieval-SfM-30k")
    F.write_whiten_pairs(path, ["c00001", "c00002", "c00003"], [0, 2], [1, 0])
    touch([F.cid2filename(c, root / "ims") for c in ["c00001", "c00002", "c00003"]])
    pairs = F.read_whiten_pairs(path)
    assert pairs.cids == ["c00001", "c00002", "c00003"]
    np.testing.assert_array_equal(pairs.qidxs, [0, 2])
    np.testing.assert_array_equal(pairs.pidxs, [1, 0])
    assert pairs.image_paths[1] == root / "ims/02/00/c0/c00002"
    F.write_whiten_pairs(path, ["c00001"], [0], [3])
    with pytest.raises(F.DatasetFormatError, match=r"pidxs\[0\] = 3 is out of range \[0, 1\)"):
        F.read_whiten_pairs(path)


def test_positives_sidecar_round_trip(tmp_path: Path) -> None:
    candidates = [[(1, 40), (2, 15)], [], [(0, 40)]]
    path = tmp_path / "train-positives.npz"
    F.write_positives_sidecar(path, candidates)
    with np.load(path) as data:
        np.testing.assert_array_equal(data["offsets"], [0, 2, 2, 3])
        np.testing.assert_array_equal(data["indices"], [1, 2, 0])
        np.testing.assert_array_equal(data["inliers"], [40, 15, 40])
    sidecar = F.read_positives_sidecar(path, n_images=3)
    assert len(sidecar) == 3
    assert sidecar[0] == [(1, 40), (2, 15)] and sidecar[1] == []
    assert sidecar.to_lists() == candidates


def test_positives_sidecar_errors(tmp_path: Path) -> None:
    path = tmp_path / "p.npz"
    F.write_positives_sidecar(path, [[(5, 10)], [(0, 3)]])
    with pytest.raises(F.DatasetFormatError, match=r"indices\[0\] = 5 is out of range \[0, 2\)"):
        F.read_positives_sidecar(path)
    F.write_positives_sidecar(path, [[(1, 10)], [(0, 3)]])
    with pytest.raises(F.DatasetFormatError, match="covers 2 images but the split has 4"):
        F.read_positives_sidecar(path, n_images=4)
    np.savez(path, offsets=np.array([0, 1]), indices=np.array([0]))
    with pytest.raises(F.DatasetFormatError, match=r"missing array\(s\) \['inliers'\]"):
        F.read_positives_sidecar(path)


# --------------------------------------------------------------------------------------------------
# Restricted unpickler
# --------------------------------------------------------------------------------------------------


class _Evil:
    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self):  # noqa: ANN204
        return (os.system, (f"touch {self.target}",))


def test_pickle_carrying_code_is_refused_and_not_run(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "gnd_evil.pkl"
    path.write_bytes(pickle.dumps({"imlist": [], "gnd": [_Evil(marker)]}, protocol=2))
    with pytest.raises(pickle.UnpicklingError) as info:
        F.load_pickle(path)
    assert f"{os.system.__module__}.system" in str(info.value)
    assert str(path) in str(info.value)
    assert not marker.exists()
    # the same file given to a loader is refused before anything runs
    (tmp_path / "test/evil/jpg").mkdir(parents=True)
    os.replace(path, F.gnd_path(tmp_path, "evil"))
    with pytest.raises(pickle.UnpicklingError):
        F.load_revisitop(tmp_path, "evil")
    assert not marker.exists()


def test_pickle_with_builtin_eval_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "eval.pkl"
    path.write_bytes(b"cbuiltins\neval\n(V1+1\ntR.")
    assert pickle.loads(path.read_bytes()) == 2  # a plain unpickler would run it
    with pytest.raises(pickle.UnpicklingError, match=r"refusing to load global 'builtins.eval'"):
        F.load_pickle(path)


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_numpy_pickles_load(tmp_path: Path, protocol: int) -> None:
    obj = {
        "ok": np.arange(4, dtype=np.int64),
        "bbx": np.array([1.5, 2, 3, 4]),
        "n": np.int64(7),
        "dt": np.dtype("float32"),
        "s": {1, 2},
        "t": (1, "x"),
    }
    path = tmp_path / "np.pkl"
    path.write_bytes(pickle.dumps(obj, protocol=protocol))
    loaded = F.load_pickle(path)
    np.testing.assert_array_equal(loaded["ok"], [0, 1, 2, 3])
    np.testing.assert_array_equal(loaded["bbx"], [1.5, 2, 3, 4])
    assert loaded["n"] == 7 and loaded["dt"] == np.float32
    assert loaded["s"] == {1, 2} and loaded["t"] == (1, "x")


def test_numpy1_module_paths_and_python2_strings(tmp_path: Path) -> None:
    # numpy 1.x pickles name numpy.core.multiarray; protocol 2 writes globals as text lines
    data = pickle.dumps({"junk": np.array([3, 1])}, protocol=2)
    data = data.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
    assert b"cnumpy.core.multiarray\n_reconstruct" in data
    path = tmp_path / "np1.pkl"
    path.write_bytes(data)
    np.testing.assert_array_equal(F.load_pickle(path)["junk"], [3, 1])
    # Python 2 str objects (SHORT_BINSTRING, opcode 'U') hold raw bytes: decoded as latin1
    py2 = b"\x80\x02}q\x00U\x06imlistq\x01]q\x02U\x04caf\xe9q\x03as."
    path.write_bytes(py2)
    assert F.load_pickle(path) == {"imlist": ["caf\u00e9"]}


def test_truncated_pickle_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "cut.pkl"
    path.write_bytes(pickle.dumps({"a": list(range(100))}, protocol=4)[:20])
    with pytest.raises(pickle.UnpicklingError, match="cut.pkl"):
        F.load_pickle(path)


# --------------------------------------------------------------------------------------------------
# Revisited / Oxford gnd
# --------------------------------------------------------------------------------------------------


def revisitop_fixture(root: Path, name: str = "synthetic-rox") -> dict:
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


def test_revisitop_round_trip_with_free_name(tmp_path: Path) -> None:
    revisitop_fixture(tmp_path)
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


def test_revisitop_reads_numpy_gnd_like_the_published_files(tmp_path: Path) -> None:
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


def test_revisitop_with_r1m_distractors(tmp_path: Path) -> None:
    revisitop_fixture(tmp_path, "roxford5k")
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


def test_revisitop_problems_are_collected(tmp_path: Path) -> None:
    fixture = revisitop_fixture(tmp_path, "roxford5k")
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


def test_missing_revisitop_names_file_and_command(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError) as info:
        F.load_revisitop(tmp_path, "roxford5k")
    message = str(info.value)
    assert "data.root/test/roxford5k/gnd_roxford5k.pkl" in message
    assert f"python -m retrieval.data download roxford5k --root {tmp_path}" in message
    revisitop_fixture(tmp_path, "roxford5k")
    with pytest.raises(FileNotFoundError, match="revisitop1m image list"):
        F.load_revisitop(tmp_path, "roxford5k", distractors=True)


def test_missing_synthetic_benchmark_does_not_suggest_a_download(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError) as info:
        F.load_revisitop(tmp_path, "synthetic-rox")
    assert "test/synthetic-rox/gnd_synthetic-rox.pkl" in str(info.value)
    assert "'synthetic-rox' is not a downloadable dataset" in str(info.value)
    assert "download synthetic-rox" not in str(info.value)


def test_oxford_old_protocol_round_trip(tmp_path: Path) -> None:
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


def test_benchmark_rejects_unknown_protocol() -> None:
    with pytest.raises(ValueError, match="unknown protocol 'rox'; use one of revisited"):
        F.RetrievalBenchmark("x", [], [], [], [], "rox")


# --------------------------------------------------------------------------------------------------
# UKBench, Holidays
# --------------------------------------------------------------------------------------------------


def test_ukbench_groups_of_four(tmp_path: Path) -> None:
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


def test_holidays_groups_and_first_query(tmp_path: Path) -> None:
    names = ["100000", "100001", "100002", "100100", "100101", "100200"]
    touch([tmp_path / "holidays/jpg" / f"{n}.jpg" for n in names[:5]])
    bench = F.load_holidays(tmp_path)
    assert [q.stem for q in bench.queries] == ["100000", "100100"]
    np.testing.assert_array_equal(bench.gnd[0]["ok"], [1, 2])
    np.testing.assert_array_equal(bench.gnd[1]["ok"], [4])
    np.testing.assert_array_equal(bench.gnd[1]["junk"], [3])
    np.testing.assert_array_equal(bench.query_db_index, [0, 3])
    touch([tmp_path / "holidays/jpg/100200.jpg"])
    with pytest.raises(F.DatasetFormatError, match=r"100200.jpg \(object 1002\): no other image"):
        F.load_holidays(tmp_path)


@pytest.mark.skipif(not (SHARED / "ukbench_sample").is_dir(), reason="shared ukbench_sample absent")
def test_ukbench_loader_on_real_sample() -> None:
    bench = F.load_ukbench(SHARED / "ukbench_sample")
    assert len(bench.images) == 1000 and bench.images[0].name == "ukbench00000.jpg"
    np.testing.assert_array_equal(bench.gnd[999]["ok"], [996, 997, 998])


# --------------------------------------------------------------------------------------------------
# Google Landmarks v2
# --------------------------------------------------------------------------------------------------


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


def gldv2_fixture(root: Path) -> None:
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


def test_gldv2_solution_and_benchmark(tmp_path: Path) -> None:
    gldv2_fixture(tmp_path)
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


def test_gldv2_unknown_index_image(tmp_path: Path) -> None:
    gldv2_fixture(tmp_path)
    (tmp_path / "gldv2/index.csv").write_text("id\nidx000a\nidx000b\n")
    with pytest.raises(
        F.DatasetFormatError, match=r"query tst000a: index image\(s\) \['idx000c'\]"
    ):
        F.load_gldv2(tmp_path)


def test_gldv2_missing_names_command(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"gldv2/index.csv.*download gldv2 --root"):
        F.load_gldv2(tmp_path)


# --------------------------------------------------------------------------------------------------
# Generic folders
# --------------------------------------------------------------------------------------------------


def test_generic_with_roles_boxes_and_junk(tmp_path: Path) -> None:
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


def test_generic_leave_one_out(tmp_path: Path) -> None:
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


def test_generic_problems(tmp_path: Path) -> None:
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


def test_read_labelled_images_contiguous_numeric_order(tmp_path: Path) -> None:
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


@pytest.mark.skipif(not (SHARED / "ukbench_sample").is_dir(), reason="shared ukbench_sample absent")
def test_generic_reader_on_ukbench_sample() -> None:
    bench = F.load_generic(SHARED / "ukbench_sample")
    assert len(bench.images) == len(bench.queries) == 1000  # image_index column ignored
    assert bench.images[4] == SHARED / "ukbench_sample/images/ukbench00004.jpg"
    np.testing.assert_array_equal(bench.gnd[4]["ok"], [5, 6, 7])
    np.testing.assert_array_equal(bench.gnd[4]["junk"], [4])


@pytest.mark.skipif(not (SHARED / "coil100_15deg").is_dir(), reason="shared coil100_15deg absent")
def test_generic_reader_on_coil100() -> None:
    bench = F.load_generic(SHARED / "coil100_15deg")
    first = bench.labels[0]
    same = [i for i, label in enumerate(bench.labels) if label == first]
    np.testing.assert_array_equal(bench.gnd[0]["ok"], same[1:])
    paths, labels = F.read_labelled_images(SHARED / "coil100_15deg")
    assert len(paths) == len(bench.images) and labels.min() == 0
    assert labels.max() + 1 == len(set(bench.labels))
