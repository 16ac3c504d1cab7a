"""Test-time augmentation: views mapped back onto the image, merged by vote; the model and its
limits (its export: tests/test_export.py)."""

from __future__ import annotations

import pytest
import torch
from support import tiny_config, toy_batch
from torchvision.models.detection import MaskRCNN

from booksegm.config import ConfigError
from booksegm.inference import set_detection_limits
from booksegm.model.build import build_maskrcnn
from booksegm.model.tta import TTAMaskRCNN, map_back, merge_views, tta_views, view_image


def detections(boxes, scores, labels=None, size=(20, 40)) -> dict[str, torch.Tensor]:
    """Detections whose masks fill their boxes, on a ``size`` image."""
    boxes = torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)
    masks = torch.zeros(len(boxes), 1, *size)
    for mask, (x1, y1, x2, y2) in zip(masks, boxes.int().tolist()):
        mask[0, y1:y2, x1:x2] = 1.0
    labels = torch.tensor(labels if labels is not None else [1] * len(boxes), dtype=torch.int64)
    return {"boxes": boxes, "scores": torch.tensor(scores, dtype=torch.float32), "labels": labels, "masks": masks}


def test_views_are_each_scale_as_given_and_mirrored():
    assert tta_views([1.0, 1.25], hflip=True) == [(1.0, False), (1.0, True), (1.25, False), (1.25, True)]
    assert tta_views([1.0, 1.5], hflip=False) == [(1.0, False), (1.5, False)]


def test_a_book_both_views_find_keeps_the_mean_and_one_view_alone_half_its_score():
    first = detections([[0, 0, 10, 20], [20, 0, 30, 10]], [0.8, 0.6])
    second = detections([[0, 0, 12, 20]], [0.6])  # IoU 0.83 with the first box: the same book
    merged = merge_views([first, second], nms_thresh=0.5, score_thresh=0.0, detections_per_img=10)
    assert merged["scores"].tolist() == pytest.approx([0.7, 0.3])
    assert merged["boxes"][0].tolist() == pytest.approx([0, 0, 11, 20])
    assert merged["masks"][0, 0, 5, :12].tolist() == pytest.approx([1.0] * 10 + [0.5] * 2)  # mean probability
    assert merged["boxes"][1].tolist() == [20, 0, 30, 10]  # unmatched: as its one view gave it


def test_the_merge_applies_its_floor_its_limit_and_nms_and_never_joins_two_classes():
    first = detections([[0, 0, 10, 20], [20, 0, 30, 10], [21, 0, 31, 10]], [0.9, 0.8, 0.7], labels=[1, 1, 1])
    second = detections([[0, 0, 10, 20]], [0.9], labels=[2])
    merged = merge_views([first, second], nms_thresh=0.5, score_thresh=0.36, detections_per_img=2)
    # each 0.9 book alone in its view (another class): 0.45; the 0.7 one is under the 0.8 one (NMS);
    # 0.8 -> 0.4; at most 2
    assert merged["scores"].tolist() == pytest.approx([0.45, 0.45])
    assert sorted(merged["labels"].tolist()) == [1, 2]
    assert len(merge_views([first, second], 0.5, 0.46, 10)["scores"]) == 0


def test_a_mirrored_and_enlarged_view_maps_back_onto_the_image():
    image = torch.rand(3, 20, 40)
    shown = view_image(image, 1.5, flip=True)
    assert shown.shape == (3, 30, 60)
    assert torch.allclose(view_image(image, 1.0, flip=True), image.flip(-1))
    found = detections([[6, 3, 18, 15]], [0.9], size=(30, 60))  # in the mirrored 60 px wide view
    back = map_back(found, (20, 40), (30, 60), flip=True)
    assert back["boxes"].tolist() == [[(60 - 18) / 1.5, 2, (60 - 6) / 1.5, 10]]
    assert back["masks"].shape == (1, 1, 20, 40)
    assert back["masks"][0, 0, 6, 32] > 0.9 and back["masks"][0, 0, 6, 5] == 0  # on the mirrored side
    assert map_back(detections([], [], size=(30, 60)), (20, 40), (30, 60), flip=False)["masks"].shape == (0, 1, 20, 40)


def test_the_tta_model_merges_its_views_and_trains_as_torchvision_s():
    plain = build_maskrcnn(tiny_config(box_score_thresh=0.0), num_classes=2)
    tta = build_maskrcnn(tiny_config(box_score_thresh=0.0, tta_scales=[1.0, 1.25], tta_hflip=True), num_classes=2)
    assert type(plain) is MaskRCNN and isinstance(tta, TTAMaskRCNN)
    tta.load_state_dict(plain.state_dict())  # the same modules: checkpoints load either way
    images, targets = toy_batch()
    torch.manual_seed(0)
    plain_losses = plain.train()(images, targets)
    torch.manual_seed(0)
    assert tta.train()(images, targets).keys() == plain_losses.keys()
    plain.eval()
    tta.eval()
    with torch.no_grad():
        views = [[map_back(d, (64, 64), tuple(view_image(images[0], s, f).shape[-2:]), f)
                  for d in plain([view_image(images[0], s, f)])] for s, f in tta.views]
        expected = merge_views([v[0] for v in views], plain.roi_heads.nms_thresh, 0.0, 100)
        got = tta([images[0]])[0]
    assert len(got["scores"]) > 0
    for key in ("boxes", "scores", "labels", "masks"):
        assert torch.allclose(got[key].float(), expected[key].float()), key


def test_detection_limits_of_a_tta_model_apply_to_the_merge_and_its_views_keep_scoring_low():
    model = build_maskrcnn(tiny_config(tta_scales=[1.0, 1.25]), num_classes=2)
    set_detection_limits(model, 0.6, 7)
    assert (model.score_thresh, model.detections_per_img) == (0.6, 7)
    assert model.roi_heads.score_thresh == model.transform.score_thresh == 0.05
    assert model.roi_heads.detections_per_img == 100


@pytest.mark.parametrize("scales", [[], [0.1], [1.0, 1.0]])
def test_impossible_tta_scales_are_refused(scales):
    with pytest.raises(ConfigError, match="model.tta_scales needs distinct scales"):
        build_maskrcnn(tiny_config(tta_scales=scales), num_classes=2)
