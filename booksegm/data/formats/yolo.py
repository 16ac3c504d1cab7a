"""YOLO-seg folders (Ultralytics, Roboflow exports) -> AnnotationSet.

A split folder holds ``images/X.jpg`` and ``labels/X.txt``. Each label line is one instance,
``class_id x1 y1 x2 y2 ...`` with coordinates normalised to [0, 1] by the image size (a line of
five numbers, ``class_id cx cy w h``, is a box). Class names come from ``names:`` in a
``data.yaml`` in the folder or its parent (Roboflow puts it beside the splits); without one,
YOLO class k is ``data.classes[k]``.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np
import yaml

from booksegm.data.formats.common import add_region, class_label, decimal, header_size
from booksegm.data.formats.geometry import rect_polygon
from booksegm.data.formats.options import ReaderOptions
from booksegm.data.records import AnnotationError, AnnotationSet, BadRegion, ClassMap, ImageRecord, SkipRegion

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}
DATA_YAML = ("data.yaml", "data.yml")


def read_yolo(path: str | Path, options: ReaderOptions = ReaderOptions()) -> AnnotationSet:
    """Read the split folder ``path`` (``labels/`` and, unless ``options.image_root`` says, ``images/``).

    Bad lines and unreadable label files are handled as in read_via (``collect_errors``).
    """
    folder = Path(path)
    class_map = options.class_map
    labels_dir = folder / "labels"
    if not labels_dir.is_dir():
        splits = yolo_splits(folder)
        hint = f"; it holds the splits {splits}: pass one of them" if splits else ""
        raise AnnotationError(f"{folder}: not a YOLO-seg folder: no labels/ folder{hint}")
    images_dir = options.image_folder(folder / "images")
    images = {p.stem: p for p in sorted(images_dir.glob("*")) if p.suffix.lower() in IMAGE_SUFFIXES}
    labels = {p.stem: p for p in sorted(labels_dir.glob("*.txt"))}
    names = yolo_names(folder)
    annotations = AnnotationSet(source=folder, flavour="yolo", records=[], class_names=class_map.classes)
    for stem in sorted(images.keys() | labels.keys()):
        image_path = images.get(stem, images_dir / stem)  # a label without its image: reported missing
        with annotations.collecting():
            lines = read_label_lines(labels[stem]) if stem in labels else []
            size = header_size(image_path)
            width, height = size or (None, None)
            file_name = image_path.relative_to(images_dir).as_posix()
            record = ImageRecord(file_name, image_path, width=width, height=height, num_regions=len(lines))
            for number, line in lines:
                shape = "rect" if len(line.split()) == 5 else "polygon"
                read = partial(read_line, line, size, names, class_map, options.on_unknown_class)
                add_region(annotations, record, shape, f"{labels[stem]}: line {number}", read, size)
            annotations.records.append(record)
    if not options.collect_errors:
        annotations.raise_errors()
    return annotations


def read_line(
    line: str, size: tuple[int, int] | None, names: list[str] | None, class_map: ClassMap, on_unknown_class: str
) -> tuple[list[np.ndarray], int, str | None]:
    tokens = line.split()
    try:
        class_id, values = decimal(tokens[0]), np.array([decimal(t) for t in tokens[1:]], dtype=np.float64)
    except ValueError:
        raise BadRegion(f"expected numbers 'class_id x1 y1 x2 y2 ...', got {line!r}") from None
    if not class_id.is_integer() or class_id < 0:
        raise BadRegion(f"class id must be a whole number >= 0, got {tokens[0]!r}")
    if len(values) % 2 or not np.isfinite(values).all():
        raise BadRegion(f"expected x y pairs of finite numbers after the class id, got {len(values)} numbers")
    label, assumed = yolo_label(int(class_id), names, class_map, on_unknown_class)
    if size is None:
        raise SkipRegion("image missing or unreadable: normalised coordinates need its size")
    scale = np.array(size, dtype=np.float64)
    if len(values) == 4:  # a box line: centre x, centre y, width, height
        (cx, cy), (w, h) = values[:2] * scale, values[2:] * scale
        return [rect_polygon(cx - w / 2, cy - h / 2, w, h)], label, assumed
    return [(values.reshape(-1, 2) * scale).astype(np.float32)], label, assumed


def yolo_label(
    class_id: int, names: list[str] | None, class_map: ClassMap, on_unknown_class: str
) -> tuple[int, str | None]:
    if names is None:  # no data.yaml: YOLO ids are data.classes in order, from 0
        if class_id < len(class_map.classes):
            return class_id + 1, None
        if on_unknown_class == "skip":
            raise SkipRegion(f"class id {class_id} not in data.classes")
        raise BadRegion(
            f"class id {class_id}, but data.classes {list(class_map.classes)} has {len(class_map.classes)} "
            "(no data.yaml names the classes); add classes or set data.on_unknown_class=skip"
        )
    if class_id >= len(names):
        raise BadRegion(f"class id {class_id}, but data.yaml names {len(names)} classes")
    return class_label(class_map, names[class_id], on_unknown_class)


def read_label_lines(path: Path) -> list[tuple[int, str]]:
    """(line number, text) of each non-blank line."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise AnnotationError(f"{path}: cannot read: {err}") from None
    return [(n, line) for n, line in enumerate(text.splitlines(), start=1) if line.strip()]


def yolo_names(folder: Path) -> list[str] | None:
    """Class names from ``names:`` in the split's or the dataset's data.yaml (a list or {id: name})."""
    for candidate in (place / name for place in (folder, folder.parent) for name in DATA_YAML):
        if not candidate.is_file():
            continue
        try:
            names = (yaml.safe_load(candidate.read_text(encoding="utf-8")) or {}).get("names")
        except (OSError, UnicodeDecodeError, yaml.YAMLError, AttributeError) as err:
            raise AnnotationError(f"{candidate}: cannot read class names: {err}") from None
        if isinstance(names, dict) and all(str(k).isdigit() for k in names):  # Ultralytics: {0: person, ...}
            by_id = {int(k): v for k, v in names.items()}
            names = [by_id.get(i, str(i)) for i in range(max(by_id, default=-1) + 1)]
        if not isinstance(names, list):
            raise AnnotationError(f"{candidate}: 'names' must be a list of class names or {{id: name}}, got {names!r}")
        return [str(n) for n in names]
    return None


def yolo_splits(folder: Path) -> list[str]:
    """The split folders (``train``, ``valid``, ...) of a dataset root, each with labels/."""
    if not folder.is_dir():
        return []
    return sorted(p.name for p in folder.iterdir() if (p / "labels").is_dir())
