"""COCO and VOC figures against values derived by hand on tiny masks, and the drawing helpers."""

import math

import numpy as np
import pytest
import torch

from booksegm.evaluation.coco_eval import CocoEvaluator
from booksegm.evaluation.voc import compute_ap, match_instances, mean_voc_ap, voc_ap
from booksegm.viz.curves import plot_pr_curves
from booksegm.viz.overlays import color_splash, draw_instances, make_grid

SIZE = 32


def square(x, y, side=10, size=SIZE):
    """A bool mask with a side x side square whose top-left pixel is (x, y)."""
    m = torch.zeros(size, size, dtype=torch.bool)
    m[y : y + side, x : x + side] = True
    return m


def box_of(mask):
    ys, xs = torch.nonzero(mask, as_tuple=True)
    return [xs.min().item(), ys.min().item(), xs.max().item() + 1, ys.max().item() + 1]


def target(masks, image_id=0):
    masks = torch.stack(masks) if masks else torch.zeros(0, SIZE, SIZE, dtype=torch.bool)
    return {
        "boxes": torch.tensor([box_of(m) for m in masks], dtype=torch.float32).reshape(-1, 4),
        "labels": torch.ones(len(masks), dtype=torch.int64),
        "masks": masks.to(torch.uint8),
        "image_id": image_id,
    }


def prediction(masks, scores):
    """What torchvision's MaskRCNN returns in eval mode: float masks [M, 1, H, W]."""
    t = target(masks)
    return {
        "boxes": t["boxes"], "labels": t["labels"],
        "scores": torch.tensor(scores, dtype=torch.float32),
        "masks": t["masks"].float()[:, None] * 0.9,  # probabilities above the 0.5 threshold
    }


def coco(preds, targets):
    ev = CocoEvaluator(["book"])
    ev.update(preds, targets)
    return ev, ev.compute()


GT = [square(2, 2), square(18, 18)]


def test_perfect_predictions_score_one():
    _, m = coco([prediction(GT, [1.0, 1.0])], [target(GT)])
    for prefix in ("mask", "box"):
        assert m[f"{prefix}_AP"] == pytest.approx(1.0)
        assert m[f"{prefix}_AP50"] == pytest.approx(1.0)
        assert m[f"{prefix}_AR100"] == pytest.approx(1.0)
        assert m[f"{prefix}_APs"] == pytest.approx(1.0)  # 100 px < 32**2: "small"
        assert math.isnan(m[f"{prefix}_APl"])  # no large books: COCOeval's -1 becomes NaN


@pytest.mark.parametrize(
    "dx, passed",  # IoU of a 10x10 square and its copy moved dx px: (10 - dx) / (10 + dx)
    [(1, 7), (2, 4), (3, 1)],  # 0.818 -> 0.50..0.80 pass; 0.667 -> 0.50..0.65; 0.538 -> 0.50
)
def test_shifted_masks_give_the_fraction_of_thresholds_passed(dx, passed):
    gt = [square(5, 5)]
    _, m = coco([prediction([square(5 + dx, 5)], [0.9])], [target(gt)])
    for prefix in ("mask", "box"):  # the box IoU equals the mask IoU for squares
        assert m[f"{prefix}_AP"] == pytest.approx(passed / 10)
        assert m[f"{prefix}_AP50"] == pytest.approx(1.0)
        assert m[f"{prefix}_AP75"] == pytest.approx(1.0 if passed >= 6 else 0.0)


def test_no_predictions_is_zero_not_a_crash():
    ev, m = coco([prediction([], [])], [target(GT)])
    assert m["mask_AP"] == 0.0 and m["box_AP"] == 0.0 and m["mask_AR100"] == 0.0
    recall, precision = ev.precision_recall(0.5)
    assert recall.shape == precision.shape == (101,) and not precision.any()


def test_images_without_ground_truth_and_without_any():
    # A false positive on an image without books costs precision.
    preds = [prediction(GT, [0.8, 0.8]), prediction([square(5, 5)], [0.9])]
    _, m = coco(preds, [target(GT, 0), target([], 1)])
    assert m["mask_AP50"] == pytest.approx(2 / 3)  # FP, TP, TP: a flat envelope at 2/3

    ev, m = coco([prediction([square(5, 5)], [0.9])], [target([], 0)])
    assert all(math.isnan(v) for v in m.values()) and len(m) == 20
    assert np.isnan(ev.precision_recall(0.5)[1]).all()


