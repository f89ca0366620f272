"""retrieval-search: incremental indexing, unreadable files, queries, pages, refusals, UKBench."""

from __future__ import annotations

import json
import os
import shutil
import threading
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlencode

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf, open_dict
from PIL import Image

import retrieval.search.store as store_module
from retrieval.checkpoint import save_checkpoint
from retrieval.models.net import build_net
from retrieval.pipelines.evaluate import run_evaluation
from retrieval.search import IndexStore, NetworkMismatchError, Searcher, SearchError, update_index
from retrieval.search.defaults import DEFAULT_IMAGE_SIZE, DEFAULT_SCALES
from retrieval.search.engine import ukbench_score
from retrieval.search.server import make_server
from tests.search.helpers import FAST, FAST_CLI, cli, photo

ROOT = Path(__file__).resolve().parents[2]
SHARED = ROOT.parent / "shared" / "data"


def test_index_adds_changes_and_deletes_incrementally(tmp_path, extracted):
    photos, out = tmp_path / "photos", tmp_path / "index"
    a = photo(photos / "a.jpg", 0)
    b = photo(photos / "sub" / "deeper" / "b.png", 1)
    c = photo(photos / "sub" / "C.JPG", 2)
    d = photo(photos / "d.webp", 3, size=(48, 64))
    photo(photos / ".hidden" / "e.jpg", 4)  # hidden folders and files, and non-images: ignored
    photo(photos / "._f.jpg", 5)
    (photos / "notes.txt").write_text("not a photo")

    first = update_index(photos, out, **FAST)
    assert sorted(first.added) == sorted(map(str, (a, b, c, d))) and first.total == 4
    assert sorted(extracted) == sorted(first.added)
    before = IndexStore.load(out)
    assert before.network["meta"]["backbone"] == "efficientnet_lite0"  # off-the-shelf default
    entry = before.images[before.paths.index(str(a))]
    assert entry["size"] == a.stat().st_size and entry["mtime_ns"] == a.stat().st_mtime_ns
    assert (entry["width"], entry["height"]) == (64, 48)

    extracted.clear()
    again = update_index(photos, out, **FAST)
    assert extracted == [] and again.unchanged == 4 and not (again.added or again.updated)
    assert IndexStore.load(out).generation == before.generation  # nothing to commit

    new = photo(photos / "sub" / "new.jpg", 6)
    photo(b, 7)  # same path, new content
    os.utime(b, ns=(b.stat().st_atime_ns, b.stat().st_mtime_ns + 10**9))
    d.unlink()
    report = update_index(photos, out, **FAST)
    assert sorted(extracted) == sorted([str(new), str(b)])
    assert report.added == [str(new)] and report.updated == [str(b)]
    assert report.removed == [str(d)] and report.unchanged == 2 and report.total == 4

    after = IndexStore.load(out)
    assert sorted(after.paths) == sorted(map(str, (a, b, c, new)))
    row_before = {p: before.descriptors[i] for i, p in enumerate(before.paths)}
    row_after = {p: after.descriptors[i] for i, p in enumerate(after.paths)}
    for kept in (a, c):  # unchanged rows are carried over, not recomputed
        np.testing.assert_array_equal(row_after[str(kept)], row_before[str(kept)])
    assert not np.allclose(row_after[str(b)], row_before[str(b)])
    # The updated index equals one built from scratch.
    update_index(photos, tmp_path / "fresh", **FAST)
    fresh = IndexStore.load(tmp_path / "fresh")
    for i, path in enumerate(fresh.paths):
        np.testing.assert_allclose(row_after[path], fresh.descriptors[i], atol=1e-5)
    # One generation of data files is left, and FAISS agrees with the descriptors.
    names = ["index.json", "index.lock", *after.files.values()]
    assert sorted(p.name for p in out.iterdir()) == sorted(names)
    assert after.faiss_index().ntotal == 4


def test_unreadable_images_are_skipped_and_listed(tmp_path, capsys):
    photos, out = tmp_path / "photos", tmp_path / "index"
    good = [photo(photos / f"good{i}.jpg", i) for i in range(2)]
    garbage = photos / "garbage.jpg"
    garbage.write_bytes(b"this is not a JPEG")
    truncated = photos / "truncated.jpg"
    truncated.write_bytes(good[0].read_bytes()[:-200])
    empty = photos / "empty.png"
    empty.write_bytes(b"")

    code, out_text, _ = cli(capsys, "index", photos, "--out", out, *FAST_CLI)
    assert code == 0
    assert "2 images indexed: 2 added" in out_text and "3 unreadable skipped" in out_text
    for bad in (garbage, truncated, empty):
        assert f"skipped (unreadable): {bad}:" in out_text
    payload = json.loads((out / "index.json").read_text())
    assert [s["path"] for s in payload["skipped"]] == sorted(map(str, (empty, garbage, truncated)))
    assert "truncated" in next(s for s in payload["skipped"] if "truncated" in s["path"])["error"]
    assert sorted(IndexStore.load(out).paths) == sorted(map(str, good))

    # Still listed on the next run; once repaired, the file is indexed.
    code, out_text, _ = cli(capsys, "index", photos, "--out", out, *FAST_CLI)
    assert f"skipped (unreadable): {garbage}:" in out_text and "0 added" in out_text
    photo(garbage, 9)
    code, out_text, _ = cli(capsys, "index", photos, "--out", out, *FAST_CLI)
    assert "3 images indexed: 1 added" in out_text and "2 unreadable skipped" in out_text
    assert str(garbage) not in out_text


