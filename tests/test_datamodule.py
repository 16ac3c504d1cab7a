"""The datamodule: VIA JSON + images -> batches whose masks and boxes match the polygons."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from support import BOOK, NO_AUGMENT, polygon_region, truncate_jpeg, write_via_set

from booksegm.config import ConfigError
from booksegm.data import images as images_module
from booksegm.data.datamodule import BookDataModule, DataConfig, split_records
from booksegm.data.dataset import paste_instances
from booksegm.data.records import AnnotationError, ImageRecord
from booksegm.data.resize import ResizeConfig
from booksegm.data.transforms import AugmentConfig


def make_datamodule(root: Path, **overrides) -> BookDataModule:
    cfg = DataConfig(format="via", root=str(root), annotations="via_region_data.json", num_workers=0,
                     resize=ResizeConfig("none", 0, 0), augment=NO_AUGMENT, val_fraction=0.0, min_instance_area=4)
    for key, value in overrides.items():
        setattr(cfg, key, value)
    module = BookDataModule(cfg)
    module.setup("fit")
    return module


def test_masks_and_boxes_agree_with_the_polygons(tmp_path):
    write_via_set(tmp_path, {
        "a.jpg": [polygon_region([10, 30, 30, 10], [5, 5, 45, 45]), polygon_region([40, 70, 70], [10, 10, 50])],
    })
    dm = make_datamodule(tmp_path, batch_size=1)
    images, targets = next(iter(dm.train_dataloader()))
    image, target = images[0], targets[0]
    assert image.shape == (3, 60, 80) and image.dtype == torch.float32
    assert target["masks"].shape == (2, 60, 80)
    assert target["masks"][0].sum().item() == 20 * 40  # rect 10..30 x 5..45
    assert target["boxes"][0].tolist() == [10, 5, 30, 45]
    assert abs(target["masks"][1].sum().item() - 30 * 40 / 2) < 40  # right triangle, edge pixels differ
    assert target["labels"].tolist() == [1, 1]


def test_square_resize_moves_masks_with_the_image(tmp_path):
    write_via_set(tmp_path, {"a.jpg": [polygon_region([10, 30, 30, 10], [5, 5, 45, 45])]})
    dm = make_datamodule(tmp_path, resize=ResizeConfig("square", 120, 160), batch_size=1)
    images, targets = next(iter(dm.train_dataloader()))
    assert images[0].shape == (3, 160, 160)  # 80 x 60 scaled by 2, padded 20 px top and bottom
    assert targets[0]["boxes"][0].tolist() == [20, 30, 60, 110]


def test_images_without_regions_give_empty_targets(tmp_path):
    write_via_set(tmp_path, {"empty.jpg": []})
    dm = make_datamodule(tmp_path, batch_size=1)
    _, targets = next(iter(dm.train_dataloader()))
    assert targets[0]["boxes"].shape == (0, 4) and targets[0]["masks"].shape == (0, 60, 80)


def test_instances_too_small_after_transforms_are_dropped(tmp_path):
    write_via_set(tmp_path, {"a.jpg": [polygon_region([10, 30, 30, 10], [5, 5, 45, 45]),
                                       polygon_region([50, 51, 51], [50, 50, 51])]})
    _, targets = next(iter(make_datamodule(tmp_path, batch_size=1).train_dataloader()))
    assert targets[0]["masks"].shape[0] == 1


def test_missing_images_are_skipped_and_logged(tmp_path, caplog):
    write_via_set(tmp_path, {"a.jpg": [polygon_region([10, 30, 30], [5, 5, 45])], "gone.jpg": []}, missing=("gone.jpg",))
    with caplog.at_level(logging.WARNING):
        dm = make_datamodule(tmp_path)
    assert [r.file_name for r in dm.train_records] == ["a.jpg"]
    assert "gone.jpg" in caplog.text and "1 of 2 images skipped" in caplog.text


@pytest.mark.parametrize("relative", [False, True])
def test_a_missing_data_folder_is_named_with_how_to_pass_another(relative, tmp_path, monkeypatch):
    """It read as 'expected exactly one .json file in A/a4, found none', not as a folder that is missing."""
    monkeypatch.chdir(tmp_path)
    root = "A/a4" if relative else str(tmp_path / "A" / "a4")
    looked = f" (looked for as {tmp_path / 'A' / 'a4'})" if relative else ""
    with pytest.raises(ConfigError) as error:
        make_datamodule(Path(root), annotations=None)
    assert str(error.value) == (f"data.root={root}: no such folder{looked}; pass data.root=FOLDER, the folder that "
                                "holds the annotations and images")


def test_max_gt_instances_caps_and_logs(tmp_path, caplog):
    regions = [polygon_region([x, x + 5, x + 5, x], [5, 5, 30, 30]) for x in range(0, 70, 7)]
    write_via_set(tmp_path, {"a.jpg": regions})
    with caplog.at_level(logging.INFO):
        dm = make_datamodule(tmp_path, max_gt_instances=4)
    assert len(dm.train_records[0].instances) == 4
    assert "a.jpg" in caplog.text


def test_split_is_seeded_and_folds_partition_the_set():
    records = [ImageRecord(file_name=f"{i}.jpg", path=Path(f"{i}.jpg")) for i in range(20)]
    cfg = DataConfig(val_fraction=0.25, split_seed=3)
    train, val = split_records(records, cfg)
    assert len(val) == 5 and len(train) == 15
    assert split_records(records, cfg)[1] == val
    folds = [split_records(records, DataConfig(folds=4, fold=i))[1] for i in range(4)]
    names = sorted(r.file_name for fold in folds for r in fold)
    assert names == sorted(r.file_name for r in records)


@pytest.mark.parametrize("field, value, message", [
    ("format", "pascal", "data.format"), ("folds", 1, "data.folds"), ("val_fraction", 1.0, "val_fraction"),
])
def test_bad_data_values_fail_early(tmp_path, field, value, message):
    with pytest.raises(ConfigError, match=message):
        make_datamodule(tmp_path, **{field: value})


def test_a_truncated_jpeg_is_skipped_at_setup_with_the_check_message(tmp_path, caplog):
    write_via_set(tmp_path, {"a.jpg": BOOK, "cut.jpg": BOOK})
    truncate_jpeg(tmp_path / "cut.jpg")
    with caplog.at_level(logging.INFO):
        dm = make_datamodule(tmp_path)
    assert [r.file_name for r in dm.train_records] == ["a.jpg"]
    # the counts and file list of `python -m booksegm.data check`
    assert "2 listed, 2 found, 0 missing, 1 unreadable" in caplog.text
    assert "cut.jpg: cannot decode: image file is truncated" in caplog.text
    assert "1 of 2 images skipped" in caplog.text


def count_decodes(monkeypatch) -> list:
    decoded = []
    real = images_module.verify_image
    monkeypatch.setattr(images_module, "verify_image", lambda path: (decoded.append(Path(path).name), real(path))[1])
    return decoded


def test_the_image_check_cache_spares_later_setups_the_decoding(tmp_path, monkeypatch):
    write_via_set(tmp_path / "data", {"a.jpg": BOOK, "b.jpg": BOOK, "cut.jpg": BOOK})
    truncate_jpeg(tmp_path / "data" / "cut.jpg")
    decoded = count_decodes(monkeypatch)
    cache = tmp_path / "cache" / "image_checks.json"
    make_datamodule(tmp_path / "data", image_check_cache=str(cache))
    assert sorted(decoded) == ["a.jpg", "b.jpg", "cut.jpg"]  # each once, though two passes ask
    decoded.clear()
    dm = make_datamodule(tmp_path / "data", image_check_cache=str(cache))
    assert decoded == ["cut.jpg"] and len(dm.train_records) == 2  # failures are not remembered
    decoded.clear()
    os.utime(tmp_path / "data" / "b.jpg", ns=(0, 0))  # a changed file is decoded again
    make_datamodule(tmp_path / "data", image_check_cache=str(cache))
    assert sorted(decoded) == ["b.jpg", "cut.jpg"]


@pytest.mark.parametrize("broken", ["corrupt", "unwritable"])
def test_a_bad_image_check_cache_only_costs_the_decoding(tmp_path, monkeypatch, caplog, broken):
    write_via_set(tmp_path / "data", {"a.jpg": BOOK})
    if broken == "corrupt":
        cache = tmp_path / "image_checks.json"
        cache.write_text('{"half a')
    else:
        (tmp_path / "a_file").write_text("")
        cache = tmp_path / "a_file" / "image_checks.json"  # its folder cannot be made
    decoded = count_decodes(monkeypatch)
    with caplog.at_level(logging.WARNING):
        for _ in range(2):
            assert len(make_datamodule(tmp_path / "data", image_check_cache=str(cache)).train_records) == 1
    assert f"{cache}: image check cache" in caplog.text
    assert decoded == (["a.jpg"] if broken == "corrupt" else ["a.jpg", "a.jpg"])  # a corrupt one is rewritten


@pytest.mark.parametrize("num_workers", [0, 1])
def test_an_image_unreadable_after_setup_is_skipped_and_counted(tmp_path, caplog, num_workers):
    write_via_set(tmp_path, {"a.jpg": BOOK, "b.jpg": BOOK, "c.jpg": BOOK})
    dm = make_datamodule(tmp_path, batch_size=1, val_batch_size=2, num_workers=num_workers)
    dm.val_records = dm.train_records[:2]
    truncate_jpeg(tmp_path / "b.jpg")  # changed after the start-up check
    with caplog.at_level(logging.WARNING):
        # b.jpg's batch of one is None (Lightning's training loop skips it) or left out
        train = [batch for batch in dm.train_dataloader() if batch is not None]
        val = list(dm.val_dataloader())  # b.jpg is dropped from its batch
        assert len(train) == 2 and [len(images) for images, _ in val] == [1]
        assert dm.skipped_images.value == 2
        dm.teardown("fit")
    if num_workers == 0:  # worker processes log to their own handlers
        assert "b.jpg: cannot decode: image file is truncated" in caplog.text
    assert "images skipped during the run as they no longer loaded: 2" in caplog.text


def test_copy_paste_pastes_donor_books_and_cuts_what_they_cover():
    image, donor_image = np.zeros((20, 30, 3), np.uint8), np.full((20, 30, 3), 200, np.uint8)
    hidden, partly = np.zeros((20, 30), np.uint8), np.zeros((20, 30), np.uint8)
    hidden[2:6, 2:6] = 1  # wholly under the pasted book: dropped
    partly[10:20, 0:14] = 1  # its left 10 columns under it: cut to the 4 on the right
    pasted = np.zeros((20, 30), np.uint8)
    pasted[0:20, 0:8] = 1  # the donor's one book: always pasted (at least one is)
    pasted[10:20, 5:10] = 1
    out_image, masks, labels = paste_instances(image, [hidden, partly], [1, 1], donor_image, [pasted], [2],
                                               np.random.default_rng(0), min_area=4, max_instances=100)
    assert labels == [1, 2]
    assert masks[0].sum() == 40 and masks[0][10:20, 10:14].all()
    assert (masks[1] == pasted).all()
    assert (out_image[pasted > 0] == 200).all() and (out_image[pasted == 0] == 0).all()


def test_copy_paste_keeps_to_max_gt_instances():
    image = np.zeros((10, 40, 3), np.uint8)
    own, donor = np.zeros((3, 10, 40), np.uint8), np.zeros((8, 10, 40), np.uint8)
    for i in range(3):
        own[i, :, i] = 1
    for i in range(8):
        donor[i, :, 10 + i] = 1
    for seed in range(5):
        _, masks, labels = paste_instances(image, list(own), [1] * 3, image, list(donor), [1] * 8,
                                           np.random.default_rng(seed), min_area=1, max_instances=4)
        assert len(masks) == len(labels) == 4  # the 3 untouched and one pasted
    _, masks, _ = paste_instances(image, list(own), [1] * 3, image, list(donor), [1] * 8,
                                  np.random.default_rng(0), min_area=1, max_instances=3)
    assert len(masks) == 3  # full already: nothing pasted


def test_copy_paste_in_training_adds_another_images_books_reproducibly(tmp_path):
    write_via_set(tmp_path, {"a.jpg": [polygon_region([5, 25, 25, 5], [5, 5, 30, 30])],
                             "b.jpg": [polygon_region([40, 70, 70, 40], [30, 30, 55, 55]),
                                       polygon_region([50, 75, 75, 50], [2, 2, 20, 20])]})
    dataset = make_datamodule(tmp_path, augment=AugmentConfig(**{**vars(NO_AUGMENT), "copy_paste_p": 1.0})
                              ).train_dataloader().dataset
    plain = make_datamodule(tmp_path).train_dataloader().dataset
    for key in [(0, 3), (1, 4)]:
        (_, with_paste), (_, without) = dataset[key], plain[key]
        assert len(with_paste["labels"]) > len(without["labels"])  # the books of the other image join
        assert torch.equal(dataset[key][0], dataset[key][0])  # the draw's seed fixes what is pasted
        assert torch.equal(dataset[key][1]["masks"], with_paste["masks"])


def test_mix_synthetic_adds_rendered_scenes_to_training_only(tmp_path):
    write_via_set(tmp_path / "real", {f"{i}.jpg": BOOK for i in range(4)})
    cfg = DataConfig(format="via", root=str(tmp_path / "real"), num_workers=0, resize=ResizeConfig("square", 96, 96),
                     augment=NO_AUGMENT, val_fraction=0.5, mix_synthetic=True, synthetic_root=str(tmp_path / "scenes"))
    cfg.synthetic.num_images, cfg.synthetic.width, cfg.synthetic.height = 3, 96, 72
    module = BookDataModule(cfg)
    module.prepare_data()  # renders the scenes once
    module.setup("fit")
    assert sorted(p.name for p in (tmp_path / "scenes" / "images").iterdir()) == [f"synth_{i:05d}.jpg" for i in range(3)]
    train_names = sorted(r.file_name for r in module.train_records)
    assert len(train_names) == 2 + 3 and sum(name.startswith("synth_") for name in train_names) == 3
    assert all(not r.file_name.startswith("synth_") for r in module.val_records) and len(module.val_records) == 2
    assert all(r.instances for r in module.train_records if r.file_name.startswith("synth_"))
    images, _ = next(iter(module.train_dataloader()))
    assert all(image.shape == (3, 96, 96) for image in images)  # one resize for real photos and scenes


@pytest.mark.parametrize("overrides", [{"format": "synthetic"}, {"synthetic_root": None}])
def test_mix_synthetic_needs_a_real_set_and_a_render_folder(tmp_path, overrides):
    cfg = DataConfig(format="via", root=str(tmp_path), mix_synthetic=True, synthetic_root=str(tmp_path / "scenes"))
    for key, value in overrides.items():
        setattr(cfg, key, value)
    with pytest.raises(ConfigError, match="mix_synthetic"):
        BookDataModule(cfg)


def test_evaluation_reads_a_validation_set_without_training_images(tmp_path):
    write_via_set(tmp_path, {"a.jpg": BOOK, "b.jpg": BOOK})
    cfg = DataConfig(format="via", root=str(tmp_path), annotations="no_such_train.json",
                     val_annotations="via_region_data.json", num_workers=0, resize=ResizeConfig("none", 0, 0))
    module = BookDataModule(cfg)
    module.setup("validate")
    assert sorted(r.file_name for r in module.val_records) == ["a.jpg", "b.jpg"] and not module.train_records
    with pytest.raises(AnnotationError, match="no_such_train.json"):  # training does need them
        BookDataModule(cfg).setup("fit")