def test_false_positive_above_the_true_positive_halves_ap():
    gt = [square(2, 2)]
    preds = prediction([square(20, 20), square(2, 2)], [0.9, 0.8])  # FP first, then TP
    ev, m = coco([preds], [target(gt)])
    assert m["mask_AP"] == pytest.approx(0.5) and m["box_AP50"] == pytest.approx(0.5)
    recall, precision = ev.precision_recall(0.5, kind="bbox")
    np.testing.assert_allclose(precision, 0.5)
    np.testing.assert_allclose(recall, np.linspace(0, 1, 101))


@pytest.mark.parametrize(
    "scores_and_boxes, f1, score",
    [
        ([(0.9, GT[0]), (0.8, GT[1]), (0.3, square(20, 2))], 1.0, 0.8),  # the FP scores lowest: cut it
        ([(0.9, GT[0]), (0.8, square(20, 2)), (0.3, GT[1])], 0.8, 0.3),  # keep all: P 2/3, R 1
    ],
)
def test_best_f1_gives_the_score_threshold_that_shows_the_real_detections(scores_and_boxes, f1, score):
    preds = prediction([b for _, b in scores_and_boxes], [s for s, _ in scores_and_boxes])
    _, m = coco([preds], [target(GT)])
    assert m["mask_F1"] == pytest.approx(f1) and m["mask_F1_score"] == pytest.approx(score)


def test_masks_may_come_on_any_device_dtype_and_image_size():
    ev = CocoEvaluator(["book"])
    big = [square(40, 30, side=20, size=64)]
    t = target(big, image_id=7)
    ev.update([{**prediction(big, [0.5]), "masks": t["masks"].bool()}], [t])
    assert ev.compute()["mask_AP"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="added twice"):
        ev.update([prediction(big, [0.5])], [t])
    with pytest.raises(ValueError, match="target size"):
        ev.update([prediction(GT, [0.5, 0.5])], [{**t, "image_id": 8}])


# Hand-made cases where matterport's area-under-envelope equals COCO's 101-point average:
# recall reaches 1 and the precision envelope is flat.
AGREE = [
    ([square(2, 2)], [square(2, 2)], [0.9], 1.0),
    ([square(2, 2)], [square(20, 20), square(2, 2)], [0.9, 0.8], 1 / 2),
    (GT, [square(10, 0, side=4), *GT], [0.9, 0.8, 0.7], 2 / 3),
    (GT, [], [], 0.0),
]


@pytest.mark.parametrize("gt, preds, scores, expected", AGREE)
def test_matterport_ap_agrees_with_coco_ap50(gt, preds, scores, expected):
    p = prediction(preds, scores)
    ap, precisions, recalls = compute_ap(p["masks"], target(gt)["masks"], p["scores"])
    assert ap == pytest.approx(expected)
    assert recalls[0] == 0 and recalls[-1] == 1 and np.all(np.diff(precisions) <= 0)
    _, m = coco([p], [target(gt)])
    assert m["mask_AP50"] == pytest.approx(expected)


def test_where_they_differ_by_the_101_point_sampling():
    # TP, FP, TP on two books: envelope 1 up to recall 1/2, then 2/3.
    preds = prediction([GT[0], square(10, 0, side=4), GT[1]], [0.9, 0.8, 0.7])
    ap, _, _ = compute_ap(preds["masks"], target(GT)["masks"], preds["scores"])
    assert ap == pytest.approx(0.5 * 1 + 0.5 * 2 / 3)
    _, m = coco([preds], [target(GT)])
    assert m["mask_AP50"] == pytest.approx((51 * 1 + 50 * 2 / 3) / 101)


def test_match_instances_counts_and_ious():
    gt = target([square(2, 2), square(18, 18), square(2, 20)])["masks"]
    preds = [square(3, 2), square(2, 2), square(20, 18), square(25, 0, side=5)]
    m = match_instances(torch.stack(preds), gt, [0.5, 0.9, 0.8, 0.7])
    # Best score first: the exact copy takes book 0, so its shifted twin is a false positive.
    assert (m.tp, m.fp, m.fn) == (2, 2, 1)
    assert m.pred_match.tolist() == [-1, 0, 1, -1] and m.gt_match.tolist() == [1, 2, -1]
    np.testing.assert_allclose(m.matched_ious, [1.0, 80 / 120])
    # A second prediction never takes a book already matched by prediction 0 (matterport did).
    again = match_instances(torch.stack([square(2, 2), square(2, 2)]), gt[:1], [0.9, 0.8])
    assert (again.tp, again.fp) == (1, 1)
    # Labels must agree.
    other = match_instances(gt[:1], gt[:1], [0.9], pred_labels=[2], gt_labels=[1])
    assert (other.tp, other.fp, other.fn) == (0, 1, 1)


