"""VGG Image Annotator (VIA) files <-> AnnotationSet: every flavour the tool writes is read; VIA 2 is written.

Flavours, told apart by content:

- ``via1``: VIA 1.x export, ``{key: {filename, size, regions: {"0": region, ...}}}``;
- ``via2``: VIA 2.x export, the same with ``regions`` a list;
- ``via2_project``: VIA 2 project, ``{_via_img_metadata: {key: image}, _via_attributes, ...}``
  with an optional ``_via_image_id_list`` giving the order;
- ``via3``: VIA 3 project, ``{project, config, attribute, file, view, metadata}``; a region is
  ``metadata[mid] = {vid, z, xy: [shape_id, coordinates...], av: {attribute_id: value}}``.

Every flavour is first brought to VIA 2 terms (:class:`ViaImage` of :class:`ViaRegion`), so
shapes and classes are read by one piece of code. Shapes become polygons (rect, circle, ellipse
sampled along the curve); points and lines have no area and are skipped with a count.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np

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
from booksegm.data.formats.geometry import ellipse_polygon, rect_polygon
from booksegm.data.formats.options import ReaderOptions
from booksegm.data.records import AnnotationError, AnnotationSet, BadRegion, ClassMap, ImageRecord, SkipRegion

log = logging.getLogger(__name__)

VIA_VERSION = "2.0.10"  # the VIA 2 project format written
VIA3_KEYS = {"project", "file", "metadata"}  # with "attribute", "view", "config"
# _VIA_RSHAPE in via-3.x.y/src/js/_via_metadata.js
VIA3_SHAPES = {1: "point", 2: "rect", 3: "circle", 4: "ellipse", 5: "line", 6: "polyline", 7: "polygon",
               8: "extreme_rect", 9: "extreme_circle"}
# the other shapes list x, y pairs: [shape_id, x1, y1, x2, y2, ...]
VIA3_PARAMETERS = {"point": ("cx", "cy"), "rect": ("x", "y", "width", "height"), "circle": ("cx", "cy", "r"),
                   "ellipse": ("cx", "cy", "rx", "ry")}
VIA3_IMAGE = 2  # _VIA_FILE_TYPE.IMAGE in _via_file.js (4 is video, 8 audio)
VIA3_CHECKBOX = 2  # _VIA_ATTRIBUTE_TYPE in _via_attribute.js; with RADIO 3 and SELECT 4, values are option ids
VIA3_OPTION_TYPES = {VIA3_CHECKBOX, 3, 4}


@dataclass
class ViaRegion:
    shape: dict  # VIA 2 shape_attributes: {"name": "polygon", "all_points_x": [...], ...}
    attributes: dict  # VIA 2 region_attributes: {attribute name: value}
    where: str  # "file: image 'a.jpg', region 3": how errors name it, as the file lists it


@dataclass
class ViaImage:
    file_name: str
    regions: list[ViaRegion]


def read_via(path: str | Path, options: ReaderOptions = ReaderOptions()) -> AnnotationSet:
    """Read any VIA file. Images are looked up under ``options.image_root`` (default: the file's folder).

    ``options.class_attribute`` names the region attribute holding the class (auto-detected when
    None); ``options.polyline_as_outline`` closes open polylines into polygons instead of skipping
    them. Malformed images and regions are all read past and listed in ``errors``; the first is
    raised (saying how many more) unless ``options.collect_errors``. A file that is no VIA file
    raises at once.
    """
    path = Path(path)
    class_map, class_attribute = options.class_map, options.class_attribute
    data = read_json(path)
    flavour = via_flavour(data, path)
    annotations = AnnotationSet(source=path, flavour=flavour, records=[], class_names=class_map.classes)
    images = via3_images(data, path, annotations) if flavour == "via3" else via2_images(data, flavour, annotations)
    if class_attribute is None:
        class_attribute = detect_class_attribute(images, class_map, path)
    classes = RegionClasses(class_map, class_attribute, options.on_unknown_class)

    def read_region(region: ViaRegion) -> tuple[list[np.ndarray], int, str | None]:
        return [shape_outline(region.shape, options.polyline_as_outline)], *classes.label(region.attributes)

    locator = ImageLocator(options.image_folder(path.parent))
    for image in images:
        record_path = locator.resolve(image.file_name)
        size = header_size(record_path)
        width, height = size or (None, None)
        record = ImageRecord(image.file_name, record_path, width=width, height=height, num_regions=len(image.regions))
        for region in image.regions:
            shape = str(region.shape.get("name", ""))
            add_region(annotations, record, shape, region.where, partial(read_region, region), size)
        annotations.records.append(record)
    if not options.collect_errors:
        annotations.raise_errors()
    return annotations


# -- flavours ---------------------------------------------------------------------------------


def via_flavour(data: object, path: Path) -> str:
    if not isinstance(data, dict):
        raise AnnotationError(f"{path}: not a VIA file: the top level is a {type(data).__name__}, not an object")
    if "_via_img_metadata" in data:
        return "via2_project"
    if VIA3_KEYS <= data.keys():
        return "via3"
    if {"images", "annotations"} <= data.keys():
        raise AnnotationError(f"{path}: this is a COCO file, not VIA: use data.format=coco")
    if all(isinstance(entry, dict) and "filename" in entry for entry in data.values()):
        return "via1" if any(isinstance(entry.get("regions"), dict) for entry in data.values()) else "via2"
    raise AnnotationError(
        f"{path}: not a VIA file: expected images keyed by name with 'filename' and 'regions' (VIA 1/2 "
        "export), '_via_img_metadata' (VIA 2 project) or 'project', 'file' and 'metadata' (VIA 3 project)"
    )


def via2_images(data: dict, flavour: str, annotations: AnnotationSet) -> list[ViaImage]:
    """VIA 1.x / 2.x exports and VIA 2 projects: one entry per image, regions inline.

    A malformed image or region is noted in ``annotations.errors`` and left out.
    """
    path = annotations.source
    metadata = data["_via_img_metadata"] if flavour == "via2_project" else data
    if not isinstance(metadata, dict):
        raise AnnotationError(f"{path}: '_via_img_metadata' must be an object, got {type(metadata).__name__}")
    order = data.get("_via_image_id_list") if flavour == "via2_project" else None
    keys = list(metadata)
    if isinstance(order, list):  # the project's image order; ids it misses keep file order after it
        listed = [k for k in order if isinstance(k, str) and k in metadata]
        keys = list(dict.fromkeys(listed + keys))
    images = []
    for key in keys:
        with annotations.collecting():
            images.append(via2_image(metadata[key], key, annotations))
    return images


def via2_image(entry: object, key: str, annotations: AnnotationSet) -> ViaImage:
    where = f"{annotations.source}: image {key!r}"
    if not isinstance(entry, dict):
        raise AnnotationError(f"{where}: expected an object with 'filename' and 'regions', got {type(entry).__name__}")
    file_name = entry.get("filename")
    if not isinstance(file_name, str) or not file_name.strip():
        raise AnnotationError(f"{where}: 'filename' must be a non-empty string, got {file_name!r}")
    regions = entry.get("regions", [])
    if isinstance(regions, dict):  # VIA 1.x keys regions "0", "1", ...; sorted JSON puts "10" before "2"
        regions = [regions[k] for k in sorted(regions, key=lambda k: (not k.isdigit(), int(k) if k.isdigit() else k))]
    if not isinstance(regions, list):
        raise AnnotationError(f"{where}: 'regions' must be a list or an object, got {type(regions).__name__}")
    image = ViaImage(file_name, [])
    for i, region in enumerate(regions):
        with annotations.collecting():
            image.regions.append(via2_region(region, f"{annotations.source}: image {file_name!r}, region {i}"))
    return image


def via2_region(region: object, where: str) -> ViaRegion:
    if not isinstance(region, dict):
        raise AnnotationError(f"{where}: expected an object with 'shape_attributes', got {type(region).__name__}")
    shape = region.get("shape_attributes")
    attributes = region.get("region_attributes") or {}
    if not isinstance(shape, dict):
        raise AnnotationError(f"{where}: 'shape_attributes' must be an object, got {shape!r}")
    if not isinstance(attributes, dict):
        raise AnnotationError(f"{where}: 'region_attributes' must be an object, got {attributes!r}")
    return ViaRegion(shape, attributes, where)


def via3_images(data: dict, path: Path, annotations: AnnotationSet) -> list[ViaImage]:
    """VIA 3 projects: files, views (one file each for images) and metadata keyed by view.

    Metadata that is no region of a photo (temporal segments, regions in video or audio files)
    is counted in ``annotations`` as seen and skipped; malformed metadata is noted in its
    ``errors``. The file and view tables are the project's skeleton: a malformed entry raises.
    """
    files, views, metadata = (via3_table(data, key, path) for key in ("file", "view", "metadata"))
    attributes = via3_table(data, "attribute", path) if "attribute" in data else {}
    images: dict[str, ViaImage] = {}
    view_file: dict[str, str] = {}
    for vid, view in views.items():
        fids = view.get("fid_list") if isinstance(view, dict) else None
        if not isinstance(fids, list) or not fids:
            raise AnnotationError(f"{path}: view {vid!r}: 'fid_list' must be a non-empty list, got {fids!r}")
        view_file[vid] = str(fids[0])
    for fid, entry in files.items():
        if not isinstance(entry, dict) or not isinstance(entry.get("fname"), str) or not entry["fname"].strip():
            raise AnnotationError(f"{path}: file {fid!r}: expected an object with a non-empty 'fname'")
        if entry.get("type", VIA3_IMAGE) == VIA3_IMAGE:
            images[fid] = ViaImage(entry["fname"], [])
    for mid, meta in metadata.items():
        where = f"{path}: metadata {mid!r}"
        with annotations.collecting():
            if not isinstance(meta, dict):
                raise AnnotationError(f"{where}: expected an object with 'vid', 'z', 'xy' and 'av'")
            z, xy, av = meta.get("z") or [], meta.get("xy") or [], meta.get("av") or {}
            if not isinstance(z, list) or not isinstance(xy, list) or not isinstance(av, dict):
                raise AnnotationError(f"{where}: 'z' and 'xy' must be lists and 'av' an object")
            if not xy:  # file-level or temporal-segment metadata: no region in an image
                if z:
                    annotations.shapes["temporal segment"] += 1
                    annotations.skipped["temporal metadata (no spatial region)"] += 1
                continue
            fid = view_file.get(str(meta.get("vid")))
            if fid is None or fid not in files:
                raise AnnotationError(f"{where}: its view {meta.get('vid')!r} is not in 'view' or names no known file")
            shape = via3_shape(xy, where)
            if fid not in images or z:  # a region on a video frame or audio: not a photo to train on
                annotations.shapes[shape["name"]] += 1
                annotations.skipped["region in a video or audio file"] += 1
                continue
            image = images[fid]
            region_where = f"{path}: image {image.file_name!r}, metadata {mid!r}"
            image.regions.append(ViaRegion(shape, via3_attributes(av, attributes), region_where))
    order = [str(v) for v in data["project"].get("vid_list", [])] if isinstance(data["project"], dict) else []
    ordered = [view_file[v] for v in order if v in view_file] + list(images)
    return [images[fid] for fid in dict.fromkeys(ordered) if fid in images]


def via3_table(data: dict, key: str, path: Path) -> dict:
    table = data[key]
    if not isinstance(table, dict):
        raise AnnotationError(f"{path}: '{key}' must be an object keyed by id, got {type(table).__name__}")
    return {str(k): v for k, v in table.items()}


def via3_shape(xy: list, where: str) -> dict:
    """``[shape_id, coordinates...]`` -> VIA 2 shape_attributes."""
    shape_id, coords = xy[0], xy[1:]
    name = VIA3_SHAPES.get(shape_id) if isinstance(shape_id, int) and not isinstance(shape_id, bool) else None
    if name is None:
        raise AnnotationError(f"{where}: unknown shape id {shape_id!r} in 'xy' (VIA 3 knows {sorted(VIA3_SHAPES)})")
    if name in VIA3_PARAMETERS:
        keys = VIA3_PARAMETERS[name]
        if len(coords) != len(keys):
            raise AnnotationError(f"{where}: a {name} needs {len(keys)} numbers after the shape id, got {coords}")
        return {"name": name, **dict(zip(keys, coords, strict=True))}
    if len(coords) % 2:
        raise AnnotationError(f"{where}: a {name} needs x, y pairs after the shape id, got {len(coords)} numbers")
    return {"name": name, "all_points_x": coords[0::2], "all_points_y": coords[1::2]}


def via3_attributes(av: dict, attributes: dict) -> dict:
    """``{attribute_id: value}`` -> ``{attribute name: value}``, option ids replaced by their labels.

    Radio and select values are one option id; checkbox values list the ticked ids,
    comma-separated. Both become VIA 2's ``{label: true}`` checkbox form or a plain label.
    """
    named = {}
    for aid, value in av.items():
        attribute = attributes.get(str(aid))
        if not isinstance(attribute, dict):
            named[str(aid)] = value
            continue
        name = str(attribute.get("aname", aid))
        options = attribute.get("options")
        if attribute.get("type") in VIA3_OPTION_TYPES and isinstance(options, dict) and isinstance(value, str):
            labels = [str(options.get(i, i)) for i in value.split(",") if i]
            named[name] = dict.fromkeys(labels, True) if attribute["type"] == VIA3_CHECKBOX else ",".join(labels)
        else:
            named[name] = value
    return named


# -- shapes -----------------------------------------------------------------------------------


def shape_outline(shape: dict, polyline_as_outline: bool) -> np.ndarray:
    """The (N, 2) outline a VIA 2 shape_attributes dict draws; SkipRegion for shapes without area."""
    name = shape.get("name")
    if name is None:
        raise BadRegion("shape_attributes has no 'name'")
    if name == "polygon":
        return shape_points(shape)
    if name == "polyline":
        points = shape_points(shape)
        if polyline_as_outline or (len(points) > 2 and np.array_equal(points[0], points[-1])):
            return points
        raise SkipRegion("polyline is not closed (data.polyline_as_outline=true uses it as an outline)")
    if name == "rect":
        return rect_polygon(*shape_numbers(shape, "x", "y", "width", "height"))
    if name == "circle":
        cx, cy, r = shape_numbers(shape, "cx", "cy", "r")
        return ellipse_polygon(cx, cy, r, r)
    if name == "ellipse":
        cx, cy, rx, ry = shape_numbers(shape, "cx", "cy", "rx", "ry")
        theta = shape_numbers(shape, "theta")[0] if "theta" in shape else 0.0  # radians: VIA 2's rotated ellipses
        return ellipse_polygon(cx, cy, rx, ry, theta)
    if name == "extreme_rect":  # VIA 3: four clicks on the object's left, top, right, bottom edges
        points = shape_points(shape)
        (x0, y0), (x1, y1) = points.min(axis=0), points.max(axis=0)
        return rect_polygon(x0, y0, x1 - x0, y1 - y0)
    if name == "extreme_circle":  # VIA 3: three clicks on the circumference
        return ellipse_polygon(*circle_through(shape_points(shape)))
    if name in ("point", "line"):
        raise SkipRegion(f"{name} has no area")
    raise SkipRegion(f"unknown shape {name!r}")


def shape_numbers(shape: dict, *keys: str) -> list[float]:
    values = []
    for key in keys:
        if key not in shape:
            raise BadRegion(f"a {shape['name']} needs {', '.join(keys)}; {key!r} is missing")
        values.append(coordinate(shape[key], f"{shape['name']} {key!r}"))
    return values


def shape_points(shape: dict) -> np.ndarray:
    xs, ys = shape.get("all_points_x"), shape.get("all_points_y")
    if not isinstance(xs, list) or not isinstance(ys, list):
        raise BadRegion(f"a {shape['name']} needs lists 'all_points_x' and 'all_points_y', got {xs!r} and {ys!r}")
    if len(xs) != len(ys):
        raise BadRegion(f"{shape['name']} has {len(xs)} x but {len(ys)} y coordinates")
    if not xs:
        raise SkipRegion("fewer than 3 distinct points")
    what = f"{shape['name']} coordinate"
    return np.array([[coordinate(x, what), coordinate(y, what)] for x, y in zip(xs, ys, strict=True)], dtype=np.float32)


def circle_through(points: np.ndarray) -> tuple[float, float, float, float]:
    """(cx, cy, r, r) of the circle through three points."""
    if len(points) != 3:
        raise BadRegion(f"an extreme_circle needs 3 points, got {len(points)}")
    (ax, ay), (bx, by), (cx, cy) = points.astype(np.float64)
    d = 2 * (ax * (by - cy) + bx * (cy - ay) + cx * (ay - by))
    if abs(d) < 1e-9:
        raise SkipRegion("zero area")
    ux = ((ax**2 + ay**2) * (by - cy) + (bx**2 + by**2) * (cy - ay) + (cx**2 + cy**2) * (ay - by)) / d
    uy = ((ax**2 + ay**2) * (cx - bx) + (bx**2 + by**2) * (ax - cx) + (cx**2 + cy**2) * (bx - ax)) / d
    r = math.hypot(ax - ux, ay - uy)
    return ux, uy, r, r


# -- classes ----------------------------------------------------------------------------------


@dataclass
class RegionClasses:
    """Reads a region's class id from its region_attributes."""

    class_map: ClassMap
    attribute: str | None  # the region_attributes key holding the class; None: every region unnamed
    on_unknown_class: str

    def label(self, attributes: dict) -> tuple[int, str | None]:
        return class_label(self.class_map, self.name(attributes), self.on_unknown_class)

    def name(self, attributes: dict) -> str:
        value = attributes.get(self.attribute) if self.attribute is not None else None
        if value is None:
            return ""
        if isinstance(value, str):
            return value.strip()
        if isinstance(value, dict):  # a checkbox attribute: {"book": true, "magazine": false}
            ticked = [str(k).strip() for k, v in value.items() if v]
            if len({self.class_map.lookup(t) or t for t in ticked}) > 1:
                if self.on_unknown_class == "skip":
                    raise SkipRegion("several classes ticked")
                raise BadRegion(f"several classes ticked in {self.attribute!r}: {ticked}")
            return ticked[0] if ticked else ""
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return self.numeric_name(value)
        raise BadRegion(f"region attribute {self.attribute!r} holds {value!r}; expected a class name")

    def numeric_name(self, value: float) -> str:
        """A number names the class spelled so when there is one, else it is a 1-based class id."""
        integral = math.isfinite(value) and float(value).is_integer()
        name = str(int(value)) if integral else str(value)
        if self.class_map.lookup(name) is None and integral and 1 <= value <= len(self.class_map.classes):
            return self.class_map.classes[int(value) - 1]
        return name


def detect_class_attribute(images: list[ViaImage], class_map: ClassMap, path: Path) -> str | None:
    """The region attribute that holds class names: the one key with text (or ticked checkboxes).

    Numbers (track ids, counts) are not taken for names. With several text keys, the one whose
    every value is a known class wins; otherwise the user must say (data.class_attribute).
    """
    values: dict[str, list[str]] = {}
    for image in images:
        for region in image.regions:
            for key, value in region.attributes.items():
                if isinstance(value, str) and value.strip():
                    values.setdefault(str(key), []).append(value)
                elif isinstance(value, dict) and any(value.values()):
                    values.setdefault(str(key), []).extend(str(k) for k, v in value.items() if v)
    if len(values) > 1:
        known = [k for k, names in values.items() if all(class_map.lookup(n) is not None for n in names)]
        if len(known) != 1:
            raise AnnotationError(
                f"{path}: region attributes {sorted(values)} all hold names; set data.class_attribute to the "
                "one that holds the class"
            )
        values = {known[0]: values[known[0]]}
    attribute = next(iter(values), None)
    if attribute is not None:
        log.info("%s: class names read from region attribute %r", path, attribute)
    return attribute


# -- writing ----------------------------------------------------------------------------------


def write_via(
    annotations: AnnotationSet, path: Path, image_root: Path | None = None, project: bool = False
) -> None:
    """A VIA 2.x export (or with ``project`` a VIA 2 project): polygon regions with the class in
    region_attributes ``name`` and, for predictions, the score in ``score``.

    File names are written relative to ``image_root`` (default: ``path``'s folder), so the file
    reads back with it. VIA has one outline per region: an instance in several parts (COCO allows
    it) becomes several regions, which is logged.
    """
    image_root = image_root if image_root is not None else path.parent
    entries: dict[str, dict] = {}
    split = 0
    for record in annotations.records:
        file_name = file_name_from(record.path, image_root)
        size = record.path.stat().st_size if record.path.is_file() else -1
        entry = entries.setdefault(f"{file_name}{size}", {  # VIA's key: file name + byte size
            "filename": file_name, "size": size, "regions": [], "file_attributes": {},
        })
        for inst in record.instances:
            split += len(inst.polygons) > 1
            attributes = {"name": annotations.class_names[inst.label - 1]}
            if inst.score is not None:
                attributes["score"] = f"{inst.score:.3f}"
            entry["regions"].extend(
                {
                    "shape_attributes": {
                        "name": "polygon",
                        "all_points_x": [json_number(v) for v in polygon[:, 0]],
                        "all_points_y": [json_number(v) for v in polygon[:, 1]],
                    },
                    "region_attributes": attributes,
                }
                for polygon in inst.polygons
            )
    if split:
        log.warning("%s: %d instance(s) in several parts written as one region per part", path, split)
    write_json(via_project(entries, image_root, annotations.class_names) if project else entries, path)


def via_project(images: dict[str, dict], image_root: Path, class_names: tuple[str, ...]) -> dict:
    """A VIA 2 project file (Project > Load in VIA 2.x): the images, a class dropdown, settings.

    ``default_filepath`` points VIA at ``image_root``, so the photos open with their regions.
    """
    return {
        "_via_settings": {
            "ui": {
                "annotation_editor_height": 25, "annotation_editor_fontsize": 0.8, "leftsidebar_width": 18,
                "image_grid": {"img_height": 80, "rshape_fill": "none", "rshape_fill_opacity": 0.3,
                               "rshape_stroke": "yellow", "rshape_stroke_width": 2, "show_region_shape": True,
                               "show_image_policy": "all"},
                "image": {"region_label": "name", "region_color": "__via_default_region_color__",
                          "region_label_font": "10px Sans", "on_image_annotation_editor_placement": "NEAR_REGION"},
            },
            "core": {"buffer_size": 18, "filepath": {}, "default_filepath": image_root.resolve().as_posix() + "/"},
            "project": {"name": "booksegm_predictions"},
        },
        "_via_img_metadata": images,
        "_via_attributes": {
            "region": {
                "name": {"type": "dropdown", "description": "class", "options": dict.fromkeys(class_names, ""),
                         "default_options": {class_names[0]: True}},
                "score": {"type": "text", "description": "booksegm prediction score", "default_value": ""},
            },
            "file": {},
        },
        "_via_data_format_version": VIA_VERSION,
        "_via_image_id_list": list(images),
    }
