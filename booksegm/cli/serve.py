"""Web page entry point: ``booksegm serve [ckpt_path=PATH] [port=7860] [host=127.0.0.1]``.

A local page (Gradio) where shelf photos are dropped or picked. Each batch is ``booksegm inventory``
run on those photos with the model loaded once at start-up: the page shows every photo with its books
outlined and numbered, the inventory table and the count per photo and row, and offers the upright
crops (zip), ``inventory.csv`` and a VIA 2 project of the predictions (to correct in VIA) for
download. A batch's files stay in a numbered folder under ``output_dir``: the photos as given
(``photos/``) and the inventory's outputs beside them.

Offline: the page needs nothing outside this machine. Its theme uses the system's fonts (no web
fonts), Gradio's analytics and version check are off, there is no share link, and the server listens
on 127.0.0.1 unless ``host`` says otherwise. An upload that is empty, not a photo, cut short, or over
``max_pixels`` (a decompression bomb) is named on the page with the reason; the others are
inventoried and the server goes on serving.
"""

from __future__ import annotations

import itertools
import logging
import os
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import hydra
from omegaconf import DictConfig
from PIL import Image, UnidentifiedImageError

from booksegm.config import ConfigError, check_command_line
from booksegm.data.formats.via import write_via
from booksegm.data.images import ImageReadError, image_size, verify_image
from booksegm.data.records import AnnotationSet
from booksegm.errors import UserError, cli_errors
from booksegm.inference import read_settings
from booksegm.photos import (
    CROPS,
    CSV_FILE,
    OVERLAYS,
    DetectorSettings,
    InventorySummary,
    detect_photos,
    inventory_photo,
    inventory_report,
    load_detector,
    via_record,
    write_inventory,
)

log = logging.getLogger(__name__)

GRADIO_MISSING = 'the web page needs Gradio: pip install "booksegm[serve]"'
PHOTOS, CROPS_ZIP, VIA_FILE = "photos", "crops.zip", "predictions_via.json"  # in each batch's folder
TABLE = ["photo", "book", "row", "position", "orientation", "score", "length_px", "width_px"]  # the page's columns
DOWNLOADS = {"crops": "Crops (zip)", "csv": "inventory.csv", "via": "VIA project (predictions)"}


@dataclass(kw_only=True)
class ServeSettings(DetectorSettings):
    """serve's knobs (conf/serve.yaml, a comment each): the photo commands' model settings and the page's own."""

    output_dir: str  # each batch gets a numbered folder here
    host: str = "127.0.0.1"  # 127.0.0.1: this machine only
    port: int = 7860
    max_pixels: int = 50_000_000  # a larger upload is refused before its pixels are decoded
    max_upload_mb: int = 200  # Gradio refuses larger files at upload

    def validate(self) -> None:
        super().validate()
        if not 0 < self.port < 65536:
            raise ConfigError(f"port must be in 1..65535, got {self.port}")
        if self.max_pixels < 1 or self.max_upload_mb < 1:
            raise ConfigError("max_pixels and max_upload_mb must be >= 1")


@dataclass
class PageResult:
    """What the page shows after a batch."""

    report: str  # inventory's report: the count table, the total, the files refused, the folder
    overlays: list[tuple[str, str]] = field(default_factory=list)  # (overlay PNG, caption) per photo
    table: list[list] = field(default_factory=list)  # one row a book, the TABLE columns
    downloads: dict[str, str | None] = field(default_factory=lambda: dict.fromkeys(DOWNLOADS))  # DOWNLOADS key: file


def no_progress(*args, **kwargs) -> None:
    """Progress shown nowhere: ``gr.Progress``'s call, for a batch taken without a page."""


