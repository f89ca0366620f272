"""Validation pictures: the callback on planted images, and a tiny run logging to W&B offline."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image
from torch import nn

from retrieval.data.epoch_tuples import EpochTuples
from retrieval.data.formats import RetrievalBenchmark
from retrieval.lightning.pictures import PICTURES, ValidationPictures, picture_path
from retrieval.models.pooling import GeM
from retrieval.viz import grids as viz
from retrieval.viz import legend
from retrieval.viz import maps as viz_maps

GREY, WHITE = (100, 100, 100), (255, 255, 255)
SQUARE = (40, 8, 48, 16)  # x1, y1, x2, y2 (exclusive): feature cell (row 1, column 5)
THUMB = 64


class BlockNet(nn.Module):
    """A stand-in network whose feature map is the image averaged over 8 x 8 blocks."""

    def __init__(self) -> None:
        super().__init__()
        self.backbone = nn.AvgPool2d(8)
        self.pooling = GeM(p=3.0)
        self.meta = {"mean": [0.0] * 3, "std": [1.0] * 3, "pooling": "gem"}


def planted(path: Path) -> Path:
    img = Image.new("RGB", (64, 64), GREY)
    img.paste(WHITE, SQUARE)
    img.save(path)
    return path


def redness(img: Image.Image) -> np.ndarray:
    rgb = np.asarray(img.convert("RGB"), dtype=np.int64)
    return rgb[..., 0] - rgb[..., 1:].max(axis=-1)


@pytest.fixture
def benchmark(tmp_path) -> RetrievalBenchmark:
    images = [planted(tmp_path / f"db{i}.png") for i in range(5)]
    queries = [planted(tmp_path / f"q{i}.png") for i in range(2)]
    gnd = [
        {"easy": np.array([1]), "hard": np.array([], np.int64), "junk": np.array([2])},
        {"easy": np.array([0]), "hard": np.array([3]), "junk": np.array([], np.int64)},
    ]
    return RetrievalBenchmark("planted", images, queries, [None, None], gnd, "revisited")


def test_callback_draws_every_picture_with_the_planted_answers(tmp_path, benchmark):
    tuples_dir = tmp_path / "tuples"
    for epoch, pos in ((0, 0.9), (1, 0.95)):
        EpochTuples(
            query=[0, 1],
            positive=[1, 0],
            negatives=[[3, 4], [2, 4]],
            pos_sims=[pos, pos],
            neg_sims=[[0.1, 0.1], [0.1, 0.1]],
            epoch=epoch,
        ).save(tuples_dir / f"train_epoch{epoch:03d}.npz")
    ranks = np.array([[1, 2, 3, 0, 4], [3, 0, 1, 2, 4]])
    callback = ValidationPictures(
        benchmark, lambda: ranks, tmp_path / "pictures", 64, tuples_dir, queries=2, thumb=THUMB
    )
    paths = callback.draw(BlockNet(), ranks, epoch=1)
    assert sorted(paths) == sorted(PICTURES)
    for name, path in paths.items():
        assert path == picture_path(tmp_path / "pictures", name, 1) and path.is_file()

    # Retrieval grid: frames follow the ground truth of each query.
    grid = Image.open(paths["retrieval_grid"]).convert("RGB")
    expected = [
        [viz.POSITIVE_COLOUR, viz.JUNK_COLOUR, viz.NEGATIVE_COLOUR, viz.NEGATIVE_COLOUR],
        [viz.POSITIVE_COLOUR, viz.POSITIVE_COLOUR, viz.NEGATIVE_COLOUR, viz.NEGATIVE_COLOUR],
    ]
    for row, colours in enumerate(expected):
        for col, colour in enumerate(colours, start=1):
            x, y = viz.cell_origin(row, col, THUMB)
            assert grid.getpixel((x + viz.FRAME // 2, y + THUMB // 2)) == colour

    # Activations: one row per query (query + top 3) under the columns' titles; the reddest pixel
    # of each tile is on the square (64 px images in 64 px tiles: same coordinates).
    heat = Image.open(paths["activations"]).convert("RGB")
    step, top = THUMB + viz_maps.GAP, legend.LINE
    tiles_width, tiles_height = 4 * step - viz_maps.GAP, 2 * step - viz_maps.GAP
    legend_width, legend_height = legend.legend_size([viz_maps.HEAT_KEY], tiles_width)
    assert heat.size == (legend_width, top + tiles_height + legend_height)
    pixels = np.asarray(heat)
    for col in range(4):  # a title (dark text) over every column
        assert (pixels[:top, col * step : col * step + THUMB] < 100).all(-1).any()
    # Below the tiles, the colour scale runs from the low colour to the high one.
    y = top + tiles_height + 3 + legend.SWATCH // 2
    assert heat.getpixel((legend.PAD, y)) == viz_maps.HEAT_LOW
    assert heat.getpixel((legend.PAD + 3 * legend.SWATCH - 1, y)) == viz_maps.HEAT_HIGH
    for row in range(2):
        for col in range(4):
            y = top + row * step
            tile = heat.crop((col * step, y, col * step + THUMB, y + THUMB))
            red = redness(tile)
            y, x = np.unravel_index(red.argmax(), red.shape)
            assert SQUARE[0] <= x < SQUARE[2] and SQUARE[1] <= y < SQUARE[3]
            assert red[0, 0] == 0  # the cold background is left as it is

    # MAC matches: all channels peak on the square in both images -> one red box around it in
    # each (images shown at 2 x thumb = 128 px, so cells are 16 px).
    matches = Image.open(paths["mac_matches"]).convert("RGB")
    (colour,) = viz_maps.palette(1)
    for dx in (0, 2 * THUMB + viz_maps.GAP):
        x1, y1, x2, y2 = viz_maps.cell_box((1, 5), (8, 8), (2 * THUMB, 2 * THUMB))
        assert matches.getpixel((dx + x1, (y1 + y2) // 2)) == colour
        assert matches.getpixel((dx + x2, (y1 + y2) // 2)) == colour
        assert matches.getpixel((dx + (x1 + x2) // 2, (y1 + y2) // 2)) == WHITE
    assert (np.asarray(matches) == colour).all(-1).sum() > 0
    # Its legend below the two rows: two lines, the second one's swatches in the boxes' colours.
    rows_height = 2 * (2 * THUMB) + viz_maps.GAP
    assert matches.size[1] == rows_height + 2 * legend.LINE
    swatch_edge = (legend.PAD, rows_height + legend.LINE + 3 + legend.SWATCH // 2)
    assert matches.getpixel(swatch_edge) == viz_maps.palette(5)[0]

    # Distances: one row per epoch so far, positives at d(0.9 or 0.95) < 0.5, negatives at 1.34.
    hist = np.asarray(Image.open(paths["distances"]).convert("RGB"))
    assert hist.shape[0] == viz_maps.HIST_TOP + 2 * viz_maps.HIST_ROW + viz_maps.HIST_BOTTOM
    to_distance = 2.0 / viz_maps.HIST_WIDTH
    for colour, low, high in ((viz.POSITIVE_COLOUR, 0.3, 0.5), (viz.NEGATIVE_COLOUR, 1.3, 1.4)):
        xs = np.flatnonzero((hist == colour).all(-1)[viz_maps.HIST_TOP :].any(axis=0))
        values = (xs - viz_maps.HIST_LEFT) * to_distance
        assert low <= values.min() and values.max() < high


def test_callback_skips_the_sanity_check_other_ranks_and_missing_ranks(tmp_path, benchmark):
    out = tmp_path / "pictures"
    ranks = {"value": None}
    callback = ValidationPictures(benchmark, lambda: ranks["value"], out, 64, queries=1)
    module = SimpleNamespace(net=BlockNet())
    trainer = SimpleNamespace(
        sanity_checking=False, is_global_zero=True, current_epoch=0, global_step=0, loggers=[]
    )
    callback.on_validation_end(trainer, module)  # no validation ranks yet
    ranks["value"] = np.array([[1, 0, 2, 3, 4], [0, 1, 2, 3, 4]])
    callback.on_validation_end(
        SimpleNamespace(**{**vars(trainer), "sanity_checking": True}), module
    )
    callback.on_validation_end(
        SimpleNamespace(**{**vars(trainer), "is_global_zero": False}), module
    )
    assert not out.exists()
    callback.on_validation_end(trainer, module)
    assert {p.name for p in out.iterdir()} == {
        "retrieval_grid_epoch000.png",
        "activations_epoch000.png",
        "mac_matches_epoch000.png",
    }  # no tuples folder: no distance histogram
    with pytest.raises(ValueError, match="pictures.queries"):
        ValidationPictures(benchmark, lambda: None, out, 64, queries=0)


# --------------------------------------------------------------------------------------------------
# A tiny run with W&B (offline), TensorBoard and CSV
# --------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_tiny_run_writes_pictures_and_logs_to_offline_wandb_and_tensorboard(
    tmp_path, offline_wandb, train_job, wandb_log
):
    run = tmp_path / "run"
    results = train_job(
        run, "trainer.max_epochs=1", "logger=[csv,wandb,tensorboard]", "pictures.queries=2"
    )
    for name in PICTURES:
        with Image.open(picture_path(run / "pictures", name, 0)) as img:
            assert img.format == "PNG" and min(img.size) > 32
    saved = json.loads((run / "results.json").read_text())
    assert saved["after"] == pytest.approx(results["after"]) and saved["overrides"] == []

    (wandb_file,) = (run / "wandb").glob("offline-run-*/run-*.wandb")
    records = wandb_log(wandb_file)
    logged = set()
    for record in records:
        if record.HasField("history"):
            # Nested keys: an image logs pictures/NAME/_type, .../filenames, ...
            logged |= {item.key or "/".join(item.nested_key) for item in record.history.item}
    for key in (
        "train/loss",
        "val/loss",
        "lr-Adam/net",
        "lr-Adam/pooling",
        "train/gem_p",
        "train/mining_mean_pos_dist",
        "train/mining_active_negative_fraction",
        "train/mining_images_per_second",
        "val/extract_images_per_second",
        "val/E/mAP",
        "val/M/mAP",
        "val/H/mAP",
        "val/M/mP@10",
        *(f"pictures/{name}/filenames" for name in PICTURES),
    ):
        assert key in logged, key
    media = wandb_file.parent / "files" / "media" / "images" / "pictures"
    assert {p.name.rsplit("_", 2)[0] for p in media.glob("*.png")} == set(PICTURES)
    (run_record,) = [r.run for r in records if r.HasField("run")]  # holds wandb.init's config
    config = {item.key: json.loads(item.value_json) for item in run_record.config.update}
    assert config["pooling"]["name"] == "gem" and config["data"]["qsize"] == 6  # full config
    assert config["logger"]["wandb"]["project"] == "retrieval"  # configs, not built objects
    assert config["trainer"]["_target_"] == "pytorch_lightning.Trainer"

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    (events,) = (run / "tensorboard").rglob("events.out.tfevents.*")
    accumulator = EventAccumulator(str(events.parent), size_guidance={"images": 0})
    accumulator.Reload()
    assert {f"pictures/{name}" for name in PICTURES} <= set(accumulator.Tags()["images"])


def test_wandb_goes_offline_without_key_or_network(monkeypatch, tmp_path):
    from retrieval.pipelines import loggers

    for var in ("WANDB_API_KEY", "WANDB_MODE", "WANDB_BASE_URL"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "missing-netrc"))
    reachable = {"value": True}
    monkeypatch.setattr(loggers, "_reachable", lambda host, port: reachable["value"])
    assert loggers.wandb_offline("auto")  # no key
    (tmp_path / "netrc").write_text("machine api.wandb.ai login user password " + "k" * 40 + "\n")
    monkeypatch.setenv("NETRC", str(tmp_path / "netrc"))
    assert not loggers.wandb_offline("auto")  # `wandb login` key, network
    reachable["value"] = False
    assert loggers.wandb_offline("auto")  # no network
    assert not loggers.wandb_offline(False) and loggers.wandb_offline(True)
    assert loggers.run_group_and_name() == (None, None)  # outside a Hydra job
