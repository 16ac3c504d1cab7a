"""Inventory entry point: ``booksegm inventory INPUT [ckpt_path=PATH] [output_dir=DIR]``.

For each photo of ``INPUT`` (a photo, or a folder searched recursively) the model's books, grouped
into shelf rows, rows top to bottom and each left to right (``booksegm.shelves``, the method in
docs/inventory.md). Without ``ckpt_path``, the bundled ``books`` model. Outputs under ``output_dir``,
named after each photo's path relative to the input folder:

- ``inventory.csv`` and ``inventory.json``: one record per book, the same fields in both (docs/inventory.md);
  the JSON adds each photo's size and its books per row, photos without books included;
- ``crops/<photo>/<row>_<position>.png``: each book upright, grey outside its mask;
- ``overlay/<photo>.png``: the books outlined, each with its number (the records' ``book``).

Then a table of the books per photo and per row. The output folder, unreadable photos and the
model's settings behave as in ``predict``; videos are left out with a warning.
"""

from __future__ import annotations

import csv
import json
import logging
import sys
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import hydra
import numpy as np
from omegaconf import DictConfig

from booksegm.config import check_command_line
from booksegm.data.formats.geometry import largest_outline
from booksegm.errors import cli_errors
from booksegm.inference import Detections, read_settings
from booksegm.photos import PhotoSettings, closing_lines, detect_photos, save_png, start_run, with_input_override
from booksegm.shelves import ShelvedBook, arrange, upright_crop
from booksegm.viz.overlays import draw_numbered

log = logging.getLogger(__name__)

CSV_FILE, JSON_FILE, CROPS, OVERLAYS = "inventory.csv", "inventory.json", "crops", "overlay"
OUTPUTS = [CSV_FILE, JSON_FILE, CROPS, OVERLAYS]


@dataclass
class BookRecord:
    """One book: a row of inventory.csv, an entry of inventory.json's ``books`` (docs/inventory.md)."""

    photo: str  # the photo's path relative to the input folder
    book: int  # the number on the overlay: 1, 2, ... in reading order
    row: int  # 1 = the top shelf row in the photo
    position: int  # 1 = the leftmost in its row; a stack of lying books takes one place, numbered top down
    orientation: str  # standing | lying
    score: float
    x0: int  # the mask's box, on pixel edges
    y0: int
    x1: int
    y1: int
    area_px: int  # the mask's pixels
    length_px: float  # the mask's minimum-area rectangle: its long side
    width_px: float  # and its short side
    crop: str  # the crop's path relative to the output folder
    polygon: list[list[float]]  # the mask's outline [[x, y], ...], simplified; in the CSV as JSON text


@dataclass
class PhotoSummary:
    photo: str
    width: int
    height: int
    rows: list[int]  # books in each row, top to bottom


@dataclass
class InventorySummary:
    photos: list[PhotoSummary] = field(default_factory=list)
    books: list[BookRecord] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # one message per unreadable photo
    ignored: list[str] = field(default_factory=list)  # files of the input folder neither photo nor video
    videos: int = 0  # left out: the inventory reads photos


def inventory(settings: PhotoSettings) -> InventorySummary:
    start = time.perf_counter()
    run = start_run(settings, "inventory", OUTPUTS)
    out = Path(settings.output_dir)
    summary = InventorySummary(ignored=run.ignored, videos=len(run.videos))
    if run.videos:
        log.warning("%d video(s) left out: the inventory reads photos", len(run.videos))
    for path, image, detections in detect_photos(run.loaded, run.photos, run.resize, settings, summary.skipped,
                                                 "inventory"):
        name = path.relative_to(run.root)
        books = arrange(detections.masks)
        records = [book_record(name, number, book, image, detections, out, settings.polygon_tolerance)
                   for number, book in enumerate(books, 1)]
        masks = detections.masks[[book.index for book in books]]
        centres = [tuple(book.shape.centre) for book in books]
        save_png(draw_numbered(image, masks, [str(r.book) for r in records], centres),
                 out / OVERLAYS / name.with_suffix(".png"))
        rows = [sum(book.row == row for book in books) for row in range(1, books[-1].row + 1 if books else 1)]
        summary.photos.append(PhotoSummary(name.as_posix(), image.shape[1], image.shape[0], rows))
        summary.books += records
    write_inventory(summary, out)
    print(report(summary, out, time.perf_counter() - start))
    return summary


def book_record(name: Path, number: int, book: ShelvedBook, image: np.ndarray, detections: Detections, out: Path,
                tolerance: float) -> BookRecord:
    """The book's record; its crop is written on the way."""
    mask = detections.masks[book.index]
    crop = Path(CROPS) / name.with_suffix("") / f"{book.row}_{book.position}.png"
    save_png(upright_crop(image, mask, book), out / crop)
    shape = book.shape
    outline = largest_outline(mask, tolerance)
    return BookRecord(
        name.as_posix(), number, book.row, book.position, "standing" if book.standing else "lying",
        round(float(detections.scores[book.index]), 4), *shape.box, shape.area, round(shape.length, 1),
        round(shape.thickness, 1), crop.as_posix(), [[round(float(x), 1), round(float(y), 1)] for x, y in outline],
    )


def write_inventory(summary: InventorySummary, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    names = [f.name for f in fields(BookRecord)]
    with open(out / CSV_FILE, "w", newline="", encoding="utf-8") as file:
        writer = csv.DictWriter(file, names)
        writer.writeheader()
        for record in summary.books:
            writer.writerow({**asdict(record), "polygon": json.dumps(record.polygon)})
    content = {"photos": [asdict(p) for p in summary.photos], "books": [asdict(r) for r in summary.books]}
    (out / JSON_FILE).write_text(json.dumps(content, indent=1) + "\n", encoding="utf-8")


def count_table(photos: list[PhotoSummary]) -> str:
    """Books per photo and per row, one line a photo, and the total."""
    most_rows = max((len(p.rows) for p in photos), default=0)
    header = ["photo", "books", *(f"row {k}" for k in range(1, most_rows + 1))]
    lines = [[p.photo, str(sum(p.rows)), *(str(n) for n in p.rows), *["-"] * (most_rows - len(p.rows))]
             for p in photos]
    lines.append(["total", str(sum(sum(p.rows) for p in photos)), *[""] * most_rows])
    widths = [max(len(line[k]) for line in [header, *lines]) for k in range(len(header))]
    return "\n".join("  ".join(cell.ljust(w) if k == 0 else cell.rjust(w) for k, (cell, w) in
                               enumerate(zip(line, widths))).rstrip() for line in [header, *lines])


def report(summary: InventorySummary, out: Path, seconds: float) -> str:
    lines = [count_table(summary.photos), "",
             f"inventoried {len(summary.photos)} photos: {len(summary.books)} books in {seconds:.1f} s"]
    if summary.videos:
        lines.append(f"left out {summary.videos} video(s): the inventory reads photos")
    return "\n".join(lines + closing_lines(summary.skipped, summary.ignored, out))


@hydra.main(version_base="1.3", config_path="pkg://booksegm.conf", config_name="inventory")
def main(cfg: DictConfig) -> None:
    with cli_errors():
        inventory(read_settings(PhotoSettings, cfg))


if __name__ == "__main__":
    sys.argv = with_input_override(sys.argv)
    with cli_errors():
        check_command_line("inventory", sys.argv)
    main()
