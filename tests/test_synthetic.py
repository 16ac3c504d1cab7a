"""The synthetic book set: deterministic, well-formed VIA 2 export, labels that match the drawing."""

import json

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from booksegm.cli.data import main
from booksegm.data.formats.options import ReaderOptions
from booksegm.data.formats.via import read_via
from booksegm.data.records import ClassMap
from booksegm.data.synthetic import generate_dataset, render_scene
from booksegm.data.synthetic.camera import photograph
from booksegm.data.synthetic.geometry import rectangle, signed_area
from booksegm.data.synthetic.scenes import Item, Scene, draw, leaves_books_whole, new_scene, visible_outline

WIDTH, HEIGHT = 160, 120
SEED = 7
NUM_IMAGES = 6


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    out_dir = tmp_path_factory.mktemp("synth")
    return generate_dataset(out_dir, NUM_IMAGES, seed=SEED, width=WIDTH, height=HEIGHT, progress=False)


def image_bytes(json_path):
    return [p.read_bytes() for p in sorted((json_path.parent / "images").glob("*.jpg"))]


def rasterise(polygon, width=WIDTH, height=HEIGHT):
    rle = mask_utils.frPyObjects([np.asarray(polygon, np.float64).ravel().tolist()], height, width)
    return mask_utils.decode(mask_utils.merge(rle)).astype(bool)


def test_same_seed_same_bytes_other_seed_differs(dataset, tmp_path):
    again = generate_dataset(tmp_path / "again", NUM_IMAGES, seed=SEED, width=WIDTH, height=HEIGHT, progress=False)
    assert again.read_bytes() == dataset.read_bytes()
    assert image_bytes(again) == image_bytes(dataset)
    other = generate_dataset(tmp_path / "other", NUM_IMAGES, seed=SEED + 1, width=WIDTH, height=HEIGHT, progress=False)
    assert other.read_bytes() != dataset.read_bytes()
    assert all(a != b for a, b in zip(image_bytes(other), image_bytes(dataset)))


def test_an_image_does_not_depend_on_how_many_are_made(dataset, tmp_path):
    fewer = generate_dataset(tmp_path / "fewer", 2, seed=SEED, width=WIDTH, height=HEIGHT, progress=False)
    assert image_bytes(fewer) == image_bytes(dataset)[:2]


@pytest.mark.parametrize("kind", ["shelf", "table"])
def test_polygons_lie_inside_the_image_with_area(kind):
    for index in range(4):
        image, polygons = render_scene(np.random.default_rng([1, index]), WIDTH, HEIGHT, kind)
        assert image.shape == (HEIGHT, WIDTH, 3) and image.dtype == np.uint8
        assert polygons, f"a {kind} scene without books"
        for polygon in polygons:
            assert polygon.dtype == np.float32 and polygon.ndim == 2 and polygon.shape[1] == 2
            assert len(polygon) >= 3 and abs(signed_area(polygon)) > 0
            assert polygon[:, 0].min() >= 0 and polygon[:, 0].max() <= WIDTH
            assert polygon[:, 1].min() >= 0 and polygon[:, 1].max() <= HEIGHT


def covered_width(polygons, width: int) -> float:
    """The share of the photo's width under at least one book."""
    covered = np.zeros(width, bool)
    for polygon in polygons:
        covered[int(polygon[:, 0].min()):int(np.ceil(polygon[:, 0].max()))] = True
    return covered.mean()


def test_packed_bookcases_fill_their_rows_with_more_and_thinner_books():
    counts, shapes, cover = {}, {}, {}
    for share in (0.0, 1.0):
        scenes = [render_scene(np.random.default_rng([5, i]), 384, 288, "shelf", packed_share=share)[1]
                  for i in range(12)]
        counts[share] = np.mean([len(books) for books in scenes])
        shapes[share] = np.median([np.ptp(b[:, 0]) / np.ptp(b[:, 1]) for books in scenes for b in books])
        cover[share] = np.mean([covered_width(books, 384) for books in scenes])
    assert counts[1.0] > 1.25 * counts[0.0] and shapes[1.0] < 0.8 * shapes[0.0], (counts, shapes)
    assert cover[1.0] > 0.85 > cover[0.0], cover  # edge to edge
    # tables and empty scenes are drawn as before
    for kind in ("table", "empty"):
        plain = render_scene(np.random.default_rng([5, 0]), 96, 64, kind)
        packed = render_scene(np.random.default_rng([5, 0]), 96, 64, kind, packed_share=1.0)
        assert np.array_equal(plain[0], packed[0])


def lying_flat(polygon) -> bool:
    return np.ptp(polygon[:, 0]) > 1.5 * np.ptp(polygon[:, 1])


def test_flat_share_puts_stacks_lying_flat_into_every_row_packed_ones_too():
    flat = {}
    for share in (0.0, 0.15):
        scenes = [render_scene(np.random.default_rng([6, i]), 384, 288, "shelf", packed_share=1.0, flat_share=share)[1]
                  for i in range(12)]
        flat[share] = sum(lying_flat(book) for books in scenes for book in books)
    assert flat[0.0] <= 2 and flat[0.15] >= 15, flat  # a packed row holds no stack of its own
    # without the setting, the draws and so the scenes are those rendered before it existed
    for kind in ("shelf", "table"):
        before = render_scene(np.random.default_rng([6, 1]), 96, 64, kind, packed_share=0.5)
        after = render_scene(np.random.default_rng([6, 1]), 96, 64, kind, packed_share=0.5, flat_share=0.0)
        assert np.array_equal(before[0], after[0])


