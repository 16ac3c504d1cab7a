"""The shelf inventory: rows and order on rendered shelves whose layout the generator knows, a turned
shelf, upright crops, and ``booksegm inventory`` end to end on a tiny untrained model."""

from __future__ import annotations

import csv
import json
import math
import subprocess
import sys
from collections import Counter
from dataclasses import fields
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from support import train_env

from booksegm.bench import inventory as bench_inventory
from booksegm.bench.__main__ import main as bench_main
from booksegm.cli.export import write_state_dict
from booksegm.data.resize import ResizeConfig
from booksegm.data.synthetic import ShelfPlace, render_books, shelf_order
from booksegm.data.transforms import rasterize
from booksegm.inference import Detections, LoadedModel
from booksegm.model.build import ModelConfig, build_maskrcnn
from booksegm.photos import BookRecord
from booksegm.shelves import GREY, arrange, upright_crop

WIDTH, HEIGHT = 320, 240  # the synthetic set's size


def masks_of(polygons: list[np.ndarray], height: int, width: int) -> np.ndarray:
    return np.array([rasterize([np.asarray(p, np.float32)], height, width).astype(bool) for p in polygons])


def arranged_as_built(seed: list[int], width: int, height: int) -> list[ShelfPlace]:
    """Assert that ``arrange``, fed the labels of a plain shelf render, gives each book the row and
    position the generator built it in; the books' places."""
    _, rendered = render_books(np.random.default_rng(seed), width, height, kind="shelf", style="plain")
    places = [place for _, place in rendered]
    found = {book.index: (book.row, book.position) for book in arrange(masks_of([p for p, _ in rendered],
                                                                                 height, width))}
    assert [found.get(i) for i in range(len(rendered))] == shelf_order(places), f"render {seed} at {width}x{height}"
    return places


def test_rows_and_order_on_clean_renders_are_the_generators():
    """Fed the labels of 40 plain shelf renders (camera tilt and keystone included), every book gets the
    row and position the generator built it in: rows top to bottom, left to right, a stack top down."""
    renders = [arranged_as_built([2026, k], WIDTH, HEIGHT) for k in range(40)]
    rows = {(k, place.floor) for k, places in enumerate(renders) for place in places}
    stacked = sum(place.level > 0 for places in renders for place in places)
    assert sum(map(len, renders)) > 400 and len(rows) > 50 and stacked > 10  # what was checked


@pytest.mark.parametrize("seed, width, height", [
    ([11, 90], 640, 480),  # a book cut by the photo's right edge shows only its top: it shares a tenth of its
    # height with the last three places of its row, and none with the last alone
    ([11, 158], WIDTH, HEIGHT),  # two covers facing out, read as lying, one above the other's board, overlap
    # along the shelf and lie 39 px apart: under half the thinner one's 81 px, over a quarter, so no stack
])
def test_renders_that_hold_a_rule_of_the_method(seed, width, height):
    arranged_as_built(seed, width, height)


def rectangle(x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
    return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], np.float64)


def leaning(foot_x: float, floor: float, width: float, height: float, angle: float) -> np.ndarray:
    """A book leaning right by ``angle`` on its foot's left corner."""
    along, up = np.array([math.cos(angle), math.sin(angle)]), np.array([math.sin(angle), -math.cos(angle)])
    foot = np.array([foot_x, floor])
    return np.array([foot, foot + width * along, foot + width * along + height * up, foot + height * up])


# Two shelf rows drawn by hand: (outline, row, position, standing). Row 1 holds two standing books, a
# stack of three lying ones (numbered top down), a leaning book and a standing one; row 2, after a board,
# five standing books with a gap.
SHELF = [
    (rectangle(60, 80, 80, 150), 1, 1, True),
    (rectangle(82, 90, 100, 150), 1, 2, True),
    (rectangle(108, 117, 172, 126), 1, 3, False),
    (rectangle(104, 126, 170, 138), 1, 4, False),
    (rectangle(106, 138, 175, 150), 1, 5, False),
    (leaning(182, 150, 14, 66, 0.35), 1, 6, True),
    (rectangle(215, 85, 236, 150), 1, 7, True),
    (rectangle(70, 200, 95, 270), 2, 1, True),
    (rectangle(96, 195, 110, 270), 2, 2, True),
    (rectangle(112, 215, 140, 270), 2, 3, True),
    (rectangle(190, 205, 205, 270), 2, 4, True),
    (rectangle(207, 190, 230, 270), 2, 5, True),
]


