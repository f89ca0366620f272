"""Class-labelled images (data.kind=classes): readers (GLDv2 CSVs, class folders, generic), bad
input, the m x k batch sampler, class batches, the cleaning rule and the cleaned CSV."""

import logging
from pathlib import Path

import numpy as np
import pytest

from retrieval.data import formats
from retrieval.data.classes import (
    ClassBatchDataset,
    ClassBatchSampler,
    LabelledImages,
    class_consistent,
    load_labelled_images,
    write_labelled_csv,
)

# -- readers and bad input ----------------------------------------------------------------------


def test_gldv2_train_and_train_clean_read_the_same_images(tmp_path, gldv2_set):
    gldv2_set(tmp_path / "a", {7: 3, 2: 2})
    gldv2_set(tmp_path / "b", {7: 3, 2: 2}, clean=True)
    a = load_labelled_images("gldv2", tmp_path / "a", "gldv2/train.csv")
    b = load_labelled_images("gldv2", tmp_path / "b", "gldv2/train_clean.csv")
    assert a.classes == b.classes == ["2", "7"]
    assert sorted(a.ids) == sorted(b.ids) and len(a) == 5
    assert np.bincount(a.labels).tolist() == [2, 3]
    assert all(p.is_file() for p in a.paths)


def test_unknown_image_ids_fail_or_are_dropped(tmp_path, caplog, gldv2_set):
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


def test_empty_classes_are_skipped_with_a_warning(tmp_path, caplog, gldv2_set, write_image):
    gldv2_set(tmp_path, {1: 2, 2: 2}, clean=True)
    csv = tmp_path / "gldv2" / "train_clean.csv"
    csv.write_text(csv.read_text() + "\n5,\n")  # landmark 5: no image
    (tmp_path / "folders" / "empty").mkdir(parents=True)
    write_image(tmp_path / "folders" / "full" / "a.jpg")
    with caplog.at_level(logging.WARNING):
        images = load_labelled_images("gldv2", tmp_path, "gldv2/train_clean.csv")
        folders = load_labelled_images("folders", tmp_path / "folders")
    assert images.classes == ["1", "2"] and folders.classes == ["full"]
    assert "have no image (e.g. 5)" in caplog.text and "(e.g. empty)" in caplog.text


def test_generic_groundtruth_and_bad_format(tmp_path, write_image):
    rows = []
    for i in range(4):
        write_image(tmp_path / f"im{i}.jpg", value=i)
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


def test_label_batches_pad_images_on_a_fixed_canvas(tmp_path, write_image):
    write_image(tmp_path / "a.jpg", (60, 30))
    write_image(tmp_path / "b.jpg", (20, 40))
    images = LabelledImages([tmp_path / "a.jpg", tmp_path / "b.jpg"], [0, 1], ["x", "y"])
    batch = ClassBatchDataset(images, 48, (0.5, 0.5, 0.5), (0.2, 0.2, 0.2))[[1, 0]]
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


def test_cleaned_csv_reads_back(tmp_path, gldv2_set):
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
