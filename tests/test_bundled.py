"""Bundled models: model.weights=books, a command without ckpt_path, `booksegm weights`, and the
shipped file itself (its sha256 and that it finds books)."""

from __future__ import annotations

import json
import logging
from dataclasses import asdict
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from support import tiny_config

from booksegm.cli.weights import describe
from booksegm.config import ConfigError
from booksegm.cli.weights import main as weights_main
from booksegm.data.synthetic import render_scene
from booksegm.inference import load_model, predict_images
from booksegm.model import bundled
from booksegm.model.build import build_maskrcnn
from booksegm.model.weights import load_initial_weights, weights_file
from booksegm.photos import DetectorSettings, load_detector

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def bundled_folder(tmp_path, monkeypatch) -> Path:
    """A package folder holding one tiny model, ``books``, exported as booksegm exports state dicts."""
    cfg = tiny_config()
    torch.manual_seed(0)
    weights = tmp_path / "books.pth"
    torch.save(build_maskrcnn(cfg, 2).state_dict(), weights)
    spec = {"model": asdict(cfg), "class_names": ["book"], "resize": {"mode": "square", "min_dim": 64, "max_dim": 64},
            "score_threshold": 0.4}
    card = {"recipe": "tiny", "data": "none", "figures": {"mask AP": 0.0}, "sha256": bundled.sha256_of(weights)}
    weights.with_suffix(".json").write_text(json.dumps({"booksegm": spec, "card": card}))
    monkeypatch.setattr(bundled, "bundled_folder", lambda: tmp_path)
    return tmp_path


def test_model_weights_books_loads_the_bundled_file_with_head_surgery(bundled_folder, caplog):
    assert weights_file("books", None) == bundled_folder / "books.pth"
    model = build_maskrcnn(tiny_config(), 3)  # two classes of the user's own: class layers re-initialised
    with caplog.at_level(logging.INFO):
        load_initial_weights(model, "books", "resnet18")
    shipped = torch.load(bundled_folder / "books.pth")
    assert torch.equal(model.state_dict()["backbone.fpn.layer_blocks.0.0.weight"],
                       shipped["backbone.fpn.layer_blocks.0.0.weight"])
    assert "roi_heads.box_predictor" in caplog.text and "re-initialised" in caplog.text


def test_a_command_without_ckpt_path_uses_the_bundled_model_and_says_so(bundled_folder, caplog):
    with caplog.at_level(logging.INFO):
        loaded = load_model(None)
    assert loaded.source == bundled_folder / "books.pth" and loaded.class_names == ["book"]
    assert "no ckpt_path given: using the bundled 'books' model" in caplog.text
    assert load_model("books").source == loaded.source  # by name, without the line
    assert bundled.model_file("elsewhere/books") == Path("elsewhere/books")  # a path is a path


def test_a_photo_command_cuts_masks_at_its_mask_threshold(bundled_folder):
    assert load_detector(DetectorSettings())[0].model.transform.mask_threshold == 0.5  # the model's own
    loaded, _ = load_detector(DetectorSettings(mask_threshold=0.3))
    assert loaded.model.transform.mask_threshold == loaded.model_cfg.mask_threshold == 0.3
    with pytest.raises(ConfigError, match=r"^mask_threshold must lie in \(0, 1\), got 1.0$"):
        DetectorSettings(mask_threshold=1.0).validate()


def test_booksegm_weights_lists_each_model_with_its_card_and_sha256(bundled_folder):
    text = describe(bundled.bundled_models())
    digest = bundled.sha256_of(bundled_folder / "books.pth")
    assert "books (the default" in text and f"sha256   {digest} (matches its card)" in text
    assert "recipe   tiny" in text and "mask AP: 0.0" in text


def test_a_bundled_file_that_does_not_match_its_card_is_refused(bundled_folder):
    with open(bundled_folder / "books.pth", "ab") as file:
        file.write(b"\0")
    with pytest.raises(bundled.BundledModelError, match="reinstall booksegm"):
        bundled.bundled_model("books").verify()
    with pytest.raises(bundled.BundledModelError, match="no bundled model 'shelves'"):
        bundled.bundled_model("shelves")


