"""Anchor suggestion: box sizes after the training resize, coverage at IoU >= 0.5, the command."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from booksegm.cli.anchors import AnchorSet, best_iou, box_shapes, main, score, suggest
from booksegm.data.records import AnnotationSet, ImageRecord, Instance
from booksegm.data.resize import ResizeConfig
from booksegm.data.synthetic import generate_dataset
from booksegm.model.build import AnchorConfig


def rectangle(x: float, y: float, w: float, h: float) -> Instance:
    return Instance((np.array([[x, y], [x + w, y], [x + w, y + h], [x, y + h]], dtype=np.float32),), label=1)


def test_anchor_shapes_match_the_torchvision_anchors_the_model_uses():
    config = AnchorConfig(sizes=[16, 32, 64, 128, 256], ratios=[0.25, 1.0, 2.0])
    shapes = AnchorSet("x", tuple(config.sizes), tuple(config.ratios)).shapes()
    # torchvision's cell anchors (x1, y1, x2, y2 around 0), level by level, after the w/h -> h/w conversion
    cells = np.concatenate([a.numpy() for a in config.generator().cell_anchors])
    torchvision_shapes = np.stack([cells[:, 2] - cells[:, 0], cells[:, 3] - cells[:, 1]], axis=1)
    np.testing.assert_allclose(np.sort(shapes, axis=0), np.sort(torchvision_shapes, axis=0), atol=1.0)
    # matterport: width = scale * sqrt(ratio), height = scale / sqrt(ratio)
    assert shapes[0] == pytest.approx([8.0, 32.0])


def test_best_iou_is_the_iou_of_centred_shapes():
    iou, which = best_iou(np.array([[10.0, 40.0], [20.0, 20.0]]), np.array([[20.0, 20.0], [10.0, 40.0]]))
    assert iou == pytest.approx([1.0, 1.0]) and which.tolist() == [1, 0]
    iou, _ = best_iou(np.array([[10.0, 40.0]]), np.array([[20.0, 20.0]]))
    assert iou == pytest.approx([200 / 600])


def test_tall_thin_boxes_get_a_thin_ratio_that_covers_them():
    rng = np.random.default_rng(0)
    boxes = np.stack([rng.uniform(9, 11, 200), rng.uniform(75, 85, 200)], axis=1)  # spines: w/h ~ 1/8
    current = AnchorSet("current", (32, 64, 128, 256, 512), (0.5, 1.0, 2.0))
    scores = suggest(boxes, current)
    best, matterport = scores[0], next(s for s in scores if s.anchors.name == "current")
    assert best.anchors.name == "suggested 1" and best.coverage == 1.0
    assert min(best.anchors.ratios) == pytest.approx(0.125, abs=0.01)
    assert matterport.coverage == 0.0 and best.mean_iou > matterport.mean_iou
    assert best.level_share.sum() == pytest.approx(1.0)
    # the seed's scale sets are scored with the current ratios, for comparison
    assert {s.anchors.name for s in scores} >= {"anchors_8_128", "anchors_16_256", "anchors_32_512"}


def test_coverage_counts_boxes_at_iou_05():
    boxes = np.array([[32.0, 32.0], [32.0, 64.0], [8.0, 64.0]])
    result = score(boxes, AnchorSet("one", (32, 64, 128, 256, 512), (1.0,)), threshold=0.5)
    # 32x32 matches exactly, 32x64 overlaps 32x32 at exactly 0.5, 8x64 at best 256 / 1280 = 0.2
    assert result.coverage == pytest.approx(2 / 3)
    assert score(boxes, AnchorSet("one", (32, 64, 128, 256, 512), (1.0,)), threshold=0.51).coverage == pytest.approx(1 / 3)


def test_box_sizes_are_measured_after_the_training_resize(tmp_path):
    Image.new("RGB", (200, 100)).save(tmp_path / "a.png")
    records = [
        ImageRecord("a.png", tmp_path / "a.png", [rectangle(10, 10, 20, 40)]),
        ImageRecord("gone.png", tmp_path / "gone.png", [rectangle(0, 0, 10, 10)], width=400, height=400),
        ImageRecord("unknown.png", tmp_path / "unknown.png", [rectangle(0, 0, 10, 10)]),
    ]
    annotations = AnnotationSet(tmp_path / "x.json", "via2", records, ("book",))
    # square 400: the 200x100 image scales by 2 (long side to max_dim), the 400x400 one by 1
    boxes, skipped = box_shapes(annotations, ResizeConfig("square", 400, 400))
    assert boxes.tolist() == [[40.0, 80.0], [10.0, 10.0]] and skipped == 1
    boxes, _ = box_shapes(annotations, ResizeConfig("none"))
    assert boxes.tolist() == [[20.0, 40.0], [10.0, 10.0]]


def test_the_command_prints_suggestions_and_the_override(tmp_path, capsys):
    json_path = generate_dataset(tmp_path, 4, seed=0, width=96, height=72, progress=False)
    code = main([str(json_path), "--images", str(tmp_path / "images"), "--min-dim", "128", "--max-dim", "128",
                 "--sizes", "16", "32", "64", "128", "256", "--ratios", "0.25", "0.5", "1"])
    out = capsys.readouterr().out
    assert code == 0
    assert "GT boxes after resize square" in out and "suggested 1" in out
    assert "current          16, 32, 64, 128, 256" in out
    assert "to use it: model.anchors.sizes=[" in out and "per FPN level" in out


@pytest.mark.parametrize("args, message", [
    (["--sizes", "16", "32", "64", "128", "-1"], "model.anchors.sizes must be positive"),
    (["--mode", "pad64", "--min-dim", "100"], "pad64 needs min_dim divisible by 64"),
])
def test_the_command_refuses_bad_values_in_one_line(tmp_path, capsys, args, message):
    json_path = generate_dataset(tmp_path, 1, seed=0, width=64, height=48, progress=False)
    with pytest.raises(SystemExit, match="^2$"):
        main([str(json_path), *args])
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_no_boxes_says_why_the_regions_were_skipped(tmp_path, capsys):
    # book-spines' class is "book-s-spine": without --alias every region is skipped, and the
    # error must say so rather than leave the user guessing
    json_path = generate_dataset(tmp_path, 2, seed=0, width=64, height=48, progress=False)
    with pytest.raises(SystemExit, match="^2$"):
        main([str(json_path), "--images", str(tmp_path / "images"), "--classes", "magazine"])
    err = capsys.readouterr().err
    assert "no GT boxes to measure" in err and "class 'book' not in data.classes" in err