def test_query_prints_ranked_paths_and_writes_a_page(tmp_path, capsys):
    photos, out = tmp_path / "photos", tmp_path / "index"
    paths = [photo(photos / f"p{i}.jpg", i) for i in range(5)]
    update_index(photos, out, **FAST)

    code, text, _ = cli(capsys, "query", paths[2], "--index", out, "-k", "3")
    lines = text.splitlines()
    assert code == 0 and len(lines) == 3
    rank, score, path = lines[0].split()
    assert (rank, path) == ("1", str(paths[2])) and float(score) == pytest.approx(1.0, abs=1e-4)
    scores = [float(line.split()[1]) for line in lines]
    assert scores == sorted(scores, reverse=True)

    page = tmp_path / "results.html"
    code, text, _ = cli(
        capsys, "query", paths[0], "--index", out, "--box", "0", "0", "40", "30", "--html", page
    )
    assert code == 0 and len(text.splitlines()) == 6  # 5 results and the page line
    html = page.read_text()
    assert html.count("data:image/jpeg;base64,") == 6  # the query and 5 results, embedded
    assert all(str(p) in html for p in paths) and "box 0 0 40 30" in html
    # The box changes the query: its descriptor is the crop's.
    searcher = Searcher(out, device="cpu")
    crop = searcher.describe(paths[0], (0, 0, 40, 30))
    assert not np.allclose(crop, searcher.describe(paths[0]))


def test_int8_index_is_queried_in_fp32_and_finds_the_same_photos(tmp_path, capsys):
    photos = tmp_path / "photos"
    paths = [photo(photos / f"p{i}.jpg", i, size=(192, 144)) for i in range(5)]
    out, size = tmp_path / "int8", ["--image-size", "192", "--scales", "1", "--quiet"]
    code, _, _ = cli(capsys, "index", photos, "--out", out, "--precision", "int8", *size)
    assert code == 0
    update_index(photos, tmp_path / "fp32", **{**FAST, "image_size": 192})
    low, full = Searcher(tmp_path / "int8", device="cpu"), Searcher(tmp_path / "fp32", device="cpu")
    assert low.store.settings["precision"] == "int8"
    query = full.describe(paths[2])
    np.testing.assert_array_equal(low.describe(paths[2]), query)  # fp32, as the fp32 index
    low_hits, full_hits = low.search(query, k=5)[0], full.search(query, k=5)[0]
    assert low_hits[0].path == full_hits[0].path == str(paths[2])
    # Every photo scores about the same (near-ties among the unrelated ones may swap places).
    full_scores = {hit.path: hit.score for hit in full_hits}
    for hit in low_hits:
        assert hit.score == pytest.approx(full_scores[hit.path], abs=0.05)
    assert not np.array_equal(low.store.descriptors, full.store.descriptors)  # int8 was used


def test_another_network_or_settings_are_refused(tmp_path, capsys):
    photos, out = tmp_path / "photos", tmp_path / "index"
    image = photo(photos / "a.jpg", 0)
    update_index(photos, out, **FAST)
    other = save_checkpoint(tmp_path / "other.pt", build_net("resnet18", "gem"))

    with pytest.raises(NetworkMismatchError, match="built by another network: efficientnet_lite0"):
        update_index(photos, out, checkpoint=other, **FAST)
    code, _, err = cli(capsys, "query", image, "--index", out, "--checkpoint", other)
    assert code == 1 and "another network" in err and "resnet18-gem" in err
    with pytest.raises(SearchError, match="pass the same --image-size"):
        update_index(photos, out, image_size=96, scales=(1.0,), progress=False)
    code, _, err = cli(capsys, "query", image, "--index", tmp_path / "nowhere")
    assert code == 1 and "retrieval-search index PHOTOS_DIR --out" in err

    # An index built from a checkpoint is queried with that checkpoint without naming it.
    update_index(photos, tmp_path / "ckpt_index", checkpoint=other, **FAST)
    code, text, _ = cli(capsys, "query", image, "--index", tmp_path / "ckpt_index", "-k", "1")
    assert code == 0 and text.split()[2] == str(image)