def test_voc_ap_edges_and_mean_over_images():
    assert voc_ap(np.array([], bool), 3)[0] == 0.0
    assert math.isnan(compute_ap(torch.zeros(0, SIZE, SIZE), torch.zeros(0, SIZE, SIZE), [])[0])
    preds = [prediction(GT, [0.9, 0.8]), prediction([square(20, 20), GT[0]], [0.9, 0.8]),
             prediction([square(5, 5)], [0.9])]
    targets = [target(GT), target([GT[0]]), target([])]  # the image without books is left out
    assert mean_voc_ap(preds, targets) == pytest.approx((1.0 + 0.5) / 2)


def photo(seed=0):
    return np.random.default_rng(seed).integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)


def test_draw_instances_touches_only_the_masks_and_their_outline():
    image = photo()
    masks = torch.stack(GT)
    out = draw_instances(image, masks.numpy())
    assert out.shape == image.shape and out.dtype == np.uint8
    assert not np.array_equal(out, image)
    union = masks.any(0).numpy()
    changed = np.any(out != image, axis=-1)
    assert changed[union].mean() > 0.9  # filled
    near = np.zeros_like(union)  # masks grown by 1 px covers any outline thickness used here
    ys, xs = np.nonzero(union)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            near[np.clip(ys + dy, 0, SIZE - 1), np.clip(xs + dx, 0, SIZE - 1)] = True
    assert not changed[~near].any()
    # Boxes and captions draw outside the masks too; deterministic colours.
    boxed = draw_instances(image, masks.float()[:, None], boxes=target(GT)["boxes"],
                           scores=[0.9, 0.8], labels=[1, 1], class_names=["book"])
    assert np.any(boxed[~near] != image[~near])
    np.testing.assert_array_equal(draw_instances(image, masks), out)


def test_color_splash_keeps_masks_and_grays_the_rest():
    image = photo(1)
    masks = torch.stack(GT)
    out = color_splash(image, masks)
    union = masks.any(0).numpy()
    np.testing.assert_array_equal(out[union], image[union])
    rest = out[~union]
    assert np.all(rest[:, 0] == rest[:, 1]) and np.all(rest[:, 1] == rest[:, 2])
    empty = color_splash(image, torch.zeros(0, SIZE, SIZE))
    assert np.all(empty[..., 0] == empty[..., 2])  # no books: all gray


def test_make_grid_tiles_images_of_different_sizes():
    a, b = photo(0), photo(1)[:20, :10]
    grid = make_grid([a, b, a], ncols=2, pad=2)
    assert grid.shape == (2 * 32 + 3 * 2, 2 * 32 + 3 * 2, 3)
    np.testing.assert_array_equal(grid[2:34, 2:34], a)
    np.testing.assert_array_equal(grid[2:22, 36:46], b)
    np.testing.assert_array_equal(grid[36:68, 2:34], a)


def test_plot_pr_curves_writes_a_png(tmp_path):
    ev, _ = coco([prediction([square(20, 20), GT[0]], [0.9, 0.8])], [target(GT)])
    curves = {f"mask IoU {t}": ev.precision_recall(t) for t in (0.5, 0.75)}
    path = plot_pr_curves(curves, tmp_path / "pr" / "curves.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_processes_shares_gathered_score_as_one_evaluator_with_a_repeated_image_counted_once():
    """Under DDP each process evaluates a share of the images; their states together give the AP of all of them."""
    images = [([square(2, 2), square(18, 18)], [square(3, 2), square(18, 25)], [0.9, 0.4]),
              ([square(5, 5)], [square(5, 5), square(20, 2)], [0.3, 0.8]),
              ([square(10, 10)], [square(14, 10)], [0.6])]
    preds = [prediction(found, scores) for _, found, scores in images]
    targets = [target(truth, image_id=i) for i, (truth, _, _) in enumerate(images)]
    whole, expected = coco(preds, targets)
    shares = [CocoEvaluator(["book"]) for _ in range(2)]
    shares[0].update([preds[0], preds[2]], [targets[0], targets[2]])
    shares[1].update([preds[1], preds[0]], [targets[1], targets[0]])  # image 0 again, as DistributedSampler pads
    gathered = CocoEvaluator(["book"])
    gathered.load_states([share.state() for share in shares])
    got = gathered.compute()
    assert 0 < expected["mask_AP"] < 1 and shares[0].compute()["mask_AP"] != pytest.approx(expected["mask_AP"])
    assert got.keys() == expected.keys()
    assert all(got[k] == pytest.approx(expected[k], nan_ok=True) for k in expected)
