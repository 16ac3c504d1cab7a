"""Annotation formats: VIA (every flavour), COCO instances JSON and YOLO-seg folders.

``load_annotations`` picks the reader; every reader returns the same AnnotationSet.
"""

from __future__ import annotations

import json
from pathlib import Path

from booksegm.data.records import BOOK, AnnotationError, AnnotationSet, ClassMap

FORMATS = ("auto", "via", "coco", "yolo")


def load_annotations(
    path: str | Path,
    format: str = "auto",
    image_root: str | Path | None = None,
    class_map: ClassMap = BOOK,
    class_attribute: str | None = None,
    polyline_as_outline: bool = False,
    on_unknown_class: str = "error",
    collect_errors: bool = False,
) -> AnnotationSet:
    """Read ``path`` (a VIA or COCO JSON file, or a YOLO-seg folder) with the reader for ``format``.

    ``class_attribute`` and ``polyline_as_outline`` are VIA's (see read_via); ``on_unknown_class``
    (``error`` | ``skip``) applies to class names not in ``class_map`` in every format. Malformed
    images and regions raise the first as AnnotationError, or with ``collect_errors`` are all
    listed in the result's ``errors`` (what the check reports).
    """
    path = Path(path)
    if format not in FORMATS:
        raise AnnotationError(f"annotation format {format!r} is unknown; choose one of {list(FORMATS)}")
    if format == "auto":
        format = detect_format(path)
    # readers are imported here: via.py uses this package's helpers, and only the one needed loads
    if format == "via":
        from booksegm.data.via import read_via

        return read_via(
            path, image_root, class_map, class_attribute, polyline_as_outline, on_unknown_class, collect_errors
        )
    if class_attribute is not None or polyline_as_outline:
        raise AnnotationError(f"class_attribute and polyline_as_outline apply to VIA files, not to {format}")
    if format == "coco":
        from booksegm.data.formats.coco import read_coco as reader
    else:
        from booksegm.data.formats.yolo import read_yolo as reader
    return reader(path, image_root, class_map, on_unknown_class, collect_errors)


def save_annotations(annotations: AnnotationSet, path: str | Path, format: str) -> None:
    """Write ``annotations`` to ``path`` as ``via`` (a VIA 2.x export) or ``coco`` (instances JSON)."""
    path = Path(path)
    if format not in ("via", "coco"):
        raise AnnotationError(f"cannot write format {format!r}; choose via or coco")
    path.parent.mkdir(parents=True, exist_ok=True)
    if format == "via":
        from booksegm.data.via import write_via as writer
    else:
        from booksegm.data.formats.coco import write_coco as writer
    writer(annotations, path)


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
