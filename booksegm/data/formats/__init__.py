"""Annotation formats: VIA (every flavour), COCO instances JSON and YOLO-seg folders.

``load_annotations`` picks the reader; every reader takes the same ReaderOptions and returns
the same AnnotationSet. ``save_annotations`` writes VIA or COCO.
"""

from __future__ import annotations

import json
from pathlib import Path

from booksegm.data.formats.coco import read_coco, write_coco
from booksegm.data.formats.options import ReaderOptions
from booksegm.data.formats.via import read_via, write_via
from booksegm.data.formats.yolo import read_yolo
from booksegm.data.records import AnnotationError, AnnotationSet

FORMATS = ("auto", "via", "coco", "yolo")


def load_annotations(path: str | Path, format: str = "auto", options: ReaderOptions = ReaderOptions()) -> AnnotationSet:
    """Read ``path`` (a VIA or COCO JSON file, or a YOLO-seg folder) with the reader for ``format``.

    Malformed images and regions raise the first as AnnotationError, or with
    ``options.collect_errors`` are all listed in the result's ``errors`` (what the check reports).
    """
    path = Path(path)
    if format not in FORMATS:
        raise AnnotationError(f"annotation format {format!r} is unknown; choose one of {list(FORMATS)}")
    if format == "auto":
        format = detect_format(path)
    if format != "via" and (options.class_attribute is not None or options.polyline_as_outline):
        raise AnnotationError(f"class_attribute and polyline_as_outline apply to VIA files, not to {format}")
    reader = {"via": read_via, "coco": read_coco, "yolo": read_yolo}[format]
    return reader(path, options)


def save_annotations(annotations: AnnotationSet, path: str | Path, format: str) -> None:
    """Write ``annotations`` to ``path`` as ``via`` (a VIA 2.x export) or ``coco`` (instances JSON)."""
    if format not in ("via", "coco"):
        raise AnnotationError(f"cannot write format {format!r}; choose via or coco")
    writer = write_via if format == "via" else write_coco
    writer(annotations, Path(path))


def detect_format(path: Path) -> str:
    """``yolo`` for a folder, ``coco`` for a JSON with images + annotations, else ``via``."""
    if path.is_dir():
        return "yolo"
    if path.suffix.lower() != ".json":
        raise AnnotationError(f"{path}: expected a VIA or COCO .json file, or a YOLO-seg folder")
    try:
        with open(path, encoding="utf-8-sig") as f:
            data = json.load(f)
    except (OSError, ValueError):
        return "via"  # the VIA reader reports what is wrong with the file
    return "coco" if isinstance(data, dict) and {"images", "annotations"} <= data.keys() else "via"
