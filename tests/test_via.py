"""The VIA reader: every flavour and shape the tool writes, classes, file names, and bad input."""

from __future__ import annotations

import json
import logging
import math
import unicodedata
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from pycocotools import mask as mask_utils

from booksegm.data.formats.options import ReaderOptions
from booksegm.data.formats.via import read_via
from booksegm.data.records import AnnotationError, ClassMap, ImageRecord, Instance, cap_instances

WIDTH, HEIGHT = 200, 150


def mask_area(polygons, height=HEIGHT, width=WIDTH) -> int:
    """Pixels covered when the polygons are rasterised the COCO way."""
    rles = mask_utils.frPyObjects([p.astype(np.float64).ravel().tolist() for p in polygons], height, width)
    return int(mask_utils.decode(mask_utils.merge(rles)).sum())


def save_image(path: Path, width=WIDTH, height=HEIGHT) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((height, width, 3), 128, np.uint8)).save(path)


def region(shape: dict, **attributes) -> dict:
    return {"shape_attributes": shape, "region_attributes": attributes}


def rect(x, y, w, h) -> dict:
    return {"name": "rect", "x": x, "y": y, "width": w, "height": h}


def polygon(xs, ys, name="polygon") -> dict:
    return {"name": name, "all_points_x": xs, "all_points_y": ys}


def via2_export(tmp_path: Path, images: dict[str, list[dict]], with_files=True) -> Path:
    for name in images:
        if with_files:
            save_image(tmp_path / name)
    data = {f"{name}-1": {"filename": name, "size": -1, "regions": regions, "file_attributes": {}}
            for name, regions in images.items()}
    path = tmp_path / "via.json"
    path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    return path


def read_one(tmp_path: Path, *regions: dict, **options):
    """Read one 200 x 150 image holding ``regions``; returns (AnnotationSet, its instances)."""
    annotations = read_via(via2_export(tmp_path, {"a.png": list(regions)}), ReaderOptions(**options))
    return annotations, annotations.records[0].instances


# -- flavours -----------------------------------------------------------------------------------


def test_via1_export_regions_dict_in_numeric_order(tmp_path):
    save_image(tmp_path / "a.png")
    regions = {str(i): region(rect(i, 0, 1, 10 + i)) for i in range(11)}
    sorted_keys = dict(sorted(regions.items()))  # "0", "1", "10", "2", ...: JSON written with sorted keys
    data = {"a.png1234": {"fileref": "", "size": 1234, "filename": "a.png", "base64_img_data": "",
                          "file_attributes": {}, "regions": sorted_keys}}
    (tmp_path / "via1.json").write_text(json.dumps(data))
    annotations = read_via(tmp_path / "via1.json")
    assert annotations.flavour == "via1"
    assert [mask_area(i.polygons) for i in annotations.records[0].instances] == [10 + i for i in range(11)]


def test_via2_export_rect_area_is_exact(tmp_path):
    annotations, (inst,) = read_one(tmp_path, region(rect(10, 20, 30, 40), name="book"))
    assert annotations.flavour == "via2" and inst.label == 1 and inst.shape == "rect"
    assert mask_area(inst.polygons) == 30 * 40
    assert annotations.records[0].width == WIDTH and annotations.records[0].num_regions == 1


def test_via2_project_follows_the_image_id_list(tmp_path):
    for name in ("a.png", "b.png"):
        save_image(tmp_path / name)
    metadata = {"a.png-1": {"filename": "a.png", "size": -1, "regions": [region(rect(0, 0, 5, 5))]},
                "b.png-1": {"filename": "b.png", "size": -1, "regions": []}}
    project = {"_via_settings": {}, "_via_img_metadata": metadata, "_via_attributes": {"region": {}, "file": {}},
               "_via_image_id_list": ["b.png-1", "a.png-1"], "_via_data_format_version": "2.0.10"}
    (tmp_path / "project.json").write_text(json.dumps(project))
    annotations = read_via(tmp_path / "project.json")
    assert annotations.flavour == "via2_project"
    assert [r.file_name for r in annotations.records] == ["b.png", "a.png"]
    assert [len(r.instances) for r in annotations.records] == [0, 1]


