"""What the commands that run the model on photos share (``predict``, ``inventory``, ``serve``): their
common settings, the photos (and videos) of an input, the model set up for them, detections photo by
photo, the rule for the output folder, a photo's predictions as a VIA record, and a photo's shelf
inventory (its books' records, crops and numbered overlay; the CSV, JSON and report of many photos)."""

from __future__ import annotations

import csv
import json
import logging
import shutil
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
from hydra.core.hydra_config import HydraConfig
from PIL import Image
from tqdm import tqdm

from booksegm.config import ConfigError
from booksegm.data.formats.geometry import largest_outline
from booksegm.data.images import ImageReadError, load_rgb
from booksegm.data.records import ImageRecord, Instance
from booksegm.data.resize import ResizeConfig
from booksegm.inference import (
    DEFAULT_MAX_SIDE,
    Detections,
    LoadedModel,
    load_model,
    predict_images,
    select_device,
    set_detection_limits,
    with_mask_threshold,
)
from booksegm.model.build import check_mask_threshold
from booksegm.shelves import ShelvedBook, arrange, upright_crop
from booksegm.viz.overlays import draw_numbered

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff"}
VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v"}


@dataclass
class DetectorSettings:
    """The model's knobs in every command that runs it on photos (each command's YAML lists them, a comment each)."""

    ckpt_path: str | None = None  # null: the bundled books model
    score_threshold: float | None = None  # DETECTION_MIN_CONFIDENCE; null: the checkpoint's calibrated one, else 0.7
    mask_threshold: float | None = None  # a mask pixel is the book's above this probability; null: the model's own
    max_detections: int = 100  # DETECTION_MAX_INSTANCES
    batch_size: int = 1  # IMAGES_PER_GPU
    device: str = "auto"
    resize: ResizeConfig | None = None  # null: as the checkpoint's validation
    max_side: int = DEFAULT_MAX_SIDE  # px: the longest model input; a longer photo is scaled down first
    polygon_tolerance: float = 1.0  # px, cv2.approxPolyDP epsilon for the polygons written out

    def validate(self) -> None:
        if self.score_threshold is not None and not 0.0 <= self.score_threshold <= 1.0:
            raise ConfigError(f"score_threshold must lie in [0, 1], got {self.score_threshold}")
        check_mask_threshold(self.mask_threshold)
        if self.max_detections < 1 or self.batch_size < 1 or self.max_side < 1 or self.polygon_tolerance < 0:
            raise ConfigError("max_detections, batch_size and max_side must be >= 1, polygon_tolerance >= 0")
        if self.resize is not None:
            self.resize.validate(training=False)


@dataclass(kw_only=True)
class PhotoSettings(DetectorSettings):
    """The knobs of a command that reads an input of photos into an output folder (predict, inventory)."""

    input: str
    output_dir: str
    overwrite: bool = False  # a non-empty output_dir: refused, or (true) the command's earlier outputs in it deleted


@dataclass
class PhotoRun:
    """What a photo command works on, once its settings are checked and its model is loaded."""

    root: Path  # the folder output names are relative to
    photos: list[Path]
    videos: list[Path]
    ignored: list[str]  # files of the input folder neither photo nor video, relative to root
    loaded: LoadedModel
    resize: ResizeConfig


def start_run(settings: PhotoSettings, command: str, outputs: list[str]) -> PhotoRun:
    """Check the settings and the output folder, find the inputs and load the model, in that order
    (a mistake stops the command before the slow part); then, with ``overwrite``, delete the
    command's ``outputs`` left in the folder."""
    settings.validate()
    out = Path(settings.output_dir)
    check_output_dir(out, settings.overwrite, command, outputs)
    root, photos, videos, others = find_inputs(Path(settings.input).expanduser())
    ignored = [p.relative_to(root).as_posix() for p in others]
    if ignored:
        log.warning("ignoring %s", describe_ignored(ignored))
    loaded, resize = load_detector(settings)
    if settings.overwrite:
        remove_earlier_outputs(out, outputs)  # now that the model loaded: a failed start leaves them
    return PhotoRun(root, photos, videos, ignored, loaded, resize)


