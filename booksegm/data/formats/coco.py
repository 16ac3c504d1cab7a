"""COCO instances JSON <-> AnnotationSet: polygons, RLE masks (read as outlines) and boxes."""

from __future__ import annotations

from collections import defaultdict
from functools import partial
from pathlib import Path

import numpy as np
from shapely.geometry import Polygon

from booksegm.data.formats.common import (
    ImageLocator,
    add_region,
    class_label,
    coordinate,
    file_name_from,
    header_size,
    json_number,
    read_json,
    write_json,
)
from booksegm.data.formats.geometry import mask_outlines, rect_polygon
from booksegm.data.formats.options import ReaderOptions
from booksegm.data.records import AnnotationError, AnnotationSet, BadRegion, ImageRecord, Instance, SkipRegion

MAX_MASK_PIXELS = 1 << 28  # beyond PIL's decompression-bomb limit: a corrupt size, not a photo


def read_coco(path: str | Path, options: ReaderOptions = ReaderOptions()) -> AnnotationSet:
    """Read a COCO instances file; images are looked up under ``options.image_root`` (default: its folder).

    Crowd annotations (``iscrowd: 1``) mark regions to ignore, not instances: they are skipped
    with a count. RLE masks become their outer outlines; annotations with no segmentation use
    their ``bbox`` as a rectangle. Malformed images and annotations are handled as in read_via
    (``collect_errors``).
    """
    path = Path(path)
    class_map = options.class_map
    data = read_json(path)
    if not isinstance(data, dict) or not {"images", "annotations"} <= data.keys():
        raise AnnotationError(f"{path}: not a COCO instances file: expected an object with 'images' and 'annotations'")
    images = coco_table(data, "images", path)
    categories = {coco_id(c, "id", path): str(c.get("name", "")) for c in coco_table(data, "categories", path)}
    image_ids = {coco_id(image, "id", path) for image in images}
    annotations = AnnotationSet(source=path, flavour="coco", records=[], class_names=class_map.classes)
    by_image = defaultdict(list)
    for ann in coco_table(data, "annotations", path):
        with annotations.collecting():
            image_id = coco_id(ann, "image_id", path)
            if image_id not in image_ids:
                raise AnnotationError(f"{path}: annotation {ann.get('id')!r}: image_id {image_id!r} is not in 'images'")
            by_image[image_id].append(ann)

    def read_annotation(ann: dict) -> tuple[list[np.ndarray], int, str | None]:
        if ann.get("iscrowd"):
            raise SkipRegion("crowd region (iscrowd=1)")
        category = ann.get("category_id")
        if not isinstance(category, (int, str)) or category not in categories:
            raise BadRegion(f"category_id {category!r} is not in 'categories'")
        return annotation_outlines(ann), *class_label(class_map, categories[category], options.on_unknown_class)

    locator = ImageLocator(options.image_folder(path.parent))
    for image in images:
        file_name = image.get("file_name")
        if not isinstance(file_name, str) or not file_name.strip():
            annotations.errors.append(f"{path}: image {image.get('id')!r}: 'file_name' must be a non-empty string")
            continue
        record_path = locator.resolve(file_name)
        size = stated_size(image) or header_size(record_path)
        width, height = size or (None, None)
        anns = by_image[image["id"]]
        record = ImageRecord(file_name, record_path, width=width, height=height, num_regions=len(anns))
        for ann in anns:
            where = f"{path}: annotation {ann.get('id')!r} of {file_name!r}"
            add_region(annotations, record, coco_shape(ann), where, partial(read_annotation, ann), size)
        annotations.records.append(record)
    if not options.collect_errors:
        annotations.raise_errors()
    return annotations


def coco_table(data: dict, key: str, path: Path) -> list[dict]:
    table = data.get(key, [])
    if not isinstance(table, list) or not all(isinstance(row, dict) for row in table):
        raise AnnotationError(f"{path}: '{key}' must be a list of objects")
    return table


def coco_id(row: dict, key: str, path: Path) -> int | str:
    value = row.get(key)
    if not isinstance(value, (int, str)) or isinstance(value, bool):
        raise AnnotationError(f"{path}: '{key}' must be a number or a string, got {value!r} in {row!r:.120}")
    return value


def stated_size(image: dict) -> tuple[int, int] | None:
    width, height = image.get("width"), image.get("height")
    if all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in (width, height)):
        return width, height
    return None


def coco_shape(ann: dict) -> str:
    segmentation = ann.get("segmentation")
    if isinstance(segmentation, dict):
        return "rle"
    return "polygon" if segmentation else "rect"


def annotation_outlines(ann: dict) -> list[np.ndarray]:
    segmentation = ann.get("segmentation")
    if isinstance(segmentation, dict):
        return rle_outlines(segmentation)
    if segmentation:
        if not isinstance(segmentation, list) or not all(isinstance(p, list) for p in segmentation):
            raise BadRegion("'segmentation' must be a list of [x1, y1, x2, y2, ...] polygons or an RLE object")
        return [flat_polygon(p) for p in segmentation]
    bbox = ann.get("bbox")
    if not isinstance(bbox, list) or len(bbox) != 4:
        raise BadRegion(f"no segmentation, and 'bbox' is not [x, y, width, height]: {bbox!r}")
    return [rect_polygon(*(coordinate(v, "bbox coordinate") for v in bbox))]


