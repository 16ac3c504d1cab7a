"""YOLO-seg and COCO readers, the VIA / COCO writers, and conversions that keep every polygon."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from booksegm.cli.data import main
from booksegm.data.formats import load_annotations, save_annotations
from booksegm.data.formats.coco import read_coco, rle_mask, rle_string_counts, write_coco
from booksegm.data.formats.options import ReaderOptions
from booksegm.data.formats.via import read_via, write_via
from booksegm.data.formats.yolo import read_yolo
from booksegm.data.records import AnnotationError, AnnotationSet, ClassMap, ImageRecord, Instance

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
SPINES = ClassMap(["book"], aliases={"book-s-spine": "book"})


def mask_area(polygons, height, width) -> int:
    """Pixels covered when the polygons are rasterised the COCO way."""
    rles = mask_utils.frPyObjects([p.astype(np.float64).ravel().tolist() for p in polygons], height, width)
    return int(mask_utils.decode(mask_utils.merge(rles)).sum())


def save_image(path: Path, width: int, height: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((height, width, 3), 90, np.uint8)).save(path)


def assert_same_polygons(a, b) -> None:
    assert [r.path.resolve() for r in a.records] == [r.path.resolve() for r in b.records]
    for ra, rb in zip(a.records, b.records):
        assert [i.label for i in ra.instances] == [i.label for i in rb.instances]
        for ia, ib in zip(ra.instances, rb.instances):
            assert len(ia.polygons) == len(ib.polygons)
            for pa, pb in zip(ia.polygons, ib.polygons):
                assert np.array_equal(pa, pb)


# -- YOLO-seg -----------------------------------------------------------------------------------


def yolo_split(root: Path, labels: dict[str, str], images=("a.png",), names=None) -> Path:
    split = root / "train"
    for name in images:
        save_image(split / "images" / name, 200, 100)
    (split / "labels").mkdir(parents=True)
    for stem, text in labels.items():
        (split / "labels" / f"{stem}.txt").write_text(text)
    if names is not None:
        (root / "data.yaml").write_text(yaml.safe_dump({"names": names, "nc": len(names)}))
    return split


def test_yolo_polygons_and_boxes_in_pixels(tmp_path):
    split = yolo_split(tmp_path, {"a": "0 0.1 0.1 0.5 0.1 0.5 0.6 0.1 0.1\n\n0 0.5 0.5 0.2 0.4\n"},
                       images=("a.png", "b.png"), names=["book-s-spine"])
    annotations = read_yolo(split, ReaderOptions(class_map=SPINES))
    a, b = annotations.records
    assert annotations.flavour == "yolo" and a.num_regions == 2 and b.num_regions == 0 and b.instances == []
    assert a.instances[0].polygons[0].tolist() == [[20, 10], [100, 10], [100, 60]]
    assert mask_area(a.instances[1].polygons, 100, 200) == 40 * 40 and a.instances[1].shape == "rect"
    assert a.file_name == "a.png" and a.width == 200


def test_yolo_label_without_its_image_is_listed_missing_and_its_regions_skipped(tmp_path):
    split = yolo_split(tmp_path, {"a": "0 0.1 0.1 0.5 0.1 0.5 0.6\n", "gone": "0 0.1 0.1 0.5 0.1 0.5 0.6\n"})
    annotations = read_yolo(split)
    assert [r.path.exists() for r in annotations.records] == [True, False]
    assert annotations.skipped == {"image missing or unreadable: normalised coordinates need its size": 1}


def test_yolo_class_ids_without_data_yaml_are_data_classes_in_order(tmp_path):
    split = yolo_split(tmp_path, {"a": "1 0.1 0.1 0.5 0.1 0.5 0.6\n0 0.1 0.1 0.5 0.1 0.5 0.6\n"})
    (record,) = read_yolo(split, ReaderOptions(class_map=ClassMap(["book", "shelf"]))).records
    assert [i.label for i in record.instances] == [2, 1]
    with pytest.raises(AnnotationError, match=r"a\.txt: line 1: class id 1, but data\.classes \['book'\] has 1"):
        read_yolo(split)
    assert read_yolo(split, ReaderOptions(on_unknown_class="skip")).skipped == {"class id 1 not in data.classes": 1}


def test_yolo_names_as_a_mapping_and_unknown_names(tmp_path):
    split = yolo_split(tmp_path, {"a": "0 0.1 0.1 0.5 0.1 0.5 0.6\n"}, names={0: "book-s-spine"})
    assert len(read_yolo(split, ReaderOptions(class_map=SPINES)).records[0].instances) == 1
    with pytest.raises(AnnotationError, match=r"class 'book-s-spine' is not in data\.classes \['book'\]"):
        read_yolo(split)


@pytest.mark.parametrize("line, message", [
    ("0 0.1 abc 0.5 0.1 0.5 0.6", r"line 1: expected numbers 'class_id x1 y1 x2 y2 \.\.\.'"),
    ("0 0.1 0.1 0.5 0.1 0.5 nan", r"line 1: expected numbers 'class_id x1 y1 x2 y2 \.\.\.'"),
    ("0 0.1 0.1 0.5 0.1 0.5 0.6_0", r"line 1: expected numbers"),  # float() reads these; no YOLO tool writes them
    ("0 0.1 0.1 0.5 0.1 0.5 \u0660.6", r"line 1: expected numbers"),
    ("0 0.1 0.1 0.5 0.1 0.5", r"line 1: expected x y pairs of finite numbers after the class id, got 5 numbers"),
    ("0.5 0.1 0.1 0.5 0.1 0.5 0.6", r"line 1: class id must be a whole number >= 0, got '0\.5'"),
    ("3 0.1 0.1 0.5 0.1 0.5 0.6", r"line 1: class id 3, but data\.yaml names 1 classes"),
])
def test_yolo_bad_lines_name_file_and_line(tmp_path, line, message):
    split = yolo_split(tmp_path, {"a": line}, names=["book"])
    with pytest.raises(AnnotationError, match=r"labels/a\.txt: " + message):
        read_yolo(split)


def test_yolo_every_bad_line_is_collected(tmp_path):
    split = yolo_split(tmp_path, {"a": "0 0.1 0.1 0.5 0.1 0.5 0.6\n0 x\n", "b": "\n\n0 0.1 0.1 0.5\n"},
                       images=("a.png", "b.png"))
    annotations = read_yolo(split, ReaderOptions(collect_errors=True))
    assert [e.split("labels/")[1] for e in annotations.errors] == [
        "a.txt: line 2: expected numbers 'class_id x1 y1 x2 y2 ...', got '0 x'",
        "b.txt: line 3: expected x y pairs of finite numbers after the class id, got 3 numbers",
    ]
    assert annotations.num_instances == 1


def test_a_yolo_dataset_root_names_its_splits(tmp_path):
    yolo_split(tmp_path, {})
    with pytest.raises(AnnotationError, match=r"no labels/ folder; it holds the splits \['train'\]: pass one of them"):
        load_annotations(tmp_path)


# -- COCO ---------------------------------------------------------------------------------------


def coco_file(tmp_path: Path, annotations: list[dict], categories=({"id": 7, "name": "book"},), image=None) -> Path:
    save_image(tmp_path / "a.png", 80, 60)
    image = image or {"id": 1, "file_name": "a.png", "width": 80, "height": 60}
    anns = [{"id": i, "image_id": 1, "category_id": 7, "iscrowd": 0, **a} for i, a in enumerate(annotations, 1)]
    path = tmp_path / "instances.json"
    path.write_text(json.dumps({"images": [image], "annotations": anns, "categories": list(categories)}))
    return path


def disk_and_square() -> np.ndarray:
    yy, xx = np.mgrid[:60, :80]
    mask = ((xx - 25) ** 2 + (yy - 30) ** 2 <= 15**2) | ((xx >= 50) & (xx < 70) & (yy >= 10) & (yy < 25))
    return mask.astype(np.uint8)


def test_coco_polygons_several_parts(tmp_path):
    square = [10, 10, 30, 10, 30, 30, 10, 30]
    path = coco_file(tmp_path, [{"segmentation": [square, [40, 40, 60, 40, 60, 50]]}])
    annotations = load_annotations(path)
    (inst,) = annotations.records[0].instances
    assert annotations.flavour == "coco" and len(inst.polygons) == 2 and inst.label == 1
    assert mask_area(inst.polygons[:1], 60, 80) == 400


@pytest.mark.parametrize("compressed", [True, False])
def test_coco_rle_masks_become_outlines_on_pixel_edges(tmp_path, compressed):
    mask = disk_and_square()
    rle = mask_utils.encode(np.asfortranarray(mask))
    if compressed:
        rle = {"size": rle["size"], "counts": rle["counts"].decode("ascii")}
    else:  # uncompressed counts, as COCO writes for crowd regions
        flat = mask.ravel(order="F")
        changes = np.flatnonzero(np.diff(flat)) + 1
        runs = np.diff(np.concatenate([[0], changes, [flat.size]])).tolist()
        rle = {"size": [60, 80], "counts": ([0] if flat[0] else []) + runs}
    (inst,) = load_annotations(coco_file(tmp_path, [{"segmentation": rle}])).records[0].instances
    assert inst.shape == "rle" and len(inst.polygons) == 2
    square = min(inst.polygons, key=lambda p: p[:, 0].min() < 45)
    assert mask_area([square], 60, 80) == 20 * 15  # axis-aligned edges come back exactly
    assert mask_area(inst.polygons, 60, 80) == pytest.approx(mask.sum(), rel=0.03)


def test_rle_strings_decode_like_pycocotools():
    rng = np.random.default_rng(0)
    for _ in range(20):
        mask = (rng.random((int(rng.integers(1, 40)), int(rng.integers(1, 40)))) > rng.random()).astype(np.uint8)
        rle = mask_utils.encode(np.asfortranarray(mask))
        decoded = rle_mask({"size": rle["size"], "counts": rle["counts"].decode("ascii")})
        assert np.array_equal(decoded, mask_utils.decode(rle))


def test_coco_crowds_are_skipped_and_box_only_annotations_are_rects(tmp_path):
    path = coco_file(tmp_path, [{"segmentation": [], "bbox": [5, 5, 20, 10]},
                                {"segmentation": [[0, 0, 9, 0, 9, 9]], "iscrowd": 1}])
    annotations = read_coco(path)
    (inst,) = annotations.records[0].instances
    assert inst.shape == "rect" and mask_area(inst.polygons, 60, 80) == 200
    assert annotations.skipped == {"crowd region (iscrowd=1)": 1} and annotations.records[0].num_regions == 2


def test_coco_stated_size_clips_even_without_the_image(tmp_path):
    image = {"id": 1, "file_name": "elsewhere.png", "width": 80, "height": 60}
    annotations = read_coco(coco_file(tmp_path, [{"segmentation": [[70, 50, 120, 50, 120, 90, 70, 90]]}], image=image))
    assert not annotations.records[0].path.exists()
    assert mask_area(annotations.records[0].instances[0].polygons, 60, 80) == 10 * 10


@pytest.mark.parametrize("annotation, message", [
    ({"category_id": 3, "segmentation": [[0, 0, 9, 0, 9, 9]]}, r"category_id 3 is not in 'categories'"),
    ({"segmentation": [[0, 0, 9, 0, 9]]}, r"a polygon needs x, y pairs, got 5 numbers"),
    ({"segmentation": [[0, 0, "a", 0, 9, 9]]}, r"polygon coordinate must be a number, got 'a'"),
    ({"segmentation": [[0, 0, "9", 0, 9, 9]]}, r"polygon coordinate must be a number, got '9'"),
    ({"segmentation": [[0, 0, 9, 0, 9, 1e8]]}, r"polygon coordinate must be a finite pixel coordinate, got 100000000\.0"),
    ({"segmentation": None, "bbox": [1, 2, True, 4]}, r"bbox coordinate must be a number, got True"),
    ({"segmentation": None, "bbox": [1, None, 3, 4]}, r"bbox coordinate must be a number, got None"),
    ({"segmentation": None, "bbox": [1, 2]}, r"no segmentation, and 'bbox' is not \[x, y, width, height\]"),
    ({"segmentation": {"size": [60, 80], "counts": [10, 20]}}, r"RLE counts cover 30 pixels, but 'size' \[60, 80\]"),
    ({"segmentation": {"size": [60, 80], "counts": "Xn"}}, r"the RLE 'counts' string ends in the middle of a number"),
    ({"segmentation": {"size": [60], "counts": "0"}}, r"RLE 'size' must be \[height, width\]"),
])
def test_coco_bad_annotations_name_the_annotation(tmp_path, annotation, message):
    with pytest.raises(AnnotationError, match=r"instances\.json: annotation 1 of 'a\.png': " + message):
        read_coco(coco_file(tmp_path, [annotation]))


def test_coco_every_bad_annotation_is_collected(tmp_path):
    path = coco_file(tmp_path, [{"segmentation": [[0, 0, "9", 0, 9, 9]]}, {"segmentation": [[0, 0, 9, 0, 9, 9]]},
                                {"segmentation": [[0, 0, 9, 0, 9]]}])
    data = json.loads(path.read_text())
    data["annotations"].append({"id": 4, "image_id": 9, "category_id": 7, "segmentation": []})
    path.write_text(json.dumps(data))
    annotations = read_coco(path, ReaderOptions(collect_errors=True))
    assert [e.split("instances.json: ")[1] for e in annotations.errors] == [
        "annotation 4: image_id 9 is not in 'images'",
        "annotation 1 of 'a.png': polygon coordinate must be a number, got '9'",
        "annotation 3 of 'a.png': a polygon needs x, y pairs, got 5 numbers",
    ]
    assert annotations.num_instances == 1
    with pytest.raises(AnnotationError, match=r"annotation 4: .* \(and 2 more: "):
        load_annotations(path)


def test_coco_category_without_a_name_is_counted_as_taken_as_the_single_class(tmp_path):
    path = coco_file(tmp_path, [{"segmentation": [[0, 0, 9, 0, 9, 9]]}], categories=[{"id": 7, "name": ""}])
    assert read_coco(path).assumed == {"no class, taken as book": 1}


def test_coco_structural_errors(tmp_path):
    path = coco_file(tmp_path, [])
    data = json.loads(path.read_text())
    data["annotations"] = [{"id": 5, "image_id": 9, "category_id": 7, "segmentation": []}]
    path.write_text(json.dumps(data))
    with pytest.raises(AnnotationError, match=r"annotation 5: image_id 9 is not in 'images'"):
        read_coco(path)
    path.write_text('{"images": 3, "annotations": []}')
    with pytest.raises(AnnotationError, match=r"'images' must be a list of objects"):
        read_coco(path)


def test_coco_unknown_category_names(tmp_path):
    path = coco_file(tmp_path, [{"segmentation": [[0, 0, 9, 0, 9, 9]]}], categories=[{"id": 7, "name": "lamp"}])
    with pytest.raises(AnnotationError, match=r"class 'lamp' is not in data\.classes"):
        read_coco(path)
    assert read_coco(path, ReaderOptions(on_unknown_class="skip")).skipped == {"class 'lamp' not in data.classes": 1}


# -- dispatch -----------------------------------------------------------------------------------


def test_load_annotations_detects_the_format_and_rejects_options_of_another(tmp_path):
    coco = coco_file(tmp_path, [])
    assert load_annotations(coco).flavour == "coco"
    with pytest.raises(AnnotationError, match="class_attribute and polyline_as_outline apply to VIA files, not to"):
        load_annotations(coco, options=ReaderOptions(class_attribute="name"))
    with pytest.raises(AnnotationError, match="annotation format 'xml' is unknown"):
        load_annotations(coco, format="xml")
    (tmp_path / "labels.csv").write_text("")
    with pytest.raises(AnnotationError, match=r"labels\.csv: expected a VIA or COCO \.json file, or a YOLO-seg folder"):
        load_annotations(tmp_path / "labels.csv")


# -- writing and converting ---------------------------------------------------------------------


def test_via_to_coco_to_via_keeps_every_polygon(tmp_path):
    save_image(tmp_path / "photos" / "shelf one.png", 80, 60)
    outline = {"name": "polygon", "all_points_x": [1.5, 40.25, 70, 3.125], "all_points_y": [2, 3.75, 50.5, 55]}
    via = {"k": {"filename": "shelf one.png", "size": -1, "file_attributes": {},
                 "regions": [{"shape_attributes": outline, "region_attributes": {"name": "book"}},
                             {"shape_attributes": {"name": "circle", "cx": 40, "cy": 30, "r": 9.5},
                              "region_attributes": {}}]}}
    (tmp_path / "photos" / "via.json").write_text(json.dumps(via))
    original = load_annotations(tmp_path / "photos" / "via.json")
    save_annotations(original, tmp_path / "out" / "coco.json", "coco")
    as_coco = load_annotations(tmp_path / "out" / "coco.json")
    save_annotations(as_coco, tmp_path / "out" / "again" / "via.json", "via")
    again = load_annotations(tmp_path / "out" / "again" / "via.json")
    assert as_coco.flavour == "coco" and again.flavour == "via2"
    assert_same_polygons(original, as_coco)
    assert_same_polygons(original, again)
    written = json.loads((tmp_path / "out" / "coco.json").read_text())
    assert written["images"][0] == {"id": 1, "file_name": "../photos/shelf one.png", "width": 80, "height": 60}
    assert written["categories"] == [{"id": 1, "name": "book"}]


def test_via_project_with_scores_names_images_under_the_image_root(tmp_path):
    save_image(tmp_path / "photos" / "sub" / "a.png", 80, 60)
    square = np.array([[10, 10], [30.5, 10], [30.5, 30]], dtype=np.float32)
    record = ImageRecord("sub/a.png", tmp_path / "photos" / "sub" / "a.png", [Instance((square,), 1, score=0.87654)])
    predictions = AnnotationSet(tmp_path, "via2_project", [record], ("book",))
    write_via(predictions, tmp_path / "out" / "via.json", image_root=tmp_path / "photos", project=True)
    written = json.loads((tmp_path / "out" / "via.json").read_text())
    (entry,) = written["_via_img_metadata"].values()
    assert entry["filename"] == "sub/a.png"
    assert entry["regions"][0]["region_attributes"] == {"name": "book", "score": "0.877"}
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["via.json"]  # no partial file left
    again = read_via(tmp_path / "out" / "via.json", ReaderOptions(image_root=tmp_path / "photos"))
    assert again.flavour == "via2_project"
    assert_same_polygons(predictions, again)


def test_instances_in_several_parts_become_one_via_region_per_part(tmp_path, caplog):
    path = coco_file(tmp_path, [{"segmentation": [[10, 10, 30, 10, 30, 30], [40, 40, 60, 40, 60, 50]]}])
    save_annotations(read_coco(path), tmp_path / "via.json", "via")
    assert len(load_annotations(tmp_path / "via.json").records[0].instances) == 2
    assert "1 instance(s) in several parts written as one region per part" in caplog.text


def test_convert_command(tmp_path, capsys):
    path = coco_file(tmp_path, [{"segmentation": [[10, 10, 30, 10, 30, 30]]}])
    assert main(["convert", str(path), str(tmp_path / "via.json"), "--to", "via"]) == 0
    assert "via.json: 1 images, 1 instances (via)" in capsys.readouterr().out
    nameless = coco_file(tmp_path, [{"segmentation": [[10, 10, 30, 10, 30, 30]]}], categories=[{"id": 7}])
    assert main(["convert", str(nameless), str(tmp_path / "via.json"), "--to", "via"]) == 0
    assert "  no class, taken as book: 1" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="^2$"):
        main(["convert", str(tmp_path / "none.json"), str(tmp_path / "x.json"), "--to", "coco"])
    assert "none.json: not found" in capsys.readouterr().err


@pytest.mark.skipif(not (SHARED / "book-spines").is_dir(), reason="../shared/data/book-spines is absent")
@pytest.mark.parametrize("split, images, instances", [("train", 96, 1006), ("valid", 23, 45)])
def test_book_spines_to_via_to_coco_and_back_keeps_every_polygon(tmp_path, split, images, instances):
    spines = load_annotations(SHARED / "book-spines" / split, options=ReaderOptions(class_map=SPINES))
    assert (len(spines.records), spines.num_instances) == (images, instances)
    save_annotations(spines, tmp_path / "via.json", "via")
    as_via = load_annotations(tmp_path / "via.json")
    save_annotations(as_via, tmp_path / "coco" / "instances.json", "coco")
    as_coco = load_annotations(tmp_path / "coco" / "instances.json")
    save_annotations(as_coco, tmp_path / "back.json", "via")
    for converted in (as_via, as_coco, load_annotations(tmp_path / "back.json")):
        assert_same_polygons(spines, converted)


def test_coco_writes_a_prediction_s_mask_box_and_score(tmp_path):
    """A prediction's exact mask (hole kept), the detector's box and the score are written as given,
    the area counted from the mask, with compressed and uncompressed RLE alike."""
    save_image(tmp_path / "photos" / "a.png", 40, 30)
    mask = np.zeros((30, 40), np.uint8)
    mask[5:25, 5:35] = 1
    mask[10:20, 15:25] = 0  # a hole, which outline polygons would fill
    rle = mask_utils.encode(np.asfortranarray(mask))
    rle["counts"] = rle["counts"].decode("ascii")
    runs = {"size": rle["size"], "counts": rle_string_counts(rle["counts"])}
    box = (4.5, 5.25, 35.0123, 25.0)
    record = ImageRecord("a.png", tmp_path / "photos" / "a.png",
                         [Instance((), 1, score=0.87654321, rle=rle, box=box), Instance((), 1, score=0.5, rle=runs, box=box)])
    path = tmp_path / "out" / "predictions.json"
    write_coco(AnnotationSet(tmp_path, "coco", [record], ("book",)), path, image_root=tmp_path / "photos")
    coco = COCO(str(path))
    assert coco.dataset["images"] == [{"id": 1, "file_name": "a.png", "width": 40, "height": 30}]
    first, second = coco.dataset["annotations"]
    assert first["segmentation"] == rle and second["segmentation"] == runs
    assert first["bbox"] == [4.5, 5.25, 30.51, 19.75] and first["score"] == 0.8765  # box to 0.01 px
    assert first["area"] == second["area"] == 600 - 100
    for ann in (first, second):
        np.testing.assert_array_equal(coco.annToMask(ann), mask)
    coco.loadRes(coco.dataset["annotations"])  # the annotations list is a COCO results file
    assert len(read_coco(path, ReaderOptions(image_root=tmp_path / "photos")).records[0].instances) == 2
