"""The datamodule: VIA JSON + images -> batches whose masks and boxes match the polygons."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from booksegm.data.datamodule import BookDataModule, DataConfig, split_records
from booksegm.data.records import ImageRecord
from booksegm.data.resize import ResizeConfig
from booksegm.data.transforms import AugmentConfig

NO_AUGMENT = AugmentConfig(hflip=0, vflip=0, rotate_p=0, photometric_p=0)


def polygon_region(xs, ys) -> dict:
    return {"shape_attributes": {"name": "polygon", "all_points_x": xs, "all_points_y": ys},
            "region_attributes": {"name": "book"}}


def write_via_set(root: Path, images: dict[str, list[dict]], missing: tuple[str, ...] = ()) -> Path:
    """A VIA 2 export plus 80 x 60 JPEGs (except the ``missing`` ones)."""
    root.mkdir(parents=True, exist_ok=True)
    for name in images:
        if name not in missing:
            Image.fromarray(np.full((60, 80, 3), 90, np.uint8)).save(root / name)
    data = {f"{name}-1": {"filename": name, "size": -1, "regions": regions, "file_attributes": {}}
            for name, regions in images.items()}
    path = root / "via_region_data.json"
    path.write_text(json.dumps(data))
    return path


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
    from booksegm.config import ConfigError

    with pytest.raises(ConfigError, match=message):
        make_datamodule(tmp_path, **{field: value})