class ShelfPage:
    """The model, loaded once, and what each batch of uploads becomes."""

    def __init__(self, settings: ServeSettings):
        settings.validate()
        self.settings = settings
        self.loaded, self.resize = load_detector(settings)

    def inventory(self, uploads: list[str] | None, progress: Callable = no_progress) -> PageResult:
        """Inventory the uploaded files (paths) into a new numbered folder; never raises for a bad file."""
        if not uploads:
            return PageResult("Drop or pick shelf photos above.")
        start = time.perf_counter()
        out = new_batch_folder(Path(self.settings.output_dir))
        progress(0, desc="checking the uploads")
        photos, refused = accept_uploads([Path(p) for p in uploads], out / PHOTOS, self.settings.max_pixels)
        summary = InventorySummary(skipped=refused)
        predictions = AnnotationSet(source=out / VIA_FILE, flavour="via2_project", records=[],
                                    class_names=tuple(self.loaded.class_names))
        tolerance = self.settings.polygon_tolerance
        if photos:
            progress((0, len(photos)), desc="finding the books", unit="photos")
        for k, (path, image, detections) in enumerate(
                detect_photos(self.loaded, photos, self.resize, self.settings, summary.skipped, "serve"), 1):
            name = path.relative_to(out / PHOTOS)
            inventory_photo(summary, name, image, detections, out, tolerance)
            predictions.records.append(via_record(path, name, detections, tolerance))
            progress((k, len(photos)), desc="finding the books", unit="photos")
        if summary.photos:
            write_inventory(summary, out)
            write_via(predictions, out / VIA_FILE, image_root=out / PHOTOS, project=True)
        report = inventory_report(summary, out, time.perf_counter() - start)
        log.info("%s", report)
        return page_result(summary, out, report)


def new_batch_folder(root: Path) -> Path:
    """``root/001``, ``002``, ...: the next free number (made here, so two batches never share one)."""
    root.mkdir(parents=True, exist_ok=True)
    number = max((int(p.name) for p in root.iterdir() if p.name.isdigit()), default=0)
    while True:
        number += 1
        try:
            (folder := root / f"{number:03d}").mkdir()
            return folder
        except FileExistsError:
            continue


def accept_uploads(uploads: list[Path], folder: Path, max_pixels: int) -> tuple[list[Path], list[str]]:
    """The uploads that decode, copied into ``folder`` under their own names; a message for each other one."""
    folder.mkdir(parents=True, exist_ok=True)
    photos, refused = [], []
    for upload in uploads:
        problem = upload_problem(upload, max_pixels)
        if problem is not None:
            log.warning("refused %s: %s", upload.name, problem)
            refused.append(f"{upload.name}: {problem}")
            continue
        photos.append(free_name(folder / upload.name))
        shutil.copyfile(upload, photos[-1])
    return photos, refused


def upload_problem(path: Path, max_pixels: int) -> str | None:
    """Why ``path`` cannot be inventoried, or None. Its size is read from the header first, so a
    decompression bomb is refused before any pixel is decoded; then the photo is decoded once."""
    if path.stat().st_size == 0:
        return "an empty file"
    try:
        width, height = image_size(path)
        if width * height > max_pixels:
            return (f"refused: {width} x {height} px ({width * height / 1e6:.3g} MP) is over this page's limit "
                    f"of {max_pixels / 1e6:.3g} MP (max_pixels)")
        verify_image(path)
    except ImageReadError as err:
        cause = err.__cause__
        if isinstance(cause, Image.DecompressionBombError):  # PIL's own limit, above any sane max_pixels
            return f"refused: over this page's limit of {max_pixels / 1e6:.3g} MP (max_pixels): {cause}"
        if isinstance(cause, UnidentifiedImageError):
            return "not an image (jpg, png, webp, bmp, tif)"
        return f"cannot decode: {cause or err}"
    return None


def free_name(path: Path) -> Path:
    """``path``, or ``name-2.jpg``, ``name-3.jpg``, ... when uploads share a name."""
    others = (path.with_name(f"{path.stem}-{k}{path.suffix}") for k in itertools.count(2))
    return path if not path.exists() else next(p for p in others if not p.exists())