def test_the_shipped_books_model_matches_its_card_and_finds_books():
    """The file in the package: its sha256 is the card's and the model card's, and on a rendered
    shelf it outlines books (a behaviour check: accuracy is measured in docs/model_card.md)."""
    model = bundled.bundled_model("books")
    digest = model.verify()
    card_doc = REPO / "docs" / "model_card.md"
    if card_doc.exists():  # a source checkout (the wheel has no docs/)
        assert digest in card_doc.read_text()
    loaded = load_model("books")
    matched = books = 0
    for seed in range(6):  # shelves and tables, 46 books in all
        image, polygons = render_scene(np.random.default_rng(seed), 384, 288)
        (found,) = predict_images(loaded, [image], loaded.resize)
        truth = np.zeros((len(polygons), 288, 384), np.uint8)
        for mask, polygon in zip(truth, polygons):
            cv2.fillPoly(mask, [np.round(polygon).astype(np.int32)], 1)
        kept = found.masks[found.scores >= loaded.display_threshold(None)][:, None]
        truth = truth[None].astype(bool)
        overlaps = (kept & truth).sum((2, 3)) / np.maximum((kept | truth).sum((2, 3)), 1)
        matched += int((overlaps.max(0) >= 0.5).sum()) if len(kept) else 0
        books += len(polygons)
    assert matched >= 0.4 * books, f"{matched} of {books} rendered books found"  # 34 of 46 on 2026-12-03


def test_weights_bundle_exports_a_checkpoint_into_the_package_with_its_card(bundled_folder, tmp_path_factory):
    elsewhere = tmp_path_factory.mktemp("run")
    (bundled_folder / "books.pth").rename(elsewhere / "run.pth")
    (bundled_folder / "books.json").rename(elsewhere / "run.json")
    assert weights_main(["bundle", str(elsewhere / "run.pth"), "--name", "shelves", "--recipe", "tiny", "--data",
                         "none", "--measured", "today", "--figure", "mask AP=0.1"]) == 0
    model = bundled.bundled_model("shelves")
    assert model.card["figures"] == {"mask AP": "0.1"} and model.verify() == model.card["sha256"]
    assert json.loads(model.weights.with_suffix(".json").read_text())["booksegm"]["model"]["weights"] == "none"
    assert load_model("shelves").class_names == ["book"]


def test_weights_bundle_input_size_fits_photos_into_that_square(bundled_folder, tmp_path_factory, capsys):
    elsewhere = tmp_path_factory.mktemp("run")
    (bundled_folder / "books.pth").rename(elsewhere / "run.pth")
    (bundled_folder / "books.json").rename(elsewhere / "run.json")
    card = ["--recipe", "tiny", "--data", "none", "--measured", "today"]
    assert load_model(elsewhere / "run.pth").resize.max_dim != 96
    assert weights_main(["bundle", str(elsewhere / "run.pth"), "--name", "shelves", "--input-size", "96", *card]) == 0
    spec = json.loads((bundled_folder / "shelves.json").read_text())
    assert spec["booksegm"]["resize"] == {"mode": "square", "min_dim": 96, "max_dim": 96, "min_scale": 0.0}
    assert (spec["maskrcnn"]["min_size"], spec["maskrcnn"]["max_size"]) == (96, 96)  # torchvision's recipe too
    resize = load_model("shelves").resize
    assert (resize.mode, resize.min_dim, resize.max_dim) == ("square", 96, 96)
    with pytest.raises(SystemExit):
        weights_main(["bundle", str(elsewhere / "run.pth"), "--name", "other", "--input-size", "8", *card])
    assert "--input-size must be at least 32 px, got 8" in capsys.readouterr().err
    assert not (bundled_folder / "other.pth").exists()


def test_weights_bundle_mask_threshold_is_where_the_bundled_model_cuts_its_masks(bundled_folder, tmp_path_factory,
                                                                                  capsys):
    elsewhere = tmp_path_factory.mktemp("run")
    (bundled_folder / "books.pth").rename(elsewhere / "run.pth")
    (bundled_folder / "books.json").rename(elsewhere / "run.json")
    card = ["--recipe", "tiny", "--data", "none", "--measured", "today"]
    assert load_model(elsewhere / "run.pth").model.transform.mask_threshold == 0.5
    assert weights_main(["bundle", str(elsewhere / "run.pth"), "--name", "shelves", "--mask-threshold", "0.3", *card]) == 0
    assert json.loads((bundled_folder / "shelves.json").read_text())["booksegm"]["model"]["mask_threshold"] == 0.3
    loaded = load_model("shelves")
    assert loaded.model_cfg.mask_threshold == loaded.model.transform.mask_threshold == 0.3
    with pytest.raises(SystemExit):
        weights_main(["bundle", str(elsewhere / "run.pth"), "--name", "other", "--mask-threshold", "1.5", *card])
    assert "--mask-threshold must lie in (0, 1), got 1.5" in capsys.readouterr().err
    assert not (bundled_folder / "other.pth").exists()