def via3_project(tmp_path: Path, metadata: dict, attribute: dict | None = None, files=None) -> Path:
    save_image(tmp_path / "a.png")
    files = files or {"1": {"fid": "1", "fname": "a.png", "type": 2, "loc": 1, "src": ""}}
    project = {
        "project": {"pid": "__VIA_PROJECT_ID__", "vid_list": list(files)},
        "config": {},
        "attribute": attribute or {},
        "file": files,
        "view": {fid: {"fid_list": [fid]} for fid in files},
        "metadata": {f"1_{i}": {"vid": "1", "flg": 0, "z": [], "xy": [], "av": {}, **meta}
                     for i, meta in enumerate(metadata)},
    }
    path = tmp_path / "via3.json"
    path.write_text(json.dumps(project))
    return path


def test_via3_shapes_by_shape_id(tmp_path):
    path = via3_project(tmp_path, [
        {"xy": [2, 10, 10, 30, 20]},  # rect
        {"xy": [3, 100, 75, 20]},  # circle
        {"xy": [4, 100, 75, 40, 15]},  # ellipse
        {"xy": [7, 0, 0, 40, 0, 0, 30]},  # polygon: right triangle
        {"xy": [8, 50, 10, 60, 5, 70, 10, 60, 25]},  # extreme rectangle: left, top, right, bottom clicks
        {"xy": [9, 80, 50, 100, 30, 120, 50]},  # extreme circle: three points on the circumference
        {"xy": [1, 5, 5]},  # point
        {"xy": [5, 0, 0, 10, 10]},  # line
        {"xy": [6, 0, 0, 10, 10, 20, 0]},  # open polyline
        {"z": [1.5, 3.0]},  # a temporal segment: no spatial region
    ])
    annotations = read_via(path)
    areas = [mask_area(i.polygons) for i in annotations.records[0].instances]
    assert annotations.flavour == "via3" and annotations.shapes["temporal segment"] == 1
    assert [i.shape for i in annotations.records[0].instances] == [
        "rect", "circle", "ellipse", "polygon", "extreme_rect", "extreme_circle"]
    assert areas[0] == 600 and areas[4] == 20 * 20
    assert areas[1] == pytest.approx(math.pi * 20**2, rel=0.03)
    assert areas[2] == pytest.approx(math.pi * 40 * 15, rel=0.03)
    assert areas[3] == pytest.approx(600, rel=0.06)
    assert areas[5] == pytest.approx(math.pi * 20**2, rel=0.03)
    assert annotations.skipped == {"point has no area": 1, "line has no area": 1,
                                   "polyline is not closed (data.polyline_as_outline=true uses it as an outline)": 1,
                                   "temporal metadata (no spatial region)": 1}


def test_via3_option_attributes_are_read_as_their_labels(tmp_path):
    attribute = {
        "1": {"aname": "kind", "anchor_id": "FILE1_Z0_XY1", "type": 4, "options": {"0": "book", "1": "magazine"}},
        "2": {"aname": "note", "anchor_id": "FILE1_Z0_XY1", "type": 1, "options": {}},
    }
    path = via3_project(tmp_path, [{"xy": [2, 0, 0, 10, 10], "av": {"1": "0", "2": "a nice one"}},
                                   {"xy": [2, 0, 0, 10, 10], "av": {"1": "1"}}], attribute)
    annotations = read_via(path, ReaderOptions(class_map=ClassMap(["book", "magazine"])))
    assert [i.label for i in annotations.records[0].instances] == [1, 2]


def test_via3_checkbox_attributes_list_ticked_option_ids(tmp_path):
    attribute = {"1": {"aname": "type", "anchor_id": "FILE1_Z0_XY1", "type": 2, "options": {"a": "book", "b": "lamp"}}}
    path = via3_project(tmp_path, [{"xy": [2, 0, 0, 10, 10], "av": {"1": "a"}},
                                   {"xy": [2, 0, 0, 10, 10], "av": {"1": "a,b"}}], attribute)
    annotations = read_via(path, ReaderOptions(on_unknown_class="skip"))
    assert [i.label for i in annotations.records[0].instances] == [1]
    assert annotations.skipped == {"several classes ticked": 1}


