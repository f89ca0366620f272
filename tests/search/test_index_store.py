"""The index store under stress: options, transient failures, concurrent runs, damage, full disk."""

from __future__ import annotations

import errno
import os
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import retrieval.search.store as store_module
from retrieval.search import IndexStore, Searcher, update_index
from tests.search.helpers import FAST, FAST_CLI, cli, photo

# ----------------------------------------------------------------------------------------------
# item 7: options are checked first; only the file's own faults make it "unreadable"
# ----------------------------------------------------------------------------------------------

BAD_OPTIONS = [
    (["--batch-size", "0"], "--batch-size"),
    (["--batch-size", "-3"], "--batch-size"),
    (["--image-size", "0"], "--image-size"),
    (["--scales", "0"], "--scales"),
    (["--scales", "1", "nan"], "--scales"),
    (["--chunk", "0"], "--chunk"),
]


@pytest.mark.parametrize(("option", "name"), BAD_OPTIONS)
def test_bad_index_options_are_refused_before_any_work(tmp_path, capsys, monkeypatch, option, name):
    photos, out = tmp_path / "photos", tmp_path / "index"
    photo(photos / "a.jpg", 0)

    def no_work(*args, **kwargs):
        raise AssertionError("the network was loaded before the options were checked")

    monkeypatch.setattr(store_module, "load_network", no_work)
    code, _, err = cli(capsys, "index", photos, "--out", out, *FAST_CLI, *option)
    assert code == 1 and name in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    assert not IndexStore.exists(out)


def raising(error: BaseException):
    """A stand-in that raises `error` whatever it is called with."""

    def fail(*args, **kwargs):
        raise error

    return fail


NOT_THE_FILES_FAULT = [
    MemoryError(),
    OSError(errno.EIO, "Input/output error"),
    OSError(errno.EMFILE, "Too many open files"),
    ValueError("batch_size must be positive"),  # an option error deep inside the extraction
]


@pytest.mark.parametrize("error", NOT_THE_FILES_FAULT, ids=repr)
def test_system_and_option_errors_never_mark_photos_unreadable(tmp_path, monkeypatch, error):
    photos, out = tmp_path / "photos", tmp_path / "index"
    for i in range(2):
        photo(photos / f"p{i}.jpg", i)
    monkeypatch.setattr(store_module, "extract_descriptors", raising(error))
    with pytest.raises(type(error)):
        update_index(photos, out, **FAST)
    assert not IndexStore.exists(out)  # nothing committed, nothing recorded as unreadable
    monkeypatch.undo()

    if not isinstance(error, ValueError):  # in the probe, a ValueError is the file's (PIL's)
        monkeypatch.setattr(store_module, "probe_image", raising(error))
        with pytest.raises(type(error)):
            update_index(photos, out, **FAST)
        monkeypatch.undo()
    report = update_index(photos, out, **FAST)
    assert report.total == 2 and not report.skipped


def test_skipped_photos_are_probed_again_on_every_run(tmp_path, monkeypatch):
    photos, out = tmp_path / "photos", tmp_path / "index"
    photo(photos / "a.jpg", 0)
    flaky = photo(photos / "b.jpg", 1)
    real_probe = store_module.probe_image

    def probe_failing_once(path, *args, **kwargs):
        if str(path) == str(flaky):
            raise OSError("image file is truncated (a share that dropped for a moment)")
        return real_probe(path, *args, **kwargs)

    monkeypatch.setattr(store_module, "probe_image", probe_failing_once)
    first = update_index(photos, out, **FAST)
    assert [s["path"] for s in first.skipped] == [str(flaky)] and first.total == 1
    monkeypatch.undo()

    second = update_index(photos, out, **FAST)  # the file did not change, it is tried again
    assert second.added == [str(flaky)] and not second.skipped and second.total == 2


# ----------------------------------------------------------------------------------------------
# item 8: one writer at a time; readers see one generation
# ----------------------------------------------------------------------------------------------


def test_a_second_index_run_on_the_same_folder_fails_at_once(tmp_path, capsys, monkeypatch):
    photos, out = tmp_path / "photos", tmp_path / "index"
    for i in range(3):
        photo(photos / f"p{i}.jpg", i)
    started, release = threading.Event(), threading.Event()
    real_extract = store_module.extract_descriptors

    def held_extract(net, paths, **kwargs):
        started.set()
        release.wait(20)
        return real_extract(net, paths, **kwargs)

    monkeypatch.setattr(store_module, "extract_descriptors", held_extract)
    reports = []
    first = threading.Thread(target=lambda: reports.append(update_index(photos, out, **FAST)))
    first.start()
    try:
        assert started.wait(60)
        begin = time.monotonic()
        code, _, err = cli(capsys, "index", photos, "--out", out, *FAST_CLI)
        assert time.monotonic() - begin < 15  # at once, not after the first run
        assert code == 1 and f"index {out} is in use by PID {os.getpid()}" in err
    finally:
        release.set()
        first.join(60)
    assert reports and reports[0].total == 3
    code, text, _ = cli(capsys, "index", photos, "--out", out, *FAST_CLI)  # free again
    assert code == 0 and "3 unchanged" in text


