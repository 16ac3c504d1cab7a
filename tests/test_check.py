"""The dataset check report: counts, skips, box statistics and exit status, on fixtures and real files."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from booksegm.cli.data import main
from booksegm.data.check import summarize
from booksegm.data.datamodule import BookDataModule, DataConfig
from booksegm.data.formats import load_annotations
from booksegm.data.formats.options import ReaderOptions

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
needs_shared = pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/data (real VIA files, book-spines) is absent")


def run_check(capsys, *args: str) -> tuple[int, str]:
    status = main(["check", *map(str, args)])
    return status, capsys.readouterr().out


def rect_region(x, y, w, h) -> dict:
    return {"shape_attributes": {"name": "rect", "x": x, "y": y, "width": w, "height": h}, "region_attributes": {}}


def write_set(tmp_path: Path) -> Path:
    """good.png (3 rects), missing.png, broken.png (not an image), empty.png (no regions)."""
    for name in ("good.png", "empty.png"):
        Image.fromarray(np.zeros((100, 120, 3), np.uint8)).save(tmp_path / name)
    (tmp_path / "broken.png").write_bytes(b"\x89PNG not really")
    regions = {"good.png": [rect_region(0, 0, 10, 20), rect_region(0, 0, 20, 40), rect_region(0, 0, 30, 60)],
               "missing.png": [rect_region(0, 0, 5, 5)], "broken.png": [rect_region(0, 0, 5, 5)], "empty.png": []}
    data = {name: {"filename": name, "size": -1, "regions": r} for name, r in regions.items()}
    (tmp_path / "via.json").write_text(json.dumps(data))
    return tmp_path / "via.json"


def test_report_counts_images_regions_and_box_percentiles(tmp_path, capsys):
    status, out = run_check(capsys, write_set(tmp_path), "--json")
    report = json.loads(out)
    assert status == 0 and report["usable"] and report["flavour"] == "via2"
    assert report["images"] == {"listed": 4, "found": 3, "missing": 1, "unreadable": 1, "without_regions": 1}
    assert report["regions"] == {"total": 5, "by_shape": {"rect": 5}, "used": 5, "skipped": {}, "repaired": {},
                                 "assumed": {"no class, taken as book": 5}}
    assert report["errors"] == []
    assert report["classes"] == {"book": 5}
    # widths 10, 20, 30, 5, 5 and heights twice those but 5, 5: every used instance counts
    assert report["boxes"]["width"] == {"p5": 5, "p50": 10, "p95": 28}
    assert report["boxes"]["height"]["p50"] == 20 and report["boxes"]["aspect"]["p50"] == 0.5
    assert report["missing_files"] == ["missing.png"]
    assert "broken.png: cannot decode" in report["unreadable_files"][0]


def test_text_report(tmp_path, capsys):
    status, out = run_check(capsys, write_set(tmp_path))
    assert status == 0
    assert "via.json: VIA 2.x export (via2)" in out
    assert "images   4 listed, 3 found, 1 missing, 1 unreadable, 1 without regions" in out
    assert "regions  5 (rect 5)" in out and "verdict  usable" in out
    assert "used     5\n         5  no class, taken as book" in out
    assert "missing:\n    missing.png" in out


def test_nothing_usable_exits_1_and_an_unreadable_file_exits_2(tmp_path, capsys):
    data = {"a": {"filename": "a.png", "size": -1, "regions": [rect_region(0, 0, 5, 5)]}}
    (tmp_path / "via.json").write_text(json.dumps(data))
    status, out = run_check(capsys, tmp_path / "via.json")
    assert status == 1 and "NOTHING USABLE: no listed image was found and readable" in out
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(SystemExit, match="^2$"):
        main(["check", str(tmp_path / "bad.json")])
    assert "bad.json: invalid JSON at line 1 column 2" in capsys.readouterr().err


def test_every_problem_in_a_file_is_listed_and_exits_2(tmp_path, capsys):
    for name in ("a.png", "c.png"):
        Image.fromarray(np.zeros((100, 120, 3), np.uint8)).save(tmp_path / name)
    strings = {"name": "polygon", "all_points_x": ["10", "20", "30"], "all_points_y": [10, 10, 30]}
    data = {"a": {"filename": "a.png", "regions": [{"shape_attributes": {"name": "rect", "x": 1, "y": 1}}]},
            "b": {"filename": "b.png", "regions": [rect_region(0, 0, 5, 5)]},
            "c": {"filename": "c.png", "regions": [rect_region(0, 0, 5, 5), {"shape_attributes": strings}]}}
    (tmp_path / "via.json").write_text(json.dumps(data))
    status, out = run_check(capsys, tmp_path / "via.json")
    assert status == 2
    assert "errors   2\n" in out and "missing:\n    b.png" in out
    assert "image 'a.png', region 0: a rect needs x, y, width, height; 'width' is missing" in out
    assert "image 'c.png', region 1: polygon coordinate must be a number, got '10'" in out
    assert "verdict  2 ERRORS" in out
    status, out = run_check(capsys, tmp_path / "via.json", "--json")
    report = json.loads(out)
    assert status == 2 and len(report["errors"]) == 2 and report["missing_files"] == ["b.png"]
    assert report["regions"]["used"] == 2


def test_training_logs_the_regions_taken_as_the_single_class(tmp_path, caplog):
    write_set(tmp_path)
    module = BookDataModule(DataConfig(format="via", root=str(tmp_path), annotations="via.json", val_fraction=0.0))
    with caplog.at_level(logging.INFO, logger="booksegm.data.datamodule"):
        module.setup()
    assert "used     5\n         5  no class, taken as book" in caplog.text


def test_header_only_check_as_training_does_at_start_up(tmp_path):
    noise = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(noise).save(tmp_path / "a.jpg", quality=90)
    data = (tmp_path / "a.jpg").read_bytes()
    (tmp_path / "a.jpg").write_bytes(data[: len(data) // 2])
    (tmp_path / "via.json").write_text(json.dumps({"a": {"filename": "a.jpg", "regions": [rect_region(0, 0, 9, 9)]}}))
    annotations = load_annotations(tmp_path / "via.json")
    assert summarize(annotations, decode=False)["images"]["unreadable"] == 0
    assert summarize(annotations)["images"]["unreadable"] == 1


# the counts stated in ../shared/data/README.md for each real VIA file (no images come with them)
VIA_SAMPLES = {
    "via1_all_shapes.json": ("via1", 3, 0, {"ellipse": 3, "rect": 2, "point": 5, "circle": 1, "polygon": 1}),
    "via2_export_rects_numeric_attrs.json": ("via2", 266, 0, {"rect": 427}),
    "via2_project_polylines_circle.json": ("via2_project", 4, 2, {"polyline": 11, "circle": 1}),
    "via2_project_empty.json": ("via2_project", 0, 0, {}),
}


@needs_shared
@pytest.mark.parametrize("name", sorted(VIA_SAMPLES))
def test_real_via_files_match_the_readme(capsys, name):
    flavour, images, without_regions, shapes = VIA_SAMPLES[name]
    status, out = run_check(capsys, SHARED / "via-samples" / name, "--json")
    report = json.loads(out)
    assert report["flavour"] == flavour
    assert report["images"] == {"listed": images, "found": 0, "missing": images, "unreadable": 0,
                                "without_regions": without_regions}
    assert report["regions"]["by_shape"] == shapes and report["regions"]["total"] == sum(shapes.values())
    assert report["regions"]["used"] + sum(report["regions"]["skipped"].values()) == sum(shapes.values())
    assert status == 1  # the images are not shipped with these files


@needs_shared
def test_real_via_files_skip_what_has_no_area_or_class():
    skip = ReaderOptions(on_unknown_class="skip")
    via1 = summarize(load_annotations(SHARED / "via-samples" / "via1_all_shapes.json", options=skip))
    assert via1["regions"]["skipped"]["point has no area"] == 5
    assert via1["regions"]["used"] == 2  # the circle and ellipse with empty attributes; the others name no book
    rects = summarize(load_annotations(SHARED / "via-samples" / "via2_export_rects_numeric_attrs.json"))
    assert rects["regions"]["used"] == 427  # numeric attributes (track ids) are not class names
    camfi = summarize(load_annotations(SHARED / "via-samples" / "via2_project_polylines_circle.json"))
    assert camfi["regions"]["used"] == 1 and sum(camfi["regions"]["skipped"].values()) == 11


@needs_shared
@pytest.mark.parametrize("split, images, instances", [("train", 96, 1006), ("valid", 23, 45)])
def test_book_spines_report(capsys, split, images, instances):
    status, out = run_check(capsys, SHARED / "book-spines" / split, "--alias", "book-s-spine=book", "--json")
    report = json.loads(out)
    assert status == 0 and report["flavour"] == "yolo"
    assert report["images"] == {"listed": images, "found": images, "missing": 0, "unreadable": 0,
                                "without_regions": 0}
    assert report["regions"]["used"] == instances and report["classes"] == {"book": instances}
    assert 0 < report["boxes"]["aspect"]["p50"] < 1  # spines stand upright: narrower than tall