def test_via3_regions_in_video_files_are_skipped_with_a_count(tmp_path):
    files = {"1": {"fid": "1", "fname": "a.png", "type": 2, "loc": 1, "src": ""},
             "2": {"fid": "2", "fname": "clip.mp4", "type": 4, "loc": 1, "src": ""}}
    path = via3_project(tmp_path, [{"xy": [2, 0, 0, 10, 10]}], files=files)
    data = json.loads(path.read_text())
    data["metadata"]["2_x"] = {"vid": "2", "flg": 0, "z": [0.5], "xy": [2, 0, 0, 5, 5], "av": {}}
    path.write_text(json.dumps(data))
    annotations = read_via(path)
    assert [r.file_name for r in annotations.records] == ["a.png"]
    assert annotations.skipped == {"region in a video or audio file": 1}


# -- shapes -------------------------------------------------------------------------------------


@pytest.mark.parametrize("r", [5, 20, 70])
def test_circle_area_is_pi_r_squared(tmp_path, r):
    _, (inst,) = read_one(tmp_path, region({"name": "circle", "cx": 100, "cy": 75, "r": r}))
    assert mask_area(inst.polygons) == pytest.approx(math.pi * r * r, rel=0.01, abs=2 * math.pi * r * 0.5)
    from shapely.geometry import Polygon  # the outline itself, before rasterising: within 1 %

    assert Polygon(inst.polygons[0]).area == pytest.approx(math.pi * r * r, rel=0.01)


def test_ellipse_area_and_theta_rotation(tmp_path):
    flat = {"name": "ellipse", "cx": 100, "cy": 75, "rx": 50, "ry": 20}
    _, (plain, turned) = read_one(tmp_path, region(flat), region({**flat, "theta": math.pi / 2}))
    for inst in (plain, turned):
        assert mask_area(inst.polygons) == pytest.approx(math.pi * 50 * 20, rel=0.02)
    width, height = np.ptp(turned.polygons[0], axis=0)
    assert width == pytest.approx(40, abs=0.5) and height == pytest.approx(100, abs=0.5)


def test_polygon_keeps_float_coordinates_and_drops_a_closing_point(tmp_path):
    _, (inst,) = read_one(tmp_path, region(polygon([10.25, 60.5, 60.5, 10.25, 10.25], [10.75, 10.75, 50, 50, 10.75])))
    assert inst.polygons[0].dtype == np.float32 and inst.polygons[0].shape == (4, 2)
    assert inst.polygons[0][0].tolist() == [10.25, 10.75]


def test_closed_polylines_are_outlines_and_open_ones_are_skipped_unless_configured(tmp_path):
    closed = region(polygon([0, 40, 40, 0], [0, 0, 30, 0], name="polyline"))
    open_line = region(polygon([0, 40, 40], [0, 0, 30], name="polyline"))
    annotations, instances = read_one(tmp_path, closed, open_line)
    assert len(instances) == 1 and mask_area(instances[0].polygons) == pytest.approx(600, rel=0.06)
    assert sum(annotations.skipped.values()) == 1
    _, instances = read_one(tmp_path, closed, open_line, polyline_as_outline=True)
    assert len(instances) == 2


@pytest.mark.parametrize("shape, reason", [
    ({"name": "point", "cx": 5, "cy": 5}, "point has no area"),
    (polygon([1, 5], [1, 5]), "fewer than 3 distinct points"),
    (polygon([1, 1, 1, 1], [2, 2, 2, 2]), "fewer than 3 distinct points"),
    (polygon([], []), "fewer than 3 distinct points"),
    (polygon([0, 10, 20], [0, 10, 20]), "zero area"),
    ({"name": "ellipse", "cx": 50, "cy": 50, "rx": 0, "ry": 20}, "zero area"),
    (rect(300, 10, 20, 20), "outside the image"),
    ({"name": "star", "points": 5}, "unknown shape 'star'"),
])
def test_shapes_without_area_are_skipped_with_their_reason(tmp_path, shape, reason):
    annotations, instances = read_one(tmp_path, region(shape))
    assert instances == [] and annotations.skipped == {reason: 1}
    assert annotations.records[0].num_regions == 1


