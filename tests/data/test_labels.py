"""Training from class labels: readers (GLDv2 CSVs, class folders, generic), bad input, the
m x k batch sampler, label batches, cleaning, and `train.py data=synthetic_labels loss=ap`."""

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import open_dict
from PIL import Image

from retrieval.data import formats
from retrieval.data.__main__ import main as data_main
from retrieval.data.labels import (
    ClassBatchSampler,
    LabelBatchDataset,
    LabelledImages,
    class_consistent,
    load_labelled_images,
    write_labelled_csv,
)
from retrieval.models.net import build_net
from retrieval.pipelines.config import ConfigError, validate_train_config
from retrieval.pipelines.train import run_training

ROOT = Path(__file__).resolve().parents[2]


def _image(path: Path, size: tuple[int, int] = (40, 30), value: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(value)
    pixels = np.clip(value * 20 + rng.integers(0, 60, (size[1], size[0], 3)), 0, 255)
    Image.fromarray(pixels.astype(np.uint8)).save(path)


def gldv2_set(root: Path, sizes: dict[int, int], clean: bool = False) -> list[str]:
    """A GLDv2 layout: landmark -> number of images; train.csv or train_clean.csv."""
    ids, landmarks = [], []
    for lm, n in sizes.items():
        for i in range(n):
            image_id = f"{lm:03d}{i:02d}abcdef"
            _image(formats.gldv2_image_path(root / "gldv2" / "train", image_id), value=lm)
            ids.append(image_id)
            landmarks.append(lm)
    if clean:
        rows = [
            f"{lm}," + " ".join(i for i, m in zip(ids, landmarks, strict=True) if m == lm)
            for lm in sizes
        ]
        (root / "gldv2" / "train_clean.csv").write_text("landmark_id,images\n" + "\n".join(rows))
    else:
        formats.write_gldv2_train_csv(root / "gldv2" / "train.csv", ids, landmarks)
    return ids


# -- readers and bad input ----------------------------------------------------------------------


def test_gldv2_train_and_train_clean_read_the_same_images(tmp_path):
    gldv2_set(tmp_path / "a", {7: 3, 2: 2})
    gldv2_set(tmp_path / "b", {7: 3, 2: 2}, clean=True)
    a = load_labelled_images("gldv2", tmp_path / "a", "gldv2/train.csv")
    b = load_labelled_images("gldv2", tmp_path / "b", "gldv2/train_clean.csv")
    assert a.classes == b.classes == ["2", "7"]
    assert sorted(a.ids) == sorted(b.ids) and len(a) == 5
    assert np.bincount(a.labels).tolist() == [2, 3]
    assert all(p.is_file() for p in a.paths)


def test_unknown_image_ids_fail_or_are_dropped(tmp_path, caplog):
    ids = gldv2_set(tmp_path, {1: 3, 2: 3})
    ids += ["zzz999", "yyy888"]  # listed, but no image file
    formats.write_gldv2_train_csv(tmp_path / "gldv2" / "train.csv", ids, [1, 1, 1, 2, 2, 2, 1, 3])
    with pytest.raises(
        FileNotFoundError, match=r"2 of 8 images .* \(unknown image ids\), e.g. zzz999"
    ):
        load_labelled_images("gldv2", tmp_path, "gldv2/train.csv")
    with caplog.at_level(logging.WARNING):
        kept = load_labelled_images("gldv2", tmp_path, "gldv2/train.csv", missing="drop")
    assert len(kept) == 6 and kept.classes == ["1", "2"]  # class 3 had only the missing image
    assert "data.missing=drop" in caplog.text


def test_empty_classes_are_skipped_with_a_warning(tmp_path, caplog):
    gldv2_set(tmp_path, {1: 2, 2: 2}, clean=True)
    csv = tmp_path / "gldv2" / "train_clean.csv"
    csv.write_text(csv.read_text() + "\n5,\n")  # landmark 5: no image
    (tmp_path / "folders" / "empty").mkdir(parents=True)
    _image(tmp_path / "folders" / "full" / "a.jpg")
    with caplog.at_level(logging.WARNING):
        images = load_labelled_images("gldv2", tmp_path, "gldv2/train_clean.csv")
        folders = load_labelled_images("folders", tmp_path / "folders")
    assert images.classes == ["1", "2"] and folders.classes == ["full"]
    assert "have no image (e.g. 5)" in caplog.text and "(e.g. empty)" in caplog.text


def test_generic_groundtruth_and_bad_format(tmp_path):
    rows = []
    for i in range(4):
        _image(tmp_path / f"im{i}.jpg", value=i)
        rows.append({"path": f"im{i}.jpg", "object_id": f"obj{i // 2}"})
    formats.write_generic_groundtruth(tmp_path / "groundtruth.csv", rows)
    images = load_labelled_images("generic", tmp_path)
    assert images.labels.tolist() == [0, 0, 1, 1]
    with pytest.raises(ValueError, match="Unknown label format 'csv'"):
        load_labelled_images("csv", tmp_path)


def test_held_out_classes_are_disjoint():
    images = LabelledImages(
        [Path(f"{i}.jpg") for i in range(20)], np.arange(20) // 2, list("abcdefghij")
    )
    train, val = images.split_classes(0.3, seed=1)
    assert len(val.classes) == 3 and len(train.classes) == 7
    assert not set(train.classes) & set(val.classes)
    assert images.split_classes(0)[1] is None


# -- m classes x k images ------------------------------------------------------------------------


def test_sampler_draws_m_classes_of_k_images():
    labels = np.repeat(np.arange(10), 6)
    sampler = ClassBatchSampler(labels, classes_per_batch=4, images_per_class=3, seed=3)
    batches = list(sampler)
    assert len(batches) == len(sampler) == 60 // 12
    for batch in batches:
        classes = labels[batch].reshape(4, 3)
        assert (classes == classes[:, :1]).all() and len(set(classes[:, 0])) == 4
        assert len(set(batch)) == 12
    # Classes are visited before any repeats: the first two batches hold 8 distinct classes.
    assert len({int(labels[i]) for b in batches[:2] for i in b}) == 8
    assert list(sampler) == batches  # same (seed, epoch), same batches
    sampler.set_epoch(1)
    assert list(sampler) != batches


def test_small_classes_are_dropped_or_repeated(caplog):
    labels = np.array([0] * 5 + [1] * 5 + [2] * 2 + [3])
    with caplog.at_level(logging.INFO):
        dropped = ClassBatchSampler(labels, 2, 4, small_classes="drop", num_batches=20)
    assert {int(labels[i]) for b in dropped for i in b} == {0, 1}
    assert "2 of 4 classes have fewer than 4 images; dropped" in caplog.text
    repeated = ClassBatchSampler(labels, 3, 4, small_classes="repeat", num_batches=20)
    seen = {int(labels[i]) for b in repeated for i in b}
    assert seen == {0, 1, 2}  # a class of one image has no positive pair: always left out
    for batch in repeated:
        small = [i for i in batch if labels[i] == 2]
        assert len(small) in (0, 4) and (not small or set(small) == {10, 11})


def test_k_larger_than_any_class_and_too_many_classes_fail_clearly():
    labels = np.repeat(np.arange(5), 3)
    with pytest.raises(ValueError, match=r"data.images_per_class=4 is larger than every class"):
        ClassBatchSampler(labels, 2, 4)
    assert len(list(ClassBatchSampler(labels, 2, 4, small_classes="repeat"))) >= 1
    with pytest.raises(ValueError, match=r"data.classes_per_batch=6 .* 5 classes"):
        ClassBatchSampler(labels, 6, 3)
    with pytest.raises(ValueError, match="images_per_class must be >= 2"):
        ClassBatchSampler(labels, 2, 1)


def test_label_batches_pad_images_on_a_fixed_canvas(tmp_path):
    _image(tmp_path / "a.jpg", (60, 30))
    _image(tmp_path / "b.jpg", (20, 40))
    images = LabelledImages([tmp_path / "a.jpg", tmp_path / "b.jpg"], [0, 1], ["x", "y"])
    batch = LabelBatchDataset(images, 48, (0.5, 0.5, 0.5), (0.2, 0.2, 0.2))[[1, 0]]
    assert batch["images"].shape == (2, 3, 48, 48)
    assert batch["sizes"].tolist() == [[40, 20], [24, 48]]
    assert batch["labels"].tolist() == [1, 0]
    assert float(batch["images"][0, :, :, 20:].abs().max()) == 0  # padding is zero


# -- cleaning ------------------------------------------------------------------------------------


def test_cleaning_drops_images_that_sit_with_another_class():
    rng = np.random.default_rng(0)
    centres = np.eye(4, dtype=np.float32)
    labels = np.repeat(np.arange(4), 5)
    descriptors = centres[labels] + 0.05 * rng.standard_normal((20, 4)).astype(np.float32)
    descriptors[3] = centres[2] + 0.3 * centres[3]  # labelled 0, looks like class 2
    descriptors /= np.linalg.norm(descriptors, axis=1, keepdims=True)
    keep = class_consistent(descriptors, labels, k=3)
    assert not keep[3] and keep.sum() == 19


def test_cleaned_csv_reads_back(tmp_path):
    gldv2_set(tmp_path, {4: 3, 9: 2})
    images = load_labelled_images("gldv2", tmp_path, "gldv2/train.csv")
    kept = images.subset(np.arange(len(images)) != 1)
    out = write_labelled_csv(kept, tmp_path / "gldv2" / "train_cleaned.csv")
    again = load_labelled_images("gldv2", tmp_path, "gldv2/train_cleaned.csv")
    assert again.ids == kept.ids and again.classes == kept.classes
    folder = LabelledImages(kept.paths, kept.labels, kept.classes)
    write_labelled_csv(folder, tmp_path / "out" / "groundtruth.csv")
    back = load_labelled_images("generic", tmp_path / "out")
    assert [p.resolve() for p in back.paths] == [p.resolve() for p in kept.paths]
    assert out.is_file()


def test_clean_command_writes_a_cleaned_csv(tmp_path, capsys):
    gldv2_set(tmp_path, {1: 4, 2: 4, 3: 4})
    out = tmp_path / "cleaned.csv"
    argv = ["clean", "--root", str(tmp_path), "--csv", "gldv2/train.csv", "--out", str(out)]
    assert (
        data_main([*argv, "--backbone", "resnet18", "--weights", "none", "--image-size", "32"]) == 0
    )
    assert "kept" in capsys.readouterr().out
    cleaned = formats.read_gldv2_train(out, tmp_path / "gldv2" / "train")
    assert 0 < len(cleaned.ids) <= 12


# -- configuration and the training job ----------------------------------------------------------

TINY = [
    "data=synthetic_labels",
    "debug=tiny",
    "data.classes_per_batch=4",
    "data.images_per_class=3",
    "data.batches_per_epoch=null",
    "logger=[csv]",
    "pictures.queries=0",
]


def compose_train(*overrides: str, run_dir: Path | None = None):
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=[*TINY, *overrides])
    with open_dict(cfg):
        cfg.run_dir = str(run_dir or "/tmp/retrieval-test-run")
    return cfg


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
def test_invalid_label_training_values_fail_at_start_up(override, key):
    cfg = compose_train(*override.split())
    with pytest.raises(ConfigError, match=f"`{key}`"):
        validate_train_config(cfg)


@pytest.mark.slow
def test_train_from_labels_with_ap_cleaning_and_multistage(tmp_path):
    cfg = compose_train(
        "loss=ap", "trainer.max_epochs=1", "data.chunk_size=5", "data.clean=true", run_dir=tmp_path
    )
    results = run_training(cfg)
    assert 0 < results["after"]["M/mAP"] <= 100 and results["benchmark"] == "synthetic-rox"
    cleaned = formats.read_gldv2_train(tmp_path / "train_cleaned.csv")
    assert 0 < len(cleaned.ids) <= 48
    header = next((tmp_path / "csv").rglob("metrics.csv")).read_text().splitlines()[0]
    assert "train/loss" in header and "val/loss" in header and "val/M/mAP" in header
    # Training stepped (manual optimisation): the weights left their ImageNet values.
    trained = torch.load(results["model"], weights_only=True)["state_dict"]
    pretrained = build_net("efficientnet_lite0", "gem", weights="imagenet").state_dict()
    assert any(not torch.equal(v, pretrained[k]) for k, v in trained.items() if "running" not in k)
