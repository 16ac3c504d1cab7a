"""Real spines on rendered books: cutting labelled spines out of photos, painting rendered books with
them, and the rendered set's recorded settings."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from booksegm.config import ConfigError
from booksegm.data.datamodule import BookDataModule, DataConfig, SyntheticConfig
from booksegm.data.records import AnnotationSet, ImageRecord, Instance
from booksegm.data.synthetic import generate_dataset, render_scene
from booksegm.data.synthetic.spine_photos import SpineCutouts, cut_spine, cut_spines
from booksegm.data.synthetic.writer import SETTINGS_FILE

MAGENTA = (255, 0, 255)


def tilted_spine_photo() -> tuple[np.ndarray, np.ndarray]:
    """A 200x200 photo holding one spine 24 px thick and 120 px long, tilted 30 degrees, red growing
    from its foot to its head; and its outline."""
    ys, xs = np.mgrid[0:200, 0:200] + 0.5
    angle = np.radians(-60.0)  # the long side points up and to the right
    along = np.array([np.cos(angle), np.sin(angle)])
    across = np.array([-along[1], along[0]])
    centre = np.array([100.0, 100.0])
    offset = np.stack([xs - centre[0], ys - centre[1]], -1)
    s, t = offset @ along, offset @ across
    photo = np.full((200, 200, 3), 30, np.uint8)
    inside = (np.abs(s) < 60) & (np.abs(t) < 12)
    photo[inside, 0] = np.clip((s[inside] + 60) / 120 * 255, 0, 255).astype(np.uint8)
    photo[inside, 2] = 200
    outline = np.array([centre + a * along * 60 + b * across * 12 for a, b in ((-1, -1), (1, -1), (1, 1), (-1, 1))])
    return photo, outline.astype(np.float32)


def test_a_spine_is_cut_along_its_rectangle_and_laid_along_the_strip():
    photo, outline = tilted_spine_photo()
    strip = cut_spine(photo, outline)
    assert strip.shape[1] == 120 and 21 <= strip.shape[0] <= 23  # length along the strip, 4% trimmed each side
    assert strip[:, 5:-5, 2].min() > 150  # inside the spine: no background from around it
    red = strip[:, :, 0].mean(0)
    ramp = red[5:-5] if red[5] < red[-5] else red[5:-5][::-1]  # foot to head, whichever end comes first
    assert np.all(np.diff(ramp) >= -2) and ramp[-1] - ramp[0] > 200  # the gradient runs along the strip
    thin = np.array([[10, 10], [130, 10], [130, 14], [10, 14]], np.float32)  # 4 px thick
    square = np.array([[10, 10], [60, 10], [60, 60], [10, 60]], np.float32)  # a cover, not a spine
    assert cut_spine(photo, thin) is None and cut_spine(photo, square) is None


def test_cutouts_fit_the_rendered_spine_with_the_closest_shape():
    tall = np.zeros((10, 100, 3), np.uint8)  # 10:1
    stubby = np.full((20, 40, 3), 255, np.uint8)  # 2:1
    cutouts = SpineCutouts([tall, stubby], share=1.0, source="test")
    rng = np.random.default_rng(0)
    for _ in range(5):
        assert cutouts.strip(rng, 90, 9).shape == (9, 90, 3) and cutouts.strip(rng, 90, 9).max() == 0
        assert cutouts.strip(rng, 30, 15).min() == 255


def spine_set(folder: Path, unreadable: bool = False) -> AnnotationSet:
    photo, outline = tilted_spine_photo()
    Image.fromarray(photo).save(folder / "shelf.png")
    cover = np.array([[10, 10], [60, 10], [60, 60], [10, 60]], np.float32)
    records = [ImageRecord("shelf.png", folder / "shelf.png", [Instance((outline,), 1), Instance((cover,), 1)])]
    if unreadable:
        (folder / "broken.jpg").write_bytes(b"\xff\xd8 not a JPEG")
        records.append(ImageRecord("broken.jpg", folder / "broken.jpg", [Instance((outline,), 1)]))
    return AnnotationSet(source=folder / "spines.json", flavour="test", records=records, class_names=("book",))


def test_cut_spines_skips_unreadable_photos_and_refuses_a_set_without_spines(tmp_path, caplog):
    cutouts = cut_spines(spine_set(tmp_path, unreadable=True), 0.5, "spines.json", progress=False)
    assert len(cutouts.strips) == 1 and cutouts.share == 0.5 and cutouts.source == "spines.json"  # not the cover
    assert "broken.jpg" in caplog.text  # the broken photo is named, not fatal
    covers = AnnotationSet(source=tmp_path / "covers.json", flavour="test", records=[], class_names=("book",))
    with pytest.raises(ConfigError, match="covers.json: no labelled book shaped like a spine"):
        cut_spines(covers, 0.5, "covers.json", progress=False)
    with pytest.raises(ConfigError, match=r"must lie in \(0, 1\], got 1.5"):
        cut_spines(spine_set(tmp_path), 1.5, "spines.json", progress=False)


def test_rendered_books_wear_the_cut_out_spines_and_scenes_without_them_are_unchanged():
    cutouts = SpineCutouts([np.full((12, 80, 3), MAGENTA, np.uint8)], share=1.0, source="magenta")
    painted, books = render_scene(np.random.default_rng([3, 0]), 256, 192, kind="shelf", style="plain", spines=cutouts)
    drawn, same_books = render_scene(np.random.default_rng([3, 0]), 256, 192, kind="shelf", style="plain")
    magenta = (painted[..., 0] > 200) & (painted[..., 1] < 60) & (painted[..., 2] > 200)
    inside = np.zeros(magenta.shape, np.uint8)
    for polygon in books:
        cv2.fillPoly(inside, [np.round(polygon).astype(np.int32)], 1)
    assert magenta.sum() > 0.5 * inside.sum()  # most of the books' pixels: the cut-out's colour
    assert magenta[inside == 0].mean() < 0.01  # and nothing else is
    assert not ((drawn[..., 0] > 200) & (drawn[..., 1] < 60) & (drawn[..., 2] > 200)).any()
    again, _ = render_scene(np.random.default_rng([3, 0]), 256, 192, kind="shelf", style="plain")
    assert np.array_equal(drawn, again) and len(same_books) > 3


def test_the_data_module_renders_with_real_spines_once_and_refuses_a_folder_rendered_otherwise(tmp_path):
    spine_set(tmp_path)
    (tmp_path / "spines.json").write_text(json.dumps({"shelf.png123": {
        "filename": "shelf.png", "size": 123, "file_attributes": {},
        "regions": [{"shape_attributes": {"name": "polygon",
                                          "all_points_x": tilted_spine_photo()[1][:, 0].round(1).tolist(),
                                          "all_points_y": tilted_spine_photo()[1][:, 1].round(1).tolist()},
                     "region_attributes": {}}]}}))
    rendered = tmp_path / "rendered"
    synthetic = SyntheticConfig(num_images=2, width=96, height=64, spine_photos=str(tmp_path / "spines.json"),
                                spine_share=1.0)
    cfg = DataConfig(format="synthetic", root=str(rendered), annotations="via_region_data.json", images="images",
                     synthetic=synthetic, synthetic_root=str(rendered), image_check_cache=None)
    BookDataModule(cfg).prepare_data()
    settings = json.loads((rendered / SETTINGS_FILE).read_text())
    assert settings["spines"] == str(tmp_path / "spines.json") and settings["spine_share"] == 1.0
    assert settings["packed_share"] == 0.0 and settings["num_images"] == 2
    BookDataModule(cfg).prepare_data()  # the same settings: the folder is reused
    cfg.synthetic.spine_share = 0.5
    with pytest.raises(ConfigError, match=r"rendered with other settings \(spine_share 1.0 there, 0.5 asked\)"):
        BookDataModule(cfg).prepare_data()
    # a folder rendered before settings were recorded holds drawn spines only
    plain = tmp_path / "plain"
    generate_dataset(plain, 1, width=64, height=48, progress=False)
    (plain / SETTINGS_FILE).unlink()
    cfg.synthetic_root, cfg.root = str(plain), str(plain)
    with pytest.raises(ConfigError, match="spines None there"):
        BookDataModule(cfg).prepare_data()
    # and a record without a setting was written before that setting existed: its default
    (plain / SETTINGS_FILE).write_text(json.dumps({"num_images": 1, "seed": 0, "width": 64, "height": 48,
                                                   "style": "photo", "spines": None, "spine_share": None}))
    cfg.synthetic = SyntheticConfig(num_images=1, width=64, height=48)
    BookDataModule(cfg).prepare_data()
    cfg.synthetic.packed_share = 0.5
    with pytest.raises(ConfigError, match=r"\(packed_share 0.0 there, 0.5 asked\)"):
        BookDataModule(cfg).prepare_data()
    cfg.synthetic.packed_share, cfg.synthetic.flat_share = 0.0, 0.2
    with pytest.raises(ConfigError, match=r"\(flat_share 0.0 there, 0.2 asked\)"):
        BookDataModule(cfg).prepare_data()
    cfg.synthetic.packed_share = 1.5
    with pytest.raises(ConfigError, match=r"data.synthetic.packed_share must lie in \[0, 1\], got 1.5"):
        BookDataModule(cfg)
    cfg.synthetic.packed_share, cfg.synthetic.flat_share = 0.0, -0.1
    with pytest.raises(ConfigError, match=r"data.synthetic.flat_share must lie in \[0, 1\], got -0.1"):
        BookDataModule(cfg)
    cfg.synthetic.flat_share, cfg.synthetic.spine_share = 0.0, 0.0
    with pytest.raises(ConfigError, match=r"data.synthetic.spine_share must lie in \(0, 1\], got 0.0"):
        BookDataModule(cfg)