def find_inputs(path: Path) -> tuple[Path, list[Path], list[Path], list[Path]]:
    """(the folder names are relative to, photos, videos, the other files) for a file or a folder tree."""
    if not path.exists():
        raise ConfigError(f"input={path}: no such file or folder")
    if path.is_file():
        suffix = path.suffix.lower()
        if suffix not in IMAGE_SUFFIXES | VIDEO_SUFFIXES:
            raise ConfigError(f"input={path}: not an image or video ({sorted(IMAGE_SUFFIXES | VIDEO_SUFFIXES)})")
        return path.parent, [path] * (suffix in IMAGE_SUFFIXES), [path] * (suffix in VIDEO_SUFFIXES), []
    files = sorted(p for p in path.rglob("*") if p.is_file())
    photos = [p for p in files if p.suffix.lower() in IMAGE_SUFFIXES]
    videos = [p for p in files if p.suffix.lower() in VIDEO_SUFFIXES]
    if not photos and not videos:
        raise ConfigError(f"input={path}: no images or videos in this folder or below it")
    others = [p for p in files if p.suffix.lower() not in IMAGE_SUFFIXES | VIDEO_SUFFIXES]
    return path, photos, videos, others


def describe_ignored(names: list[str], shown: int = 5) -> str:
    suffixes = ", ".join(sorted(IMAGE_SUFFIXES | VIDEO_SUFFIXES))
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return f"{len(names)} file(s) that are neither images nor videos ({suffixes}): {', '.join(names[:shown])}{more}"


def closing_lines(skipped: list[str], ignored: list[str], out: Path) -> list[str]:
    """The end of a photo command's report: the files it could not read or passed over, and where its outputs are."""
    lines = []
    if skipped:
        lines.append(f"skipped {len(skipped)} unreadable file(s):")
        lines += [f"  {message}" for message in skipped]
    if ignored:
        lines.append(f"ignored {describe_ignored(ignored)}")
    return [*lines, f"outputs in {out}"]


def load_detector(settings: DetectorSettings) -> tuple[LoadedModel, ResizeConfig]:
    """The model, with its detection limits set, and how photos are resized for it."""
    loaded = with_mask_threshold(load_model(settings.ckpt_path, select_device(settings.device)), settings.mask_threshold)
    resize = settings.resize or loaded.resize
    if resize is None:
        raise ConfigError(
            f"{settings.ckpt_path}: the checkpoint does not say how images were resized (no run config beside it): "
            "set resize={mode:square,min_dim:800,max_dim:1024} as in training"
        )
    threshold = loaded.display_threshold(settings.score_threshold)
    log.info("score threshold %.3f (%s)", threshold, "asked for" if settings.score_threshold is not None else
             "calibrated on the run's validation" if loaded.score_threshold is not None else "matterport's default")
    set_detection_limits(loaded.model, threshold, settings.max_detections)
    return loaded, resize


def detect_photos(loaded: LoadedModel, photos: list[Path], resize: ResizeConfig, settings: DetectorSettings,
                  skipped: list[str], desc: str) -> Iterator[tuple[Path, np.ndarray, Detections]]:
    """Each readable photo with its detections, ``settings.batch_size`` photos a forward pass; an
    unreadable one is logged and its message added to ``skipped``."""
    batch: list[tuple[Path, np.ndarray]] = []
    for k, path in enumerate(tqdm(photos, desc=desc, unit="img")):
        try:
            batch.append((path, load_rgb(path)))
        except ImageReadError as err:
            log.warning("skipping %s", err)
            skipped.append(str(err))
        if batch and (len(batch) == settings.batch_size or k == len(photos) - 1):
            images = [image for _, image in batch]
            for (path_, image), detections in zip(batch, predict_images(loaded, images, resize, settings.max_side)):
                yield path_, image, detections
            batch.clear()


