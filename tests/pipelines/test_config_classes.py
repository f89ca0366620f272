"""Start-up checks of a class-labelled training job (data.kind=classes): bad values name the key."""

import pytest

from retrieval.pipelines.config import ConfigError, validate_train_config

TINY_CLASSES = [
    "data=synthetic_labels",
    "debug=tiny",
    "data.classes_per_batch=4",
    "data.images_per_class=3",
    "data.batches_per_epoch=null",
    "logger=[csv]",
    "pictures.queries=0",
]


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("data.images_per_class=1", "data.images_per_class"),
        ("data.small_classes=keep", "data.small_classes"),
        ("data.format=parquet", "data.format"),
        ("data.chunk_size=0", "data.chunk_size"),
        ("data.val_sfm=null", "data.val_classes"),
        ("loss=ap loss.num_bins=1", "loss.num_bins"),
        ("loss=smooth_ap loss.temperature=0", "loss.temperature"),
        ("loss=ap loss.name=hinge", "loss.name"),
    ],
)
def test_invalid_label_training_values_fail_at_start_up(override, key, train_config):
    cfg = train_config(*TINY_CLASSES, *override.split())
    with pytest.raises(ConfigError, match=f"`{key}`"):
        validate_train_config(cfg)