def test_a_killed_update_leaves_the_previous_index(tmp_path, monkeypatch):
    photos, out = tmp_path / "photos", tmp_path / "index"
    for i in range(3):
        photo(photos / f"p{i}.jpg", i)
    update_index(photos, out, **FAST)
    photo(photos / "p3.jpg", 3)
    original = store_module.atomic_write

    def killed_before_commit(path, write):
        if Path(path).name == "index.json":
            raise KeyboardInterrupt  # as a kill between the data files and the commit
        return original(path, write)

    monkeypatch.setattr(store_module, "atomic_write", killed_before_commit)
    with pytest.raises(KeyboardInterrupt):
        update_index(photos, out, **FAST)
    monkeypatch.setattr(store_module, "atomic_write", original)

    assert len(Searcher(out, device="cpu")) == 3  # the last commit, still consistent
    assert not list(out.glob(".*.tmp"))
    report = update_index(photos, out, **FAST)
    assert report.added == [str(photos / "p3.jpg")] and report.total == 4
    assert len(list(out.iterdir())) == 4  # the killed run's files are gone (lock file kept)


def get(url: str) -> str:
    """The body of a GET request."""
    with urllib.request.urlopen(url, timeout=60) as response:
        return response.read().decode()


def test_server_answers_uploads_and_result_links(tmp_path):
    photos, out = tmp_path / "photos", tmp_path / "index"
    paths = [photo(photos / f"p{i}.jpg", i) for i in range(4)]
    update_index(photos, out, **FAST)
    server = make_server(Searcher(out, device="cpu"), port=0, k=3)
    assert server.server_address[0] == "127.0.0.1"
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        boundary = "xYzBoundary"
        body = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="q.jpg"\r\n'
            f"Content-Type: image/jpeg\r\n\r\n"
        ).encode() + paths[1].read_bytes()
        body += (
            f'\r\n--{boundary}\r\nContent-Disposition: form-data; name="k"\r\n\r\n2\r\n'.encode()
        )
        body += f"--{boundary}--\r\n".encode()
        request = urllib.request.Request(
            server.url + "search",
            data=body,
            headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
        )
        html = urllib.request.urlopen(request, timeout=60).read().decode()
        assert html.count('class="result"') == 2
        assert html.index(str(paths[1])) < html.index('data-rank="2"')
        html = get(server.url + "search?" + urlencode({"path": paths[3], "k": 4}))
        assert html.count('class="result"') == 4
        assert html.index(str(paths[3])) < html.index('data-rank="2"')
        with pytest.raises(urllib.error.HTTPError) as err:  # only indexed images are shown
            get(server.url + "search?" + urlencode({"path": "/etc/passwd"}))
        assert err.value.code == 400
        # An update of the index on disk is picked up by the running server.
        photo(photos / "p4.jpg", 4)
        update_index(photos, out, **FAST)
        html = get(server.url + "search?" + urlencode({"path": paths[0], "k": 10}))
        assert html.count('class="result"') == 5 and str(photos / "p4.jpg") in html
    finally:
        server.shutdown()
        server.server_close()


# ----------------------------------------------------------------------------------------------
# UKBench through the tool gives evaluate.py's N-S score
# ----------------------------------------------------------------------------------------------


def ukbench_folder(folder: Path, n_objects: int = 10) -> Path:
    """40 UKBench images (ukbench%05d.jpg, 4 per object): the shared photos, else generated."""
    folder.mkdir(parents=True)
    shared = SHARED / "ukbench_sample" / "images"
    for i in range(4 * n_objects):
        name = f"ukbench{i:05d}.jpg"
        if (shared / name).is_file():
            shutil.copy(shared / name, folder / name)
            continue
        # Four views of an object: crops of one larger picture, with a brightness change.
        base = np.asarray(Image.open(photo(folder / "base.png", i // 4, (96, 72))), dtype=float)
        x, y = (i % 4) * 6, (i % 4) * 4
        view = base[y : y + 56, x : x + 72] * (0.85 + 0.1 * (i % 4))
        Image.fromarray(view.clip(0, 255).astype(np.uint8)).save(folder / name)
    (folder / "base.png").unlink(missing_ok=True)
    return folder


def test_ukbench_score_equals_evaluate(tmp_path, capsys):
    root = tmp_path / "data"
    folder = ukbench_folder(root / "test" / "ukbench" / "full")
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("evaluate", overrides=["datasets=[ukbench]", f"paths.data_root={root}"])
    # The tool's defaults are evaluate.py's extraction.
    assert cfg.image_size == DEFAULT_IMAGE_SIZE and tuple(cfg.scales) == DEFAULT_SCALES
    with open_dict(cfg):
        cfg.image_size = 128
        cfg.output_dir = str(tmp_path / "run")
        cfg.cache_dir = None
        cfg.grid_queries = 0
        cfg.device = "cpu"
        if OmegaConf.select(cfg, "extract.precision") is not None:
            cfg.extract.precision = "fp32"  # as the tool, whatever CPU runs the test
    expected = run_evaluation(cfg)["ukbench"]["N-S"]

    code, _, _ = cli(capsys, "index", folder, "--out", tmp_path / "index", "--image-size", "128")
    assert code == 0
    code, text, _ = cli(capsys, "ukbench", "--index", tmp_path / "index")
    assert code == 0
    assert float(text.split()[1]) == pytest.approx(expected, abs=1e-4)
    assert ukbench_score(IndexStore.load(tmp_path / "index")) == pytest.approx(expected, abs=1e-12)
    assert expected > 1.5  # the network finds the other views, not just the query itself