def check_output_dir(out: Path, overwrite: bool, command: str, outputs: list[str]) -> None:
    """Refuse a folder that holds anything (before any work), unless told to overwrite."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"output_dir={out}: a file, not a folder")
    if out.is_dir() and any(out.iterdir()) and not is_this_run_folder(out) and not overwrite:
        raise ConfigError(f"output_dir={out} is not empty: give a new folder, or overwrite=true to replace "
                          f"{command}'s outputs there ({', '.join(outputs)})")


def is_this_run_folder(out: Path) -> bool:
    """The folder Hydra made for this run (the default output_dir): new, it holds only Hydra's own files."""
    return HydraConfig.initialized() and out.resolve() == Path(HydraConfig.get().runtime.output_dir).resolve()


def remove_earlier_outputs(out: Path, outputs: list[str]) -> None:
    """Every output the command writes, whatever this run asks for: none may be left from an earlier run."""
    for path in (out / name for name in outputs):
        if path.exists():
            log.warning("overwrite=true: deleting %s", path)
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink()


def save_png(image: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path)  # PIL: non-ASCII paths work everywhere (cv2.imwrite's do not on Windows)


def with_input_override(argv: list[str]) -> list[str]:
    """``booksegm predict shelf.jpg ...``: a first argument that is neither a flag nor an override is
    the ``input``."""
    if len(argv) > 1 and not argv[1].startswith("-") and "=" not in argv[1]:
        return [argv[0], f"input={argv[1]}", *argv[2:]]
    return argv


def via_record(path: Path, name: Path, detections: Detections, tolerance: float) -> ImageRecord:
    """A photo's detections for a VIA file: each mask's largest part outlined, simplified by ``tolerance``,
    with its score; empty masks are left out."""
    instances = []
    for label, score, mask in zip(detections.labels, detections.scores, detections.masks):
        outline = largest_outline(mask, tolerance)
        if outline is not None:
            instances.append(Instance((outline,), int(label), score=float(score)))
    return ImageRecord(name.as_posix(), path, instances)


# A shelf inventory's outputs, under its output folder (docs/inventory.md)
CSV_FILE, JSON_FILE, CROPS, OVERLAYS = "inventory.csv", "inventory.json", "crops", "overlay"


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


def inventory_photo(summary: InventorySummary, name: Path, image: np.ndarray, detections: Detections, out: Path,
                    tolerance: float) -> None:
    """One photo's books in shelf order, added to ``summary``; its crops and numbered overlay are written
    under ``out`` (``name``: the photo's path relative to the input folder)."""
    books = arrange(detections.masks)
    records = [book_record(name, number, book, image, detections, out, tolerance)
               for number, book in enumerate(books, 1)]
    masks = detections.masks[[book.index for book in books]]
    centres = [tuple(book.shape.centre) for book in books]
    save_png(draw_numbered(image, masks, [str(r.book) for r in records], centres),
             out / OVERLAYS / name.with_suffix(".png"))
    rows = [sum(book.row == row for book in books) for row in range(1, books[-1].row + 1 if books else 1)]
    summary.photos.append(PhotoSummary(name.as_posix(), image.shape[1], image.shape[0], rows))
    summary.books += records


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


def inventory_report(summary: InventorySummary, out: Path, seconds: float) -> str:
    """The count table, the total, what was left out and where the outputs are."""
    lines = [count_table(summary.photos), "",
             f"inventoried {len(summary.photos)} photos: {len(summary.books)} books in {seconds:.1f} s"]
    if summary.videos:
        lines.append(f"left out {summary.videos} video(s): the inventory reads photos")
    return "\n".join(lines + closing_lines(summary.skipped, summary.ignored, out))