def test_an_uncommitted_writer_never_touches_the_committed_files(tmp_path, monkeypatch):
    photos, out = tmp_path / "photos", tmp_path / "index"
    for i in range(3):
        photo(photos / f"p{i}.jpg", i)
    update_index(photos, out, **FAST)
    # Two writers start from the same generation: `mine` commits, `theirs` dies before its commit.
    mine, theirs = IndexStore.load(out), IndexStore.load(out)
    theirs.images, theirs.descriptors = theirs.images[::-1], theirs.descriptors[::-1].copy()
    mine.save()
    real_write = store_module.atomic_write

    def killed_before_commit(path, write):
        if Path(path).name == "index.json":
            raise KeyboardInterrupt
        return real_write(path, write)

    monkeypatch.setattr(store_module, "atomic_write", killed_before_commit)
    with pytest.raises(KeyboardInterrupt):
        theirs.save()
    monkeypatch.undo()

    now = IndexStore.load(out)  # index.json still names mine, and its files are still mine
    assert now.paths == mine.paths
    np.testing.assert_array_equal(now.descriptors, mine.descriptors)
    _, rows = now.faiss_index().search(now.descriptors, 1)
    assert rows[:, 0].tolist() == [0, 1, 2]


# ----------------------------------------------------------------------------------------------
# item 9: damage is named, and `index` repairs it
# ----------------------------------------------------------------------------------------------


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


DAMAGES = {
    "faiss truncated": ("faiss", truncate),
    "faiss missing": ("faiss", Path.unlink),
    "descriptors truncated": ("descriptors", truncate),
    "descriptors missing": ("descriptors", Path.unlink),
    "index.json truncated": ("index.json", truncate),
    "index.json not JSON": ("index.json", lambda p: p.write_text("not json")),
    "index.json empty": ("index.json", lambda p: p.write_bytes(b"")),
    "index.json a list": ("index.json", lambda p: p.write_text("[1, 2]")),
}


def damage(out: Path, which: str) -> Path:
    """Damage one file of the index in `out`; returns its path."""
    target, how = DAMAGES[which]
    files = IndexStore.load(out).files
    path = out / files.get(target, target)
    how(path)
    return path


@pytest.fixture(scope="module")
def built_index(tmp_path_factory) -> tuple[Path, Path, list[Path]]:
    """3 photos and their index, built once per module (never changed: copied by small_index)."""
    root = tmp_path_factory.mktemp("built")
    photos, out = root / "photos", root / "index"
    paths = [photo(photos / f"p{i}.jpg", i) for i in range(3)]
    update_index(photos, out, **FAST)
    return photos, out, paths


@pytest.fixture
def small_index(built_index, tmp_path) -> tuple[Path, Path, list[Path]]:
    """A fresh copy of the built index (of the same, untouched photos)."""
    photos, built, paths = built_index
    out = shutil.copytree(built, tmp_path / "index")
    return photos, out, paths


@pytest.mark.parametrize("which", DAMAGES)
def test_a_damaged_index_is_named_with_its_remedy(small_index, capsys, which):
    photos, out, paths = small_index
    damaged = damage(out, which)
    code, _, err = cli(capsys, "query", paths[0], "--index", out)
    assert code == 1 and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert str(damaged) in err and "retrieval-search index" in err and str(out) in err


@pytest.mark.parametrize("which", DAMAGES)
def test_index_repairs_a_damaged_index(small_index, capsys, extracted, which):
    photos, out, paths = small_index
    damaged = damage(out, which)
    code, text, _ = cli(capsys, "index", photos, "--out", out, *FAST_CLI)
    assert code == 0 and f"repaired {damaged.name}" in text
    lost = DAMAGES[which][0] != "faiss"  # the descriptors (or the list of their rows) are lost
    assert sorted(extracted) == (sorted(map(str, paths)) if lost else [])
    searcher = Searcher(out, device="cpu")
    assert len(searcher) == 3 and searcher.search_image(paths[1], k=1)[0].path == str(paths[1])
    extracted.clear()
    code, text, _ = cli(capsys, "index", photos, "--out", out, *FAST_CLI)
    assert code == 0 and "3 unchanged" in text and "repaired" not in text and not extracted


# ----------------------------------------------------------------------------------------------
# disk full
# ----------------------------------------------------------------------------------------------


def test_a_full_disk_during_index_is_named_and_keeps_the_index(tmp_path, capsys, monkeypatch):
    photos, out = tmp_path / "photos", tmp_path / "index"
    for i in range(3):
        photo(photos / f"p{i}.jpg", i)
    update_index(photos, out, **FAST)
    before = sorted(p.name for p in out.iterdir())
    photo(photos / "new.jpg", 9)
    real_save = np.save

    def save_until_full(handle, array, *args, **kwargs):
        handle.write(b"\x93NUMPY partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(np, "save", save_until_full)
    code, _, err = cli(capsys, "index", photos, "--out", out, *FAST_CLI)
    monkeypatch.setattr(np, "save", real_save)
    assert code == 1 and "Traceback" not in err
    assert f"disk full at {out}{os.sep}descriptors-" in err
    assert sorted(p.name for p in out.iterdir()) == before  # no temporary file left
    assert len(Searcher(out, device="cpu")) == 3  # the previous index, intact
