"""World parameters, the cache (a folder per parameter hash, atomic swap) and the command line."""

from __future__ import annotations

import pytest

from retrieval.data import synthetic as S
from retrieval.data.synthetic import cache


def test_config_validation():
    with pytest.raises(ValueError, match="views_per_landmark"):
        S.SyntheticConfig(views_per_landmark=1)
    with pytest.raises(ValueError, match="max_side"):
        S.SyntheticConfig(max_side=12.5)
    assert S.SyntheticConfig(seed=1).key() != S.SyntheticConfig(seed=2).key()
    assert S.SyntheticConfig(workers=1).key() == S.SyntheticConfig(workers=2).key()


TINY = dict(
    n_train_landmarks=2,
    n_val_landmarks=1,
    n_test_landmarks=1,
    views_per_landmark=6,
    queries_per_landmark=1,
    max_side=96,
    points_per_landmark=300,
    workers=1,
)


def test_ensure_world_reuses_cache_and_regenerates_on_change(tmp_path, monkeypatch):
    root = tmp_path / "cache"
    assert S.ensure_world(root, TINY) == root
    stamp = (root / "world.json").stat().st_mtime_ns
    image = next((root / "test/synthetic-rox/jpg").glob("*.jpg"))

    def fail(*args, **kwargs):
        raise AssertionError("regenerated a cached world")

    monkeypatch.setattr(cache, "generate_world", fail)
    assert S.ensure_world(root, S.SyntheticConfig(**TINY)) == root
    assert S.ensure_world(root, {**TINY, "workers": 2}) == root  # workers: same world
    assert (root / "world.json").stat().st_mtime_ns == stamp
    monkeypatch.undo()
    old_bytes = image.read_bytes()
    S.ensure_world(root, {**TINY, "seed": 1})
    assert S.read_world_info(root)["params"]["seed"] == 1
    assert image.read_bytes() != old_bytes
    assert [p.name for p in tmp_path.iterdir()] == ["cache"]  # no temp folders left


def test_ensure_world_default_root_and_safety(tmp_path, monkeypatch):
    monkeypatch.setenv("RETRIEVAL_DATA", str(tmp_path / "data"))
    config = S.SyntheticConfig(**TINY)
    assert S.default_root(config) == tmp_path / "data" / "synthetic" / config.key()
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "mine.txt").write_text("keep")
    with pytest.raises(FileExistsError):
        S.ensure_world(busy, TINY)
    assert (busy / "mine.txt").read_text() == "keep"
    with pytest.raises(ValueError, match="unknown synthetic world parameter"):
        S.as_config({"seeds": 1})


def test_worlds_live_under_the_given_base(tmp_path, monkeypatch):
    monkeypatch.setenv("RETRIEVAL_DATA", str(tmp_path / "env"))
    config = S.SyntheticConfig(**TINY)
    worlds = tmp_path / "worlds"
    expected = worlds / "synthetic" / config.key()
    assert S.default_root(config, worlds) == S.default_root(config, str(worlds)) == expected
    assert S.ensure_world(None, TINY, base=worlds) == expected
    assert S.read_world_info(expected)["hash"] == config.key()
    assert not (tmp_path / "env").exists()
    # Without a base: $RETRIEVAL_DATA, else the user's cache.
    assert S.default_root(config) == tmp_path / "env" / "synthetic" / config.key()
    monkeypatch.delenv("RETRIEVAL_DATA")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    home_cache = tmp_path / "home" / ".cache" / "retrieval"
    assert S.default_root(config) == home_cache / "synthetic" / config.key()


def test_cli_synthetic_and_download(tmp_path, capsys, monkeypatch):
    from retrieval.data import __main__ as cli

    args = [
        "synthetic",
        "--root",
        str(tmp_path / "w"),
        "--train-landmarks",
        "2",
        "--val-landmarks",
        "1",
        "--test-landmarks",
        "1",
        "--views",
        "6",
        "--queries",
        "1",
        "--max-side",
        "96",
        "--points",
        "300",
        "--workers",
        "1",
    ]
    assert cli.main(args) == 0
    out = capsys.readouterr().out
    assert "train: 12 images of 2 landmarks" in out and "generated" in out
    assert cli.main(args) == 0
    assert "reused from cache" in capsys.readouterr().out
    import retrieval.data.download as download

    seen = []
    monkeypatch.setattr(download, "download_main", lambda argv: seen.append(argv) or 0)
    assert cli.main(["download", "roxford5k", "--root", "X"]) == 0
    assert seen == [["roxford5k", "--root", "X"]]
