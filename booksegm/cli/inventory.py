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

import logging
import sys
import time
from pathlib import Path

import hydra
from omegaconf import DictConfig

from booksegm.config import check_command_line
from booksegm.errors import cli_errors
from booksegm.inference import read_settings
from booksegm.photos import (
    CROPS,
    CSV_FILE,
    JSON_FILE,
    OVERLAYS,
    InventorySummary,
    PhotoSettings,
    detect_photos,
    inventory_photo,
    inventory_report,
    start_run,
    with_input_override,
    write_inventory,
)

log = logging.getLogger(__name__)

OUTPUTS = [CSV_FILE, JSON_FILE, CROPS, OVERLAYS]


def inventory(settings: PhotoSettings) -> InventorySummary:
    start = time.perf_counter()
    run = start_run(settings, "inventory", OUTPUTS)
    out = Path(settings.output_dir)
    summary = InventorySummary(ignored=run.ignored, videos=len(run.videos))
    if run.videos:
        log.warning("%d video(s) left out: the inventory reads photos", len(run.videos))
    for path, image, detections in detect_photos(run.loaded, run.photos, run.resize, settings, summary.skipped,
                                                 "inventory"):
        inventory_photo(summary, path.relative_to(run.root), image, detections, out, settings.polygon_tolerance)
    write_inventory(summary, out)
    print(inventory_report(summary, out, time.perf_counter() - start))
    return summary


@hydra.main(version_base="1.3", config_path="pkg://booksegm.conf", config_name="inventory")
def main(cfg: DictConfig) -> None:
    with cli_errors():
        inventory(read_settings(PhotoSettings, cfg))


if __name__ == "__main__":
    sys.argv = with_input_override(sys.argv)
    with cli_errors():
        check_command_line("inventory", sys.argv)
    main()