@pytest.mark.parametrize("degrees", [0, 25, -30, 40, -42])
def test_a_turned_shelf_keeps_its_rows_order_and_orientations(degrees):
    """The whole photo turned (a camera held askew): the same rows, order and standing/lying."""
    turn = math.radians(degrees)
    rotation = np.array([[math.cos(turn), -math.sin(turn)], [math.sin(turn), math.cos(turn)]])
    outlines = [(outline - 175) @ rotation.T + 200 for outline, *_ in SHELF]  # about the shelf's middle, in 400 px
    books = arrange(masks_of(outlines, 400, 400))
    assert [(b.index, b.row, b.position, b.standing) for b in books] == [(i, *rest) for i, (_, *rest) in
                                                                         enumerate(SHELF)]


def test_an_upright_crop_turns_a_standing_book_and_greys_what_is_not_book():
    """A tilted standing book, red top half and blue bottom half, one corner outside its mask: the crop
    stands it up (red on top), is as large as the book, and shows grey where the mask is not."""
    size, tilt = 200, math.radians(12)
    book = leaning(80, 170, 24, 120, tilt)  # width 24 px, length 120 px
    notch = np.array([book[2], book[2] + (book[3] - book[2]) * 0.5, book[2] + (book[1] - book[2]) * 0.1])
    image = np.zeros((size, size, 3), np.uint8)
    image[:] = (0, 255, 0)  # green: never in a crop
    middle = (book[0] + book[3]) / 2, (book[1] + book[2]) / 2
    top_half = np.array([middle[0], middle[1], book[2], book[3]])
    image[masks_of([book], size, size)[0]] = (0, 0, 255)
    image[masks_of([top_half], size, size)[0]] = (255, 0, 0)
    mask = masks_of([book], size, size)[0] & ~masks_of([notch], size, size)[0]
    (shelved,) = arrange(mask[None])
    crop = upright_crop(image, mask, shelved)

    assert abs(crop.shape[0] - 120) <= 2 and abs(crop.shape[1] - 24) <= 2
    red, blue = np.all(crop == (255, 0, 0), axis=2), np.all(crop == (0, 0, 255), axis=2)
    assert red[:50].mean() > 0.8 and blue[-50:].mean() > 0.8
    assert not np.any((crop[..., 1] > 128) & (crop[..., 0] < 100))  # no green
    assert np.all(crop[2, -3] == GREY)  # the notch: the top right corner, outside the mask


def test_an_upright_crop_turns_a_lying_book_a_quarter_left():
    """A lying book's right end goes up: its title, read left to right, then reads bottom to top."""
    image = np.zeros((100, 160, 3), np.uint8)
    image[40:60, 20:70] = (255, 0, 0)
    image[40:60, 70:120] = (0, 0, 255)
    mask = np.zeros((100, 160), bool)
    mask[40:60, 20:120] = True
    (shelved,) = arrange(mask[None])
    crop = upright_crop(image, mask, shelved)

    assert not shelved.standing and crop.shape[:2] == (100, 20)
    assert np.all(crop[:50] == (0, 0, 255)) and np.all(crop[50:] == (255, 0, 0))


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    """An untrained tiny model exported as a state dict (96 px squares): at score 0 it finds "books"."""
    torch.manual_seed(0)
    config = ModelConfig(backbone="resnet18", rpn_pre_nms_top_n_test=50, rpn_post_nms_top_n_test=20,
                         box_detections_per_img=10)
    loaded = LoadedModel(build_maskrcnn(config, num_classes=2).eval(), ["book"], config,
                         ResizeConfig(mode="square", min_dim=96, max_dim=96), None, Path())
    path = tmp_path_factory.mktemp("model") / "tiny.pth"
    write_state_dict(loaded, path)
    return path