def flat_polygon(values: list) -> np.ndarray:
    if len(values) % 2:
        raise BadRegion(f"a polygon needs x, y pairs, got {len(values)} numbers")
    return np.array([coordinate(v, "polygon coordinate") for v in values], dtype=np.float32).reshape(-1, 2)


def rle_outlines(rle: dict) -> list[np.ndarray]:
    """The outer outlines of an RLE mask, on pixel edges; SkipRegion for an empty one."""
    outlines = mask_outlines(rle_mask(rle))
    if not outlines:
        raise SkipRegion("empty mask")
    return outlines


def rle_mask(rle: dict) -> np.ndarray:
    """(H, W) uint8 mask of a COCO RLE, checked before it is expanded.

    Decoded here rather than by pycocotools, whose C decoder writes as many pixels as the counts
    say, past the mask when a corrupt file's counts add up to more than height x width.
    """
    size, counts = rle.get("size"), rle.get("counts")
    if not (isinstance(size, list) and len(size) == 2 and all(isinstance(v, int) and v > 0 for v in size)):
        raise BadRegion(f"RLE 'size' must be [height, width], got {size!r}")
    height, width = size
    if height * width > MAX_MASK_PIXELS:
        raise BadRegion(f"RLE 'size' {size} is larger than any photo ({MAX_MASK_PIXELS} pixels at most)")
    if isinstance(counts, str):
        counts = rle_string_counts(counts)
    if not isinstance(counts, list) or not all(isinstance(c, int) and not isinstance(c, bool) for c in counts):
        raise BadRegion("RLE 'counts' must be a list of whole numbers or a COCO RLE string")
    if any(c < 0 for c in counts) or sum(counts) != height * width:
        raise BadRegion(f"RLE counts cover {sum(counts)} pixels, but 'size' {size} has {height * width}")
    values = np.arange(len(counts), dtype=np.int64) % 2  # runs alternate 0, 1, 0, ... from a 0-run
    return np.repeat(values.astype(np.uint8), counts).reshape(width, height).T.copy()  # column-major


def rle_string_counts(text: str) -> list[int]:
    """Run lengths from COCO's compressed RLE string (pycocotools' rleFrString, in Python)."""
    counts, p = [], 0
    try:
        while p < len(text):
            x, k, more = 0, 0, True
            while more:
                c = ord(text[p]) - 48
                x |= (c & 0x1F) << 5 * k
                more = c & 0x20
                p += 1
                k += 1
                if not more and c & 0x10:
                    x |= -1 << 5 * k
            counts.append(x + counts[-2] if len(counts) > 2 else x)
    except IndexError:
        raise BadRegion("the RLE 'counts' string ends in the middle of a number") from None
    return counts


def write_coco(annotations: AnnotationSet, path: Path, image_root: Path | None = None) -> None:
    """COCO instances JSON, categories 1..N as data.classes, file names relative to ``image_root``
    (default: ``path``'s folder), so the file reads back with it.

    An instance with an ``rle`` mask is written with it (holes kept) and its pixel area, else with
    its polygons and their area; its bbox is its ``box`` when it has one, else its polygons'
    bounds. Scored instances (predictions) carry ``score``: the annotations list is then a COCO
    results file.
    """
    image_root = image_root if image_root is not None else path.parent
    images, anns = [], []
    for image_id, record in enumerate(annotations.records, start=1):
        image = {"id": image_id, "file_name": file_name_from(record.path, image_root)}
        size = (record.width, record.height) if record.width and record.height else header_size(record.path)
        if size:  # unknown for a missing image; readers then look at the file
            image["width"], image["height"] = size
        images.append(image)
        for inst in record.instances:
            ann = {"id": len(anns) + 1, "image_id": image_id, "category_id": inst.label, "bbox": coco_bbox(inst)}
            if inst.score is not None:
                ann["score"] = round(inst.score, 4)
            if inst.rle is not None:
                ann["area"], ann["segmentation"] = rle_area(inst.rle), inst.rle
            else:
                ann["area"] = round(sum(Polygon(p.astype(np.float64)).area for p in inst.polygons), 3)
                ann["segmentation"] = [[json_number(v) for v in p.ravel()] for p in inst.polygons]
            ann["iscrowd"] = 0
            anns.append(ann)
    categories = [{"id": i, "name": name} for i, name in enumerate(annotations.class_names, 1)]
    write_json({"images": images, "annotations": anns, "categories": categories}, path)


def coco_bbox(inst: Instance) -> list[float]:
    """[x, y, width, height]: the detector's box to 0.01 px, else the polygons' bounds exactly."""
    if inst.box is not None:
        x0, y0, x1, y1 = inst.box
        return [round(v, 2) for v in (x0, y0, x1 - x0, y1 - y0)]
    points = np.concatenate(inst.polygons).astype(np.float64)
    (x0, y0), (x1, y1) = points.min(axis=0), points.max(axis=0)
    return [json_number(v) for v in (x0, y0, x1 - x0, y1 - y0)]


def rle_area(rle: dict) -> int:
    """Pixels in an RLE mask: the sum of its 1-runs (every other run, from the second)."""
    counts = rle["counts"]
    return sum((rle_string_counts(counts) if isinstance(counts, str) else counts)[1::2])
