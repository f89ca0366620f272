"""`train.py data=synthetic_labels loss=ap`: m classes x k images, cleaned, multi-stage."""

import torch

from retrieval.data import formats
from retrieval.models.net import build_net

TINY_CLASSES = [
    "data=synthetic_labels",
    "data.classes_per_batch=4",
    "data.images_per_class=3",
    "data.batches_per_epoch=null",
    "pictures.queries=0",
]


def test_train_from_labels_with_ap_cleaning_and_multistage(tmp_path, train_job):
    results = train_job(
        tmp_path,
        *TINY_CLASSES,
        "loss=ap",
        "trainer.max_epochs=1",
        "data.chunk_size=5",
        "data.clean=true",
    )
    assert 0 < results["after"]["M/mAP"] <= 100 and results["benchmark"] == "synthetic-rox"
    cleaned = formats.read_gldv2_train(tmp_path / "train_cleaned.csv")
    assert 0 < len(cleaned.ids) <= 48
    header = next((tmp_path / "csv").rglob("metrics.csv")).read_text().splitlines()[0]
    assert "train/loss" in header and "val/loss" in header and "val/M/mAP" in header
    # Training stepped (manual optimisation): the weights left their ImageNet values.
    trained = torch.load(results["model"], weights_only=True)["state_dict"]
    pretrained = build_net("efficientnet_lite0", "gem", weights="imagenet").state_dict()
    assert any(not torch.equal(v, pretrained[k]) for k, v in trained.items() if "running" not in k)