def test_self_intersecting_polygon_is_repaired_into_its_parts(tmp_path):
    bowtie = polygon([10, 50, 50, 10], [10, 50, 10, 50])  # two triangles of 400 px each
    annotations, (inst,) = read_one(tmp_path, region(bowtie))
    assert len(inst.polygons) == 2 and annotations.repaired == {"self-intersecting, repaired": 1}
    assert mask_area(inst.polygons) == pytest.approx(800, rel=0.1)


def test_coordinates_outside_the_image_are_clipped(tmp_path):
    annotations, (inst,) = read_one(tmp_path, region(rect(-20, 100, 60, 80)))
    assert mask_area(inst.polygons) == 40 * 50
    assert inst.polygons[0].min() >= 0 and inst.polygons[0][:, 1].max() <= HEIGHT
    assert annotations.repaired == {"clipped to the image": 1}


def test_without_the_image_nothing_is_clipped(tmp_path):
    annotations = read_via(via2_export(tmp_path, {"gone.png": [region(rect(-20, 100, 60, 80))]}, with_files=False))
    (inst,) = annotations.records[0].instances
    assert not annotations.records[0].path.exists() and inst.polygons[0].min() == -20


# -- classes ------------------------------------------------------------------------------------


def test_class_attribute_is_auto_detected_and_numbers_are_not_names(tmp_path):
    both = ClassMap(["book", "magazine"])
    _, instances = read_one(tmp_path, region(rect(0, 0, 9, 9), label="magazine", track=3),
                            region(rect(0, 0, 9, 9), label="book", track=4), class_map=both)
    assert [i.label for i in instances] == [2, 1]


def test_with_several_text_attributes_the_one_holding_known_classes_wins(tmp_path):
    _, instances = read_one(tmp_path, region(rect(0, 0, 9, 9), title="Dune", kind="book"))
    assert [i.label for i in instances] == [1]
    with pytest.raises(AnnotationError, match=r"region attributes \['kind', 'title'\] all hold names"):
        read_one(tmp_path, region(rect(0, 0, 9, 9), title="Dune", kind="novel"))


def test_explicit_class_attribute_numbers_and_aliases(tmp_path):
    classes = ClassMap(["book", "magazine"], aliases={"mag": "magazine"})
    _, instances = read_one(tmp_path, region(rect(0, 0, 9, 9), c=2), region(rect(0, 0, 9, 9), c="MAG"),
                            region(rect(0, 0, 9, 9), c=1.0), class_map=classes, class_attribute="c")
    assert [i.label for i in instances] == [2, 2, 1]


def test_checkbox_attributes(tmp_path):
    classes = ClassMap(["book", "magazine"])
    _, instances = read_one(tmp_path, region(rect(0, 0, 9, 9), type={"book": False, "magazine": True}),
                            class_map=classes)
    assert [i.label for i in instances] == [2]
    several = region(rect(0, 0, 9, 9), type={"book": True, "magazine": True})
    with pytest.raises(AnnotationError, match=r"several classes ticked in 'type'"):
        read_one(tmp_path, several, class_map=classes)
    annotations, _ = read_one(tmp_path, several, class_map=classes, on_unknown_class="skip")
    assert annotations.skipped == {"several classes ticked": 1}


def test_empty_attributes_mean_the_single_class_but_not_one_of_several(tmp_path):
    _, (inst,) = read_one(tmp_path, region(rect(0, 0, 9, 9)))
    assert inst.label == 1
    with pytest.raises(AnnotationError, match=r"region 0: no class name, and data.classes \['book', 'shelf'\]"):
        read_one(tmp_path, region(rect(0, 0, 9, 9)), class_map=ClassMap(["book", "shelf"]))


def test_regions_without_a_class_taken_as_the_single_class_are_counted(tmp_path):
    box = rect(0, 0, 9, 9)
    annotations, instances = read_one(
        tmp_path, region(box), region(box, name=""), region(box, name="book"), region(box, name={"book": False}),
        region(rect(300, 0, 9, 9)),  # no class but outside the image: skipped, not taken as a book
    )
    assert len(instances) == 4 and annotations.skipped == {"outside the image": 1}
    assert annotations.assumed == {"no class, taken as book": 3}
    annotations, _ = read_one(tmp_path, region(box), class_map=ClassMap(["spine"]))
    assert annotations.assumed == {"no class, taken as spine": 1}