def test_empty_scenes_have_no_books():
    for index in range(3):
        image, polygons = render_scene(np.random.default_rng([2, index]), WIDTH, HEIGHT, "empty")
        assert polygons == [] and image.std() > 0
    with pytest.raises(ValueError, match="scene kind"):
        render_scene(np.random.default_rng(0), WIDTH, HEIGHT, "attic")


def test_via_export_format(dataset):
    entries = json.loads(dataset.read_text())
    assert len(entries) == NUM_IMAGES
    for key, entry in entries.items():
        assert set(entry) == {"filename", "size", "regions", "file_attributes"}
        path = dataset.parent / "images" / entry["filename"]
        assert key == entry["filename"] + str(entry["size"]) and path.stat().st_size == entry["size"]
        assert isinstance(entry["regions"], list) and entry["file_attributes"] == {}
        for region in entry["regions"]:
            shape = region["shape_attributes"]
            assert shape["name"] == "polygon" and region["region_attributes"] == {"name": "book"}
            assert len(shape["all_points_x"]) == len(shape["all_points_y"]) >= 3


def test_via_polygons_are_what_was_drawn(dataset):
    entries = list(json.loads(dataset.read_text()).values())
    for index, entry in enumerate(entries):
        _, drawn = render_scene(np.random.default_rng([SEED, index]), WIDTH, HEIGHT)
        assert len(entry["regions"]) == len(drawn)
        for region, polygon in zip(entry["regions"], drawn):
            shape = region["shape_attributes"]
            stored = rasterise(np.column_stack([shape["all_points_x"], shape["all_points_y"]]))
            expected = rasterise(polygon)
            assert (stored & expected).sum() / (stored | expected).sum() >= 0.95


def test_the_hidden_part_of_a_book_is_not_labelled():
    scene = Scene(np.zeros((100, 100, 3), np.float32), np.array([2.0, 2.0]), 1.0, 0.3)
    book = np.array([[10.0, 10], [60, 10], [60, 90], [10, 90]])
    in_front = np.array([[40.0, 0], [100, 0], [100, 100], [40, 100]])  # covers x 40..60 of the book
    draw(scene, Item(book, [(book, (200, 30, 30))]))
    assert visible_outline(scene, 0) is book  # nothing in front yet: the exact outline
    draw(scene, Item(in_front, [(in_front, (30, 30, 200))], is_book=False))
    assert abs(signed_area(visible_outline(scene, 0))) == pytest.approx(30 * 80, rel=0.002)


def test_layouts_that_split_a_book_or_hole_it_are_refused():
    scene = Scene(np.zeros((100, 100, 3), np.float32), np.array([2.0, 2.0]), 1.0, 0.3)
    book = np.array([[10.0, 10], [60, 10], [60, 90], [10, 90]])
    draw(scene, Item(book, [(book, (200, 30, 30))]))
    across_the_middle = np.array([[0.0, 40], [100, 40], [100, 50], [0, 50]])
    inside = np.array([[20.0, 20], [50, 20], [50, 80], [20, 80]])  # a hole larger than the space around the book
    over_a_corner = np.array([[50.0, 0], [100, 0], [100, 30], [50, 30]])
    assert not leaves_books_whole(scene, across_the_middle)
    assert not leaves_books_whole(scene, inside)
    assert leaves_books_whole(scene, over_a_corner)


def test_cli_writes_the_set(tmp_path, capsys):
    out = tmp_path / "cli"
    assert main(["synth", str(out), "--num-images", "2", "--seed", "3", "--width", "96", "--height", "72"]) == 0
    printed = capsys.readouterr().out
    assert str(out / "via_region_data.json") in printed and "images/s" in printed
    assert len(json.loads((out / "via_region_data.json").read_text())) == 2


def test_read_via_reads_the_polygons_back(dataset):
    annotations = read_via(dataset, ReaderOptions(image_root=dataset.parent / "images", class_map=ClassMap(["book"])))
    assert annotations.flavour == "via2" and not annotations.skipped
    entries = json.loads(dataset.read_text())
    assert [r.file_name for r in annotations.records] == [e["filename"] for e in entries.values()]
    for record, entry in zip(annotations.records, entries.values()):
        assert record.path == dataset.parent / "images" / entry["filename"] and record.path.exists()
        assert len(record.instances) == len(entry["regions"])
        for instance, region in zip(record.instances, entry["regions"]):
            shape = region["shape_attributes"]
            expected = np.column_stack([shape["all_points_x"], shape["all_points_y"]]).astype(np.float32)
            assert instance.label == 1 and len(instance.polygons) == 1
            np.testing.assert_allclose(instance.polygons[0], expected, atol=1e-4)


def test_the_plain_style_drops_light_noise_and_shadows_but_keeps_the_camera():
    canvas = np.full((140, 180, 3), 100.0, np.float32)
    plain, plain_map = photograph(np.random.default_rng(3), canvas.copy(), 160, 120, plain=True)
    photo, photo_map = photograph(np.random.default_rng(3), canvas.copy(), 160, 120)
    np.testing.assert_array_equal(plain_map, photo_map)  # the same random draws: the same view
    assert np.all(plain == 100) and photo.std() > 1.0  # no light falloff, colour cast or sensor noise

    shaded = {}
    for style in (False, True):
        scene = new_scene(np.random.default_rng(4), 60, 60, plain=style)
        scene.image[:] = 200.0
        draw(scene, Item(rectangle(20, 20, 30, 40), [(rectangle(20, 20, 30, 40), np.array([50.0, 50.0, 50.0]))]))
        shaded[style] = int((scene.image[..., 0] < 199).sum())
    assert shaded[True] == 10 * 20 < shaded[False]  # the book alone, without its shadow


def test_an_unknown_style_is_refused():
    with pytest.raises(ValueError, match="style 'cartoon'"):
        render_scene(np.random.default_rng(0), 64, 48, style="cartoon")