def test_the_command_writes_the_inventory_crops_and_overlays(tiny_model, tmp_path):
    photos = tmp_path / "photos"
    (photos / "hall").mkdir(parents=True)
    for k, name in enumerate(["a.jpg", "hall/b.png"]):
        render = render_books(np.random.default_rng([3, k]), 160, 120, kind="shelf")[0]
        Image.fromarray(render).save(photos / name)
    (photos / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a JPEG")
    out = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, "-m", "booksegm", "inventory", str(photos), f"ckpt_path={tiny_model}",
         f"output_dir={out}", "score_threshold=0", "device=cpu"],
        cwd=tmp_path, env=train_env(tmp_path), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]

    with open(out / "inventory.csv", newline="", encoding="utf-8") as file:
        rows = list(csv.DictReader(file))
    content = json.loads((out / "inventory.json").read_text())
    names = [f.name for f in fields(BookRecord)]
    assert list(rows[0]) == names and [list(book) for book in content["books"]] == [names] * len(rows)
    assert {r["photo"] for r in rows} == {"a.jpg", "hall/b.png"} and len(rows) == len(content["books"]) > 2
    for row, book in zip(rows, content["books"]):
        assert row == {k: json.dumps(v) if k == "polygon" else str(v) for k, v in book.items()}
        assert book["orientation"] in ("standing", "lying") and len(book["polygon"]) >= 3
        assert book["crop"] == f"crops/{Path(book['photo']).with_suffix('')}/{book['row']}_{book['position']}.png"
        assert (out / book["crop"]).is_file()
    for photo in content["photos"]:
        mine = [b for b in content["books"] if b["photo"] == photo["photo"]]
        assert [b["book"] for b in mine] == list(range(1, len(mine) + 1))
        assert photo["rows"] == [sum(b["row"] == r for b in mine) for r in range(1, len(photo["rows"]) + 1)]
        assert Image.open(out / "overlay" / Path(photo["photo"]).with_suffix(".png")).size == (160, 120)
    lines = result.stdout.splitlines()  # after the log lines: the table, header first
    table = lines[next(k for k, line in enumerate(lines) if line.startswith("photo ")):]
    assert table[0].split()[:3] == ["photo", "books", "row"]
    for line, photo in zip(table[1:3], content["photos"], strict=True):
        counts = [str(sum(photo["rows"])), *map(str, photo["rows"])]
        assert line.split()[:1 + len(counts)] == [photo["photo"], *counts]
    assert table[3].split() == ["total", str(len(rows))]
    assert "skipped 1 unreadable file(s)" in result.stdout and "broken.jpg" in result.stdout


def test_the_bench_counts_a_missed_book_against_the_places_after_it(monkeypatch):
    """Predictions = the labels less the first book of the top row: every book is found but that one,
    all keep their row and their order among the found, and the top row's others lose their position
    (each moves up one)."""
    photo, books = render_books(np.random.default_rng([2026, 1]), WIDTH, HEIGHT, kind="shelf", style="plain")
    truth = shelf_order([place for _, place in books])
    first = truth.index((1, 1))
    masks = masks_of([polygon for i, (polygon, _) in enumerate(books) if i != first], HEIGHT, WIDTH)
    found = Detections(np.zeros((len(masks), 4), np.float32), np.linspace(1, 0.5, len(masks), dtype=np.float32),
                       np.ones(len(masks), np.int64), masks)
    monkeypatch.setattr(bench_inventory, "predict_images", lambda *args: [found])

    counts = bench_inventory.score_photo(None, None, photo, books)
    n, top_row = len(truth), sum(row == 1 for row, _ in truth)
    assert 1 < top_row < n
    assert counts == Counter(books=n, found=n - 1, in_order=n - 1, row=n - 1, place=n - top_row, labels=n)


def test_the_bench_prints_each_figure(tiny_model, capsys):
    assert bench_main(["inventory", "--ckpt", str(tiny_model), "--photos", "2", "--score-threshold", "0",
                       "--device", "cpu"]) == 0
    lines = capsys.readouterr().out.splitlines()
    books = int(lines[-6].split(", ")[-1].split()[0])
    assert books > 10 and [line.split()[0] for line in lines[-5:]] == ["found", "right", "right", "in", "from"]
    assert lines[-1].split()[2:] == [str(books), "/", str(books), "100.0%"]