def test_unknown_class_names_error_or_skip(tmp_path):
    with pytest.raises(AnnotationError, match=r"via\.json: image 'a\.png', region 0: class 'lamp' is not in "
                                              r"data\.classes \['book'\]"):
        read_one(tmp_path, region(rect(0, 0, 9, 9), name="lamp"))
    annotations, instances = read_one(tmp_path, region(rect(0, 0, 9, 9), name="lamp"),
                                      region(rect(0, 0, 9, 9), name="book"), on_unknown_class="skip")
    assert len(instances) == 1 and annotations.skipped == {"class 'lamp' not in data.classes": 1}
    with pytest.raises(AnnotationError, match="data.on_unknown_class='ignore' is unknown"):
        read_one(tmp_path, on_unknown_class="ignore")


# -- files --------------------------------------------------------------------------------------


@pytest.mark.parametrize("written, on_disk", [
    ("книга #1 é.png", "книга #1 é.png"),
    ("with space.png", "with space.png"),
    ("./images/a.png", "images/a.png"),
    ("shelf/2024/a.png", "shelf/2024/a.png"),
    ("Shelf/IMG_1.JPG", "shelf/img_1.jpg"),
    (unicodedata.normalize("NFC", "café.png"), unicodedata.normalize("NFD", "café.png")),
    ("C:\\Users\\me\\photos\\a.png", "a.png"),
])
def test_file_names_resolve_against_the_image_root(tmp_path, written, on_disk):
    save_image(tmp_path / "imgs" / on_disk)
    data = {"k": {"filename": written, "size": "1234", "regions": [region(rect(0, 0, 9, 9))]}}
    (tmp_path / "via.json").write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    record = read_via(tmp_path / "via.json", ReaderOptions(image_root=tmp_path / "imgs")).records[0]
    assert record.file_name == written and record.path.is_file() and record.width == WIDTH


def test_missing_files_keep_their_record(tmp_path):
    annotations = read_via(via2_export(tmp_path, {"missing.png": [region(rect(0, 0, 9, 9))]}, with_files=False))
    assert annotations.records[0].path == tmp_path / "missing.png" and annotations.records[0].width is None


# -- bad input ----------------------------------------------------------------------------------


@pytest.mark.parametrize("content, message", [
    ("{not json", r"bad\.json: invalid JSON at line 1 column 2"),
    ("[1, 2]", r"bad\.json: not a VIA file: the top level is a list"),
    ('{"images": [], "annotations": []}', r"bad\.json: this is a COCO file, not VIA: use data.format=coco"),
    ('{"a": {"size": 3}}', r"bad\.json: not a VIA file: expected images keyed by name"),
    ('{"k": {"filename": "", "regions": []}}', r"image 'k': 'filename' must be a non-empty string"),
    ('{"k": {"filename": "a.png", "regions": 5}}', r"image 'k': 'regions' must be a list or an object, got int"),
    ('{"k": {"filename": "a.png", "regions": [{"region_attributes": {}}]}}',
     r"image 'a\.png', region 0: 'shape_attributes' must be an object, got None"),
    ('{"_via_img_metadata": []}', r"'_via_img_metadata' must be an object, got list"),
    ('{"project": {}, "file": {}, "metadata": {}, "view": {"1": {}}}', r"view '1': 'fid_list' must be a non-empty"),
])
def test_malformed_files_name_the_file_and_the_problem(tmp_path, content, message):
    (tmp_path / "bad.json").write_text(content)
    with pytest.raises(AnnotationError, match=message):
        read_via(tmp_path / "bad.json")


