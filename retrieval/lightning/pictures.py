"""A callback drawing pictures at every validation: grid, activations, matches, distances."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from PIL import Image
from pytorch_lightning.loggers import TensorBoardLogger, WandbLogger
from torchvision.transforms.functional import to_pil_image

from retrieval.data.epoch_tuples import EpochTuples
from retrieval.data.transforms import prepare_image, resize_longest, to_rgb
from retrieval.models.net import RetrievalNet
from retrieval.types import RetrievalBenchmark
from retrieval.viz.grids import benchmark_grid, pick_queries
from retrieval.viz.maps import (
    activation_legend,
    activation_map,
    distance_histograms,
    draw_matches,
    hstack,
    mac_matches,
    matches_legend,
    overlay_heatmap,
    similarity_to_distance,
    tile,
    vstack,
)

log = logging.getLogger(__name__)

PICTURES = ("retrieval_grid", "activations", "mac_matches", "distances")


def picture_path(out_dir: str | Path, name: str, epoch: int) -> Path:
    """Where the picture ``name`` of an epoch is written."""
    return Path(out_dir) / f"{name}_epoch{epoch:03d}.png"


def log_pictures(loggers: Sequence[Any], pictures: dict[str, Path], step: int) -> None:
    """Send PNG files to the loggers that take images (W&B, TensorBoard); others are skipped."""
    for logger in loggers:
        for name, path in pictures.items():
            key = f"pictures/{name}"
            if isinstance(logger, WandbLogger):
                logger.log_image(key=key, images=[str(path)], step=step)
            elif isinstance(logger, TensorBoardLogger):
                with Image.open(path) as image:
                    pixels = np.asarray(to_rgb(image))
                logger.experiment.add_image(key, pixels, step, dataformats="HWC")


class ValidationPictures(pl.Callback):
    """After every validation (rank zero, not the sanity check), draws the pictures of a few fixed
    validation queries into ``out_dir`` as ``NAME_epochNNN.png`` and logs them.

    ``ranks`` returns the last validation's Q x K ranks of ``benchmark`` (None: nothing to show);
    ``tuples_dir`` holds the mined ``train_epochNNN.npz`` tuples whose distances are plotted.
    """

    def __init__(
        self,
        benchmark: RetrievalBenchmark,
        ranks: Callable[[], np.ndarray | None],
        out_dir: str | Path,
        image_size: int,
        tuples_dir: str | Path | None = None,
        queries: int = 3,
        top: int = 10,
        matches: int = 5,
        thumb: int = 128,
    ) -> None:
        super().__init__()
        for key, value, low in (("queries", queries, 1), ("top", top, 1), ("matches", matches, 1)):
            if value < low:
                raise ValueError(f"Invalid config `pictures.{key}`: {value}; must be >= {low}")
        self.benchmark, self.ranks = benchmark, ranks
        self.out_dir, self.image_size = Path(out_dir), int(image_size)
        self.tuples_dir = Path(tuples_dir) if tuples_dir is not None else None
        self.query_indices = pick_queries(len(benchmark.queries), queries)
        self.top, self.matches, self.thumb = top, matches, thumb

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        ranks = self.ranks()
        if ranks is None:
            return
        pictures = self.draw(pl_module.net, ranks, trainer.current_epoch)
        log.info("validation pictures written to %s", self.out_dir)
        log_pictures(trainer.loggers, pictures, trainer.global_step)

    def draw(self, net: RetrievalNet, ranks: np.ndarray, epoch: int) -> dict[str, Path]:
        """Write all pictures of one validation; their paths by name."""
        self.out_dir.mkdir(parents=True, exist_ok=True)
        paths = {name: picture_path(self.out_dir, name, epoch) for name in PICTURES}
        benchmark_grid(
            self.benchmark,
            ranks,
            paths["retrieval_grid"],
            query_indices=self.query_indices,
            top=self.top,
            thumb=self.thumb,
        )
        drawn = self._feature_pictures(net, ranks)
        distances = self._distances(epoch)
        if distances is not None:
            drawn["distances"] = distances
        for name, image in drawn.items():
            image.save(paths[name], format="PNG")
        return {
            name: path for name, path in paths.items() if name in drawn or name == "retrieval_grid"
        }

    @torch.no_grad()
    def _features(
        self, net: RetrievalNet, path: Path, box: Any
    ) -> tuple[Image.Image, torch.Tensor]:
        """The image as the network sees it (query crop, resized) and its feature map."""
        mean, std = net.meta["mean"], net.meta["std"]
        x = prepare_image(path, self.image_size, mean, std, box)
        shown = (x * torch.tensor(std).view(-1, 1, 1) + torch.tensor(mean).view(-1, 1, 1)).clamp(
            0, 1
        )
        device = next(net.parameters()).device
        return to_pil_image(shown), net.backbone(x[None].to(device))[0].float().cpu()

    def _feature_pictures(self, net: RetrievalNet, ranks: np.ndarray) -> dict[str, Image.Image]:
        """Activation maps of each query and its top 3 results; MAC matches with its top-1."""
        bench = self.benchmark
        training = net.training
        net.eval()
        try:
            heat_rows, match_rows = [], []
            for q in self.query_indices:
                query = self._features(net, bench.queries[q], bench.query_boxes[q])
                results = [self._features(net, bench.images[i], None) for i in ranks[q, :3]]
                heat_rows.append(self._activation_row(net, [query, *results]))
                if results:
                    match_rows.append(self._match_row(query, results[0]))
        finally:
            net.train(training)
        pictures = {"activations": activation_legend(vstack(heat_rows), self.thumb)}
        if match_rows:
            pictures["mac_matches"] = matches_legend(vstack(match_rows), self.matches)
        return pictures

    def _activation_row(
        self, net: RetrievalNet, shown: list[tuple[Image.Image, torch.Tensor]]
    ) -> Image.Image:
        """Thumbnails of images with the response behind the network's pooling overlaid."""
        return hstack(
            [
                tile(overlay_heatmap(img, activation_map(f, net.pooling)), self.thumb)
                for img, f in shown
            ]
        )

    def _match_row(
        self, query: tuple[Image.Image, torch.Tensor], result: tuple[Image.Image, torch.Tensor]
    ) -> Image.Image:
        """A query and a result side by side, their strongest MAC matching regions boxed."""
        (q_img, q_map), (d_img, d_map) = query, result
        found = mac_matches(q_map, d_map, top=self.matches)
        # Shown at twice the thumbnail size: boxes of small feature maps stay readable.
        q_img, d_img = (resize_longest(i, 2 * self.thumb, upscale=True) for i in (q_img, d_img))
        return draw_matches(q_img, d_img, tuple(q_map.shape[1:]), tuple(d_map.shape[1:]), found)

    def _distances(self, epoch: int) -> Image.Image | None:
        """Query-positive and query-negative distance histograms of every mined epoch so far."""
        if self.tuples_dir is None:
            return None
        rows = []
        for e in range(epoch + 1):
            path = self.tuples_dir / f"train_epoch{e:03d}.npz"
            if not path.is_file():
                continue
            tuples = EpochTuples.load(path)
            if tuples.pos_sims is None or tuples.neg_sims is None:
                continue
            pos, neg = (similarity_to_distance(s) for s in (tuples.pos_sims, tuples.neg_sims))
            rows.append((f"epoch {e}", pos, neg))
        return distance_histograms(rows) if rows else None