def page_result(summary: InventorySummary, out: Path, report: str) -> PageResult:
    counts = {photo.photo: sum(photo.rows) for photo in summary.photos}
    overlays = [(str(out / OVERLAYS / Path(name).with_suffix(".png")), f"{name}: {count} books")
                for name, count in counts.items()]
    table = [[getattr(book, column) for column in TABLE] for book in summary.books]
    downloads = dict.fromkeys(DOWNLOADS)
    if summary.photos:
        downloads["csv"], downloads["via"] = str(out / CSV_FILE), str(out / VIA_FILE)
    if summary.books:
        downloads["crops"] = shutil.make_archive(str(out / Path(CROPS_ZIP).stem), "zip", root_dir=out, base_dir=CROPS)
    return PageResult(report, overlays, table, downloads)


def import_gradio():
    """Gradio, with its analytics and version check off (they call gradio.app); a UserError without it."""
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"  # read by gradio at import and at launch
    try:
        import gradio
    except ImportError:
        raise UserError(GRADIO_MISSING) from None
    return gradio


def build_page(page: ShelfPage):
    """The Gradio page around ``page.inventory``."""
    gr = import_gradio()

    def take(uploads, progress=gr.Progress()):
        result = page.inventory(uploads, progress)
        buttons = [gr.DownloadButton(value=result.downloads[key], interactive=result.downloads[key] is not None)
                   for key in DOWNLOADS]
        return f"```\n{result.report}\n```", result.overlays, result.table, *buttons

    # delete_cache: Gradio's copies of uploads and results go after a day (the batch folders keep theirs)
    with gr.Blocks(title="booksegm: shelf inventory", analytics_enabled=False, delete_cache=(3600, 86400)) as blocks:
        gr.Markdown("## Shelf inventory\nDrop or pick shelf photos: each book is found, outlined and numbered "
                    "in reading order (rows top to bottom, each left to right).")
        with gr.Row():
            with gr.Column(scale=2):
                uploads = gr.File(label="Shelf photos", file_count="multiple")
                report = gr.Markdown(elem_id="report")
                buttons = [gr.DownloadButton(label, interactive=False, elem_id=f"download-{key}")
                           for key, label in DOWNLOADS.items()]
            with gr.Column(scale=3):
                overlays = gr.Gallery(label="Books, numbered", columns=1, object_fit="contain", height="auto")
        table = gr.Dataframe(headers=TABLE, label="Inventory", interactive=False, elem_id="inventory")
        uploads.upload(take, uploads, [report, overlays, table, *buttons])
    return blocks


def offline_theme(gr):
    """Gradio's default theme in the system's fonts: a web font is a request an offline browser waits for."""
    return gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"])


def serve(settings: ServeSettings) -> None:
    gr = import_gradio()
    blocks = build_page(ShelfPage(settings))
    blocks.queue(default_concurrency_limit=1)  # one batch at a time: the model has the machine to itself
    logging.getLogger("httpx").setLevel(logging.WARNING)  # Gradio's requests to its own server, at start-up
    _, url, _ = blocks.launch(
        server_name=settings.host, server_port=settings.port, share=False, ssr_mode=False, mcp_server=False,
        theme=offline_theme(gr), max_file_size=f"{settings.max_upload_mb}mb", quiet=True, prevent_thread_lock=True,
        allowed_paths=[str(Path(settings.output_dir).resolve())])  # where the overlays and downloads are
    log.info("the page: %s (Ctrl+C stops it); each batch's files go to %s", url, settings.output_dir)
    blocks.block_thread()


@hydra.main(version_base="1.3", config_path="pkg://booksegm.conf", config_name="serve")
def main(cfg: DictConfig) -> None:
    with cli_errors():
        serve(read_settings(ServeSettings, cfg))


if __name__ == "__main__":
    with cli_errors():
        check_command_line("serve", sys.argv)
        import_gradio()  # before Hydra starts logging: one line without it
    main()