@pytest.mark.parametrize("shape, message", [
    ({"all_points_x": [1]}, r"shape_attributes has no 'name'"),
    (polygon([1, 2, 3], [1, 2]), r"polygon has 3 x but 2 y coordinates"),
    (polygon([1, "abc", 3], [1, 2, 3]), r"polygon coordinate must be a number, got 'abc'"),
    (polygon([1, float("nan"), 3], [1, 2, 3]), r"polygon coordinate must be a finite pixel coordinate, got nan"),
    ({"name": "polygon", "all_points_x": 5}, r"a polygon needs lists 'all_points_x' and 'all_points_y'"),
    ({"name": "rect", "x": 1, "y": 1, "width": 3}, r"a rect needs x, y, width, height; 'height' is missing"),
    ({"name": "circle", "cx": 1, "cy": 1, "r": None}, r"circle 'r' must be a number, got None"),
    # numbers written as text are refused, not read: a tool that quotes them has its columns wrong
    (polygon(["10", "20", "30"], [1, 2, 3]), r"polygon coordinate must be a number, got '10'"),
    ({"name": "rect", "x": "10", "y": 10, "width": 20, "height": 5}, r"rect 'x' must be a number, got '10'"),
    ({"name": "rect", "x": 1, "y": True, "width": 20, "height": 5}, r"rect 'y' must be a number, got True"),
    (polygon([1, 2, 3], [1, None, 3]), r"polygon coordinate must be a number, got None"),
])
def test_malformed_regions_name_the_image_and_region(tmp_path, shape, message):
    with pytest.raises(AnnotationError, match=r"via\.json: image 'a\.png', region 0: " + message):
        read_one(tmp_path, region(shape))


def test_via3_string_coordinates_name_the_metadata(tmp_path):
    path = via3_project(tmp_path, [{"xy": [2, 0, 0, 10, 10]}, {"xy": [7, "0", 0, 40, 0, 0, 30]}])
    with pytest.raises(AnnotationError, match=r"image 'a\.png', metadata '1_1': polygon coordinate must be a number"):
        read_via(path)


def test_every_bad_image_and_region_is_collected_not_only_the_first(tmp_path):
    for name in ("a.png", "c.png"):
        save_image(tmp_path / name)
    data = {
        "a": {"filename": "a.png", "regions": [region({"name": "rect", "x": 1}), region(rect(0, 0, 9, 9))]},
        "b": {"filename": "", "regions": []},
        "c": {"filename": "c.png", "regions": [5, region(polygon(["1", "9", "9"], [1, 1, 9]))]},
    }
    (tmp_path / "via.json").write_text(json.dumps(data))
    annotations = read_via(tmp_path / "via.json", ReaderOptions(collect_errors=True))
    assert [e.split("via.json: ")[1] for e in annotations.errors] == [
        "image 'b': 'filename' must be a non-empty string, got ''",
        "image 'c.png', region 0: expected an object with 'shape_attributes', got int",
        "image 'a.png', region 0: a rect needs x, y, width, height; 'y' is missing",
        "image 'c.png', region 1: polygon coordinate must be a number, got '1'",  # its index in the file
    ]
    assert [r.file_name for r in annotations.records] == ["a.png", "c.png"] and annotations.num_instances == 1
    with pytest.raises(AnnotationError, match=r"image 'b': .* \(and 3 more: .*check .*via\.json"):
        read_via(tmp_path / "via.json")


# -- MAX_GT_INSTANCES ---------------------------------------------------------------------------


def test_cap_instances_keeps_the_first_and_logs(caplog):
    square = np.array([[0, 0], [4, 0], [4, 4]], np.float32)
    record = ImageRecord("a.png", Path("a.png"), [Instance((square,), 1) for _ in range(5)])
    assert cap_instances(record, 5) is record
    with caplog.at_level(logging.WARNING):
        capped = cap_instances(record, 3)
    assert len(capped.instances) == 3 and len(record.instances) == 5
    assert "a.png: 5 instances, keeping the first 3" in caplog.text


# -- property: any VIA-like JSON gives valid instances or an AnnotationError --------------------

