"""A checkpoint carries its run's config: evaluate, predict and export work on a copy anywhere."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from support import run_command

from booksegm.model.checkpoint_file import RUN_CONFIG_KEY


@pytest.fixture
def trained(tiny_run) -> Path:
    """The tiny training run's root (its synthetic set in <root>/cache)."""
    return tiny_run.root


def last_checkpoint(root: Path) -> Path:
    return next((root / "outputs" / "train" / "runs").glob("*/checkpoints/last.ckpt"))


def test_a_checkpoint_copied_to_an_empty_folder_is_evaluated_predicted_with_and_exported(trained, tmp_path):
    moved = tmp_path / "elsewhere" / "model.ckpt"
    moved.parent.mkdir()
    shutil.copy(last_checkpoint(trained), moved)
    images = sorted((trained / "cache").rglob("*.jpg"))[:2]
    photos = tmp_path / "photos"
    photos.mkdir()
    for image in images:
        shutil.copy(image, photos)

    predicted = run_command("predict", trained, f"ckpt_path={moved}", f"input={photos}", f"output_dir={tmp_path / 'pred'}")
    assert predicted.returncode == 0, predicted.stderr[-2000:]
    assert len(json.loads((tmp_path / "pred" / "predictions_coco.json").read_text())["images"]) == 2

    # the run's own validation split comes back from the checkpoint, read from the run's data folder
    # (recorded absolute) from any folder; a data.* value given here wins
    assert Path(torch.load(moved, weights_only=True)[RUN_CONFIG_KEY]["data"]["root"]).is_relative_to(trained)
    for overrides, images_expected in (([], 2), (["data.val_fraction=0.5"], 5)):
        out = tmp_path / f"eval{len(overrides)}"
        evaluated = run_command("evaluate", tmp_path, f"ckpt_path={moved}", f"hydra.run.dir={out}", *overrides)
        assert evaluated.returncode == 0, evaluated.stderr[-2000:]
        assert json.loads((out / "metrics.json").read_text())["images"] == images_expected
    assert not list(tmp_path.rglob("synthetic_*"))  # not rendered again where this folder's cache is

    exported = run_command("export", trained, f"ckpt_path={moved}", f"output={tmp_path / 'model.pth'}",
                           "format=state_dict")
    assert exported.returncode == 0, exported.stderr[-2000:]
    assert json.loads((tmp_path / "model.json").read_text())["booksegm"]["resize"] is not None


def test_an_older_checkpoint_without_the_config_still_works_from_its_run_folder(trained, tmp_path):
    original = last_checkpoint(trained)
    older = torch.load(original, map_location="cpu", weights_only=True)
    del older[RUN_CONFIG_KEY]
    beside = original.with_name("older.ckpt")
    torch.save(older, beside)
    alone = tmp_path / "older.ckpt"
    torch.save(older, alone)
    photo = next((trained / "cache").rglob("*.jpg"))

    in_place = run_command("predict", trained, f"ckpt_path={beside}", f"input={photo}", f"output_dir={tmp_path / 'a'}")
    assert in_place.returncode == 0, in_place.stderr[-2000:]
    moved = run_command("predict", trained, f"ckpt_path={alone}", f"input={photo}", f"output_dir={tmp_path / 'b'}")
    assert moved.returncode != 0 and "resized" in moved.stderr and "Traceback" not in moved.stderr