def mostly(good, bad, one_in=5):
    """Draws ``bad`` about once in ``one_in`` draws, so that many examples get past the first check.

    (The middle value decides: hypothesis favours the ends of an integer range.)
    """
    return st.integers(0, one_in).flatmap(lambda i: bad if i == one_in // 2 else good)


numbers = mostly(st.integers(-10, 70) | st.floats(-10, 70),
                 st.sampled_from([math.nan, math.inf, 1e300, "x", "12", None, True, [1]]), one_in=20)
coordinates = mostly(st.lists(numbers, min_size=2, max_size=7), st.lists(numbers, max_size=2) | numbers, one_in=20)
shapes = mostly(
    st.one_of(
        st.fixed_dictionaries({"name": st.sampled_from(["polygon", "polyline"]), "all_points_x": coordinates,
                               "all_points_y": coordinates}),
        st.fixed_dictionaries({"name": st.just("rect"), "x": numbers, "y": numbers, "width": numbers,
                               "height": numbers}),
        st.fixed_dictionaries({"name": st.sampled_from(["circle", "point"]), "cx": numbers, "cy": numbers,
                               "r": numbers}),
        st.fixed_dictionaries({"name": st.just("ellipse"), "cx": numbers, "cy": numbers, "rx": numbers,
                               "ry": numbers}, optional={"theta": numbers}),
    ),
    st.dictionaries(st.sampled_from(["name", "x", "all_points_x"]), numbers | coordinates, max_size=3),
    one_in=20,
)
attribute_values = mostly(st.sampled_from(["book", ""]),
                          st.sampled_from(["lamp", 1, 2, -1, 1.5, None, [], {"book": True, "lamp": True}]))
attributes = mostly(st.dictionaries(st.just("name"), attribute_values, max_size=1),
                    st.dictionaries(st.sampled_from(["type", "n"]), attribute_values, max_size=2) | numbers)
region_strategy = mostly(st.fixed_dictionaries({"shape_attributes": shapes, "region_attributes": attributes}),
                         st.sampled_from([None, 3, "r", {"shape_attributes": 1}, {"region_attributes": {}}]), one_in=20)
regions = mostly(st.lists(region_strategy, min_size=1, max_size=4)
                 | st.dictionaries(st.sampled_from(["0", "1", "10"]), region_strategy, min_size=1, max_size=3),
                 numbers, one_in=20)
entries = mostly(st.fixed_dictionaries({"filename": st.sampled_from(["a.png", "x/ü #.jpg"]),
                                        "size": st.sampled_from([-1, "12", 12]), "regions": regions}),
                 st.fixed_dictionaries({"filename": st.sampled_from(["", 7, None])}, optional={"regions": regions}),
                 one_in=20)
via3_metadata = st.fixed_dictionaries({
    "vid": mostly(st.just("1"), st.just("2")),
    "z": mostly(st.just([]), st.just([1])),
    "xy": st.lists(mostly(st.integers(1, 9), numbers), max_size=8),
    "av": st.just({}),
})
via_like = mostly(
    st.dictionaries(st.text(max_size=4), entries, min_size=1, max_size=3),
    st.one_of(
        st.fixed_dictionaries({"_via_img_metadata": st.dictionaries(st.text(max_size=4), entries, max_size=3),
                               "_via_image_id_list": st.lists(st.text(max_size=4), max_size=3)}),
        st.fixed_dictionaries({"project": st.just({}), "file": st.just({"1": {"fname": "a.png", "type": 2}}),
                               "view": st.just({"1": {"fid_list": ["1"]}}),
                               "metadata": st.dictionaries(st.text(max_size=3), via3_metadata, min_size=1,
                                                           max_size=3)}),
        numbers,
    ),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=via_like, policy=st.sampled_from(["error", "skip"]), outline=st.booleans())
def test_any_via_like_json_gives_valid_instances_or_an_annotation_error(tmp_path, data, policy, outline):
    path = tmp_path / "random.json"
    path.write_text(json.dumps(data))
    save_image(tmp_path / "a.png", 64, 48)
    try:
        annotations = read_via(path, ReaderOptions(on_unknown_class=policy, polyline_as_outline=outline))
    except AnnotationError:
        return
    for record in annotations.records:
        assert record.num_regions >= len(record.instances)
        for inst in record.instances:
            assert inst.label == 1 and inst.polygons
            for part in inst.polygons:
                assert part.dtype == np.float32 and part.ndim == 2 and part.shape[1] == 2 and len(part) >= 3
                assert np.isfinite(part).all()
    assert sum(annotations.shapes.values()) >= annotations.num_instances

