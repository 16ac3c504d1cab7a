"""The model: config reaches torchvision, weighted losses, weight loading with head surgery."""

from __future__ import annotations

import json
import math
import urllib.error
from dataclasses import asdict
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from support import tiny_config, toy_batch
from torchvision.models import ResNet18_Weights
from torchvision.models.detection import MaskRCNN_ResNet50_FPN_Weights, maskrcnn_resnet50_fpn

from booksegm.config import ConfigError
from booksegm.inference import load_model, set_detection_limits
from booksegm.model.build import AnchorConfig, ModelConfig, build_maskrcnn, recentre, rescore_by_maskness
from booksegm.model.checkpoint_file import DEFAULT_SCORE_THRESHOLD, CheckpointError
from booksegm.model.losses import LOSS_NAMES, validate_loss_weights, weighted_loss
from booksegm.model.weights import WeightsUnavailableError, load_initial_weights, read_state_dict


def test_anchors_from_config_reach_the_anchor_generator_and_rpn_head():
    cfg = tiny_config(anchors=AnchorConfig(sizes=[16, 32, 64, 128, 256], ratios=[0.25, 0.5, 1.0, 2.0]))
    model = build_maskrcnn(cfg, num_classes=2)
    generator = model.rpn.anchor_generator
    assert generator.sizes == ((16,), (32,), (64,), (128,), (256,))
    # matterport ratios are width/height; torchvision's are height/width
    assert generator.aspect_ratios[0] == pytest.approx((4.0, 2.0, 1.0, 0.5))
    assert model.rpn.head.cls_logits.out_channels == 4
    assert model.rpn.head.bbox_pred.out_channels == 16


def test_matterport_knobs_reach_torchvision_modules():
    cfg = tiny_config(
        rpn_nms_thresh=0.6, rpn_batch_size_per_image=128, box_batch_size_per_image=33,
        box_positive_fraction=0.33, box_detections_per_img=77, box_score_thresh=0.3, box_nms_thresh=0.35,
        pool_size=5, mask_pool_size=10,
    )
    model = build_maskrcnn(cfg, num_classes=3)
    assert model.rpn.nms_thresh == 0.6
    assert model.rpn.fg_bg_sampler.batch_size_per_image == 128
    assert model.rpn._pre_nms_top_n == {"training": 100, "testing": 50}
    assert model.rpn._post_nms_top_n == {"training": 50, "testing": 20}
    heads = model.roi_heads
    assert heads.fg_bg_sampler.batch_size_per_image == 33
    assert heads.fg_bg_sampler.positive_fraction == 0.33
    assert (heads.detections_per_img, heads.score_thresh, heads.nms_thresh) == (77, 0.3, 0.35)
    assert heads.box_roi_pool.output_size == (5, 5)
    assert heads.mask_roi_pool.output_size == (10, 10)
    assert heads.box_predictor.cls_score.out_features == 3
    assert heads.mask_predictor.mask_fcn_logits.out_channels == 3


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("backbone", "vgg16", "model.backbone"),
        ("anchors", AnchorConfig(sizes=[-16, 32, 64, 128, 256]), "anchors.sizes must be positive"),
        ("anchors", AnchorConfig(sizes=[32, 64]), "needs 5 values"),
        ("anchors", AnchorConfig(ratios=[0.0, 1.0]), "ratios"),
        ("rpn_nms_thresh", 1.5, "rpn_nms_thresh"),
        ("box_detections_per_img", 0, "box_detections_per_img"),
    ],
)
def test_invalid_model_values_fail_with_one_clear_line(field, value, message):
    with pytest.raises(ConfigError, match=message) as info:
        build_maskrcnn(tiny_config(**{field: value}), num_classes=2)
    assert "\n" not in str(info.value)


def test_the_model_does_not_resize_again():
    model = build_maskrcnn(tiny_config(), num_classes=2).eval()
    image_list, _ = model.transform([torch.rand(3, 100, 150)])
    assert image_list.image_sizes == [(100, 150)]


def test_maskness_ranks_a_crisp_mask_above_a_doubtful_one_and_applies_the_threshold_to_the_product():
    crisp, doubtful, empty = torch.full((28, 28), 0.01), torch.full((28, 28), 0.01), torch.full((28, 28), 0.4)
    crisp[:, 10:18] = 0.9  # maskness 0.9
    doubtful[:, 4:24] = 0.6  # maskness 0.6
    detections = {"boxes": torch.tensor([[0.0, 0, 10, 40], [5.0, 0, 25, 40], [0.0, 0, 5, 5]]),
                  "labels": torch.ones(3, dtype=torch.int64), "scores": torch.tensor([0.8, 0.9, 0.99]),
                  "masks": torch.stack([crisp, doubtful, empty])[:, None]}
    rescored = rescore_by_maskness(detections, score_thresh=0.5)
    # 0.8 x 0.9 = 0.72 before 0.9 x 0.6 = 0.54; no pixel of the third mask is kept: maskness 0, dropped
    assert rescored["scores"] == pytest.approx(torch.tensor([0.72, 0.54]))
    assert torch.equal(rescored["boxes"], detections["boxes"][[0, 1]])
    assert torch.equal(rescored["masks"], detections["masks"][[0, 1]])
    assert rescore_by_maskness(detections, score_thresh=0.6)["scores"] == pytest.approx(torch.tensor([0.72]))
    # maskness squared: 0.8 x 0.81 = 0.648, 0.9 x 0.36 = 0.324
    assert rescore_by_maskness(detections, 0.3, power=2.0)["scores"] == pytest.approx(torch.tensor([0.648, 0.324]))


def test_maskness_scoring_rescores_the_model_outputs_under_its_detection_threshold():
    torch.manual_seed(0)
    plain = build_maskrcnn(tiny_config(box_score_thresh=0.0), num_classes=2).eval()
    rescoring = build_maskrcnn(tiny_config(box_score_thresh=0.0, maskness_scoring=True), num_classes=2).eval()
    rescoring.load_state_dict(plain.state_dict())
    image = toy_batch()[0][0]
    with torch.no_grad():
        before, unfiltered = plain([image])[0], rescoring([image])[0]
        threshold = unfiltered["scores"].median().item()
        set_detection_limits(rescoring, threshold, None)
        after = rescoring([image])[0]
    assert len(unfiltered["scores"]) > len(after["scores"]) > 0
    assert (after["scores"] >= threshold).all()
    assert torch.equal(after["scores"], after["scores"].sort(descending=True)[0])
    assert after["masks"].shape[-2:] == image.shape[-2:]  # still pasted into the image
    # class score x maskness: the untrained model's masks hover at 0.5, so its scores about halve
    assert unfiltered["scores"].max() < 0.6 * before["scores"].max()


def test_recentring_puts_the_mask_threshold_at_one_half_and_keeps_the_order():
    probabilities = torch.linspace(0.001, 0.999, 999, dtype=torch.float64)
    for threshold in (0.2, 0.5, 0.7):
        recentred = recentre(probabilities, threshold)
        assert (recentred[1:] > recentred[:-1]).all()
        assert torch.equal(recentred > 0.5, probabilities > threshold + 1e-9)
        assert recentre(torch.tensor([threshold], dtype=torch.float64), threshold).item() == pytest.approx(0.5)


def test_mask_threshold_cuts_the_models_masks_there_and_leaves_the_boxes():
    torch.manual_seed(0)
    image = toy_batch()[0][0]
    outputs = {}
    for threshold in (0.3, 0.5, 0.7):
        model = build_maskrcnn(tiny_config(box_score_thresh=0.0, mask_threshold=threshold), num_classes=2).eval()
        if outputs:
            model.load_state_dict(first.state_dict())
        else:  # mask logits spread wide: new heads start with all of them near 0
            first = model
            torch.nn.init.normal_(model.roi_heads.mask_predictor.mask_fcn_logits.weight, std=0.5)
        with torch.no_grad():
            outputs[threshold] = model([image])[0]
    areas = {t: int((out["masks"] > 0.5).sum()) for t, out in outputs.items()}
    assert areas[0.3] > areas[0.5] > areas[0.7] > 0, areas
    assert all(torch.equal(out["boxes"], outputs[0.5]["boxes"]) for out in outputs.values())


def test_new_heads_start_at_chance_level_losses():
    # Near-zero predictors: 2-class cross-entropy and per-pixel BCE both start at ln 2;
    # torchvision's default init put this first mask loss at 9.8.
    torch.manual_seed(0)
    losses = build_maskrcnn(tiny_config(), num_classes=2).train()(*toy_batch())
    assert losses["loss_mask"].item() == pytest.approx(math.log(2), abs=0.01)
    assert losses["loss_classifier"].item() == pytest.approx(math.log(2), abs=0.05)


def test_weighted_loss_is_the_weighted_sum_of_the_named_components():
    model = build_maskrcnn(tiny_config(), num_classes=2).train()
    images, targets = toy_batch()
    loss_dict = model(images, targets)
    assert set(loss_dict) == set(LOSS_NAMES)
    weights = validate_loss_weights({"mrcnn_mask_loss": 2.0, "rpn_bbox_loss": 0.5})
    total, named = weighted_loss(loss_dict, weights)
    expected = sum(weights[LOSS_NAMES[k]] * v for k, v in loss_dict.items())
    assert torch.allclose(total, expected)
    assert set(named) == set(LOSS_NAMES.values())
    assert torch.equal(named["mrcnn_mask_loss"], loss_dict["loss_mask"])


@pytest.mark.parametrize("mask_weight", [0.0, 1.0])
def test_a_zero_loss_weight_removes_that_component_gradient(mask_weight):
    torch.manual_seed(0)
    model = build_maskrcnn(tiny_config(), num_classes=2).train()
    images, targets = toy_batch()
    total, _ = weighted_loss(model(images, targets), validate_loss_weights({"mrcnn_mask_loss": mask_weight}))
    total.backward()
    # the mask predictor only receives gradient from the mask loss
    grad = model.roi_heads.mask_predictor.mask_fcn_logits.weight.grad
    has_gradient = grad is not None and grad.abs().sum().item() > 0
    assert has_gradient == (mask_weight > 0)


def test_unknown_or_negative_loss_weights_are_refused():
    with pytest.raises(ConfigError, match="unknown key"):
        validate_loss_weights({"mask_loss": 1.0})
    with pytest.raises(ConfigError, match=">= 0"):
        validate_loss_weights({"mrcnn_mask_loss": -1.0})


def put_in_hub_cache(monkeypatch, tmp_path: Path, weights, state: dict) -> None:
    """Save ``state`` where torchvision's weights enum looks before downloading."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    checkpoints = tmp_path / "torch" / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    torch.save(state, checkpoints / Path(weights.url).name)


def test_coco_weights_load_into_the_two_class_model_with_heads_replaced(monkeypatch, tmp_path):
    torch.manual_seed(1)
    coco_state = maskrcnn_resnet50_fpn(weights=None, weights_backbone=None, num_classes=91).state_dict()
    put_in_hub_cache(monkeypatch, tmp_path, MaskRCNN_ResNet50_FPN_Weights.COCO_V1, coco_state)
    model = build_maskrcnn(ModelConfig(weights="coco"), num_classes=2)
    load_initial_weights(model, "coco", "resnet50")
    state = model.state_dict()
    for key in ("backbone.body.layer3.0.conv1.weight", "backbone.fpn.layer_blocks.0.0.weight",
                "rpn.head.conv.0.0.weight", "roi_heads.mask_head.0.0.weight", "roi_heads.box_head.fc6.weight"):
        assert torch.equal(state[key], coco_state[key]), key
    assert state["roi_heads.box_predictor.cls_score.weight"].shape[0] == 2
    assert state["roi_heads.mask_predictor.mask_fcn_logits.weight"].shape[0] == 2


def test_imagenet_weights_load_into_the_backbone(monkeypatch, tmp_path):
    from torchvision.models import resnet18

    imagenet_state = resnet18(weights=None).state_dict()
    put_in_hub_cache(monkeypatch, tmp_path, ResNet18_Weights.IMAGENET1K_V1, imagenet_state)
    model = build_maskrcnn(tiny_config(weights="imagenet"), num_classes=2)
    load_initial_weights(model, "imagenet", "resnet18")
    assert torch.equal(model.backbone.body.layer2[0].conv1.weight, imagenet_state["layer2.0.conv1.weight"])


def test_no_network_gives_one_line_with_the_offline_options(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty"))

    def no_network(*args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    model = build_maskrcnn(ModelConfig(weights="coco"), num_classes=2)
    with pytest.raises(WeightsUnavailableError, match="offline options") as info:
        load_initial_weights(model, "coco", "resnet50")
    assert "\n" not in str(info.value) and "model.weights=none" in str(info.value)


def test_weights_from_another_architecture_are_refused(tmp_path):
    other = build_maskrcnn(tiny_config(backbone="resnet34"), num_classes=2)
    path = tmp_path / "r34.pth"
    torch.save(other.state_dict(), path)
    with pytest.raises(ConfigError, match="does not fit"):
        load_initial_weights(build_maskrcnn(tiny_config(), num_classes=2), str(path), "resnet18")


def test_a_lightning_checkpoint_file_round_trips(tmp_path):
    source = build_maskrcnn(tiny_config(), num_classes=2)
    path = tmp_path / "run.ckpt"
    torch.save({"state_dict": {f"model.{k}": v for k, v in source.state_dict().items()}, "epoch": 3}, path)
    assert read_state_dict(path).keys() == source.state_dict().keys()
    target = build_maskrcnn(tiny_config(weights=str(path)), num_classes=2)
    load_initial_weights(target, str(path), "resnet18")
    loaded = target.state_dict()  # built with frozen BN: no num_batches_tracked buffers
    for key, value in source.state_dict().items():
        assert key.endswith("num_batches_tracked") or torch.equal(loaded[key], value), key


def test_missing_or_garbage_weight_files_are_reported(tmp_path):
    model = build_maskrcnn(tiny_config(), num_classes=2)
    with pytest.raises(CheckpointError, match="model.weights: .*no such checkpoint file"):
        load_initial_weights(model, str(tmp_path / "nope.pth"), "resnet18")
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="model.weights: .*not a readable PyTorch checkpoint"):
        load_initial_weights(model, str(garbage), "resnet18")


def test_imagenet_weights_load_into_a_mobilenet_backbone(monkeypatch, tmp_path):
    from torchvision.models import MobileNet_V3_Large_Weights, mobilenet_v3_large

    imagenet_state = mobilenet_v3_large(weights=None).state_dict()
    put_in_hub_cache(monkeypatch, tmp_path, MobileNet_V3_Large_Weights.IMAGENET1K_V1, imagenet_state)
    model = build_maskrcnn(tiny_config(backbone="mobilenet_v3_large", weights="imagenet"), num_classes=2)
    load_initial_weights(model, "imagenet", "mobilenet_v3_large")
    assert torch.equal(model.backbone.body["4"].block[0][0].weight, imagenet_state["features.4.block.0.0.weight"])


def test_the_cpu_profile_knobs_shape_a_narrow_groupnorm_model_that_trains():
    cfg = tiny_config(backbone="mobilenet_v3_large", norm="group", fpn_channels=32, box_head_dim=64,
                      mask_head_convs=2, mask_head_channels=16)
    model = build_maskrcnn(cfg, num_classes=2)
    norms = {type(m) for m in model.modules() if isinstance(m, (torch.nn.BatchNorm2d, torch.nn.GroupNorm))}
    assert norms == {torch.nn.GroupNorm}  # backbone, FPN and mask head: no BatchNorm left
    assert all(g.num_channels // g.num_groups >= 2 for g in model.modules() if isinstance(g, torch.nn.GroupNorm))
    assert model.backbone.out_channels == 32 and model.rpn.head.conv[0][0].in_channels == 32
    assert model.roi_heads.box_head.fc7.out_features == 64 and model.roi_heads.box_predictor.cls_score.in_features == 64
    assert len(model.roi_heads.mask_head) == 2 and model.roi_heads.mask_predictor.conv5_mask.out_channels == 16
    # four FPN inputs at strides 4..32, as the ResNet layout's C2..C5
    features = model.backbone(torch.zeros(1, 3, 64, 96))
    assert [tuple(f.shape[-2:]) for f in features.values()] == [(16, 24), (8, 12), (4, 6), (2, 3), (1, 2)]
    model.train()
    images, targets = toy_batch()
    loss = sum(model(images, targets).values())
    loss.backward()
    assert torch.isfinite(loss)


@pytest.mark.parametrize("overrides, message", [
    ({"norm": "layer"}, "model.norm='layer' is unknown"),
    ({"norm": "group", "weights": "coco"}, "has BatchNorm statistics"),
    ({"fpn_channels": 0}, "model.fpn_channels must be >= 1"),
    ({"roi_sampling_ratio": -1}, "model.roi_sampling_ratio must be >= 0 (0 = adaptive), got -1"),
    ({"maskness_power": 0.0}, "model.maskness_power must be > 0, got 0.0"),
    ({"mask_threshold": 1.0}, "model.mask_threshold must lie in (0, 1), got 1.0"),
    ({"backbone": "mobilenet_v3_small"}, "model.backbone='mobilenet_v3_small' is unknown"),
])
def test_impossible_profile_knobs_are_named(overrides, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        tiny_config(**overrides).validate()


def test_resnet_stage_groups_are_refused_for_a_mobilenet_backbone():
    from booksegm.training.module import BookSegmModule

    model = vars(tiny_config(backbone="mobilenet_v3_large"))
    model["anchors"] = vars(model["anchors"])
    with pytest.raises(ConfigError, match="name ResNet stages"):
        BookSegmModule(model=model, optim={"stages": [{"layers": "4+", "epochs": 1}]}, class_names=["book"])


@pytest.mark.parametrize("calibrated, drawn_from", [(None, DEFAULT_SCORE_THRESHOLD), (0.3, 0.3)])
def test_validation_pictures_show_detections_from_the_score_predict_would_use(monkeypatch, calibrated, drawn_from):
    """TensorBoard's val/predictions draw from the run's calibrated score, else matterport's 0.7, as predict shows."""
    from booksegm.training import module as module_code

    model = vars(tiny_config())
    model["anchors"] = vars(model["anchors"])
    module = module_code.BookSegmModule(model=model, optim={}, class_names=["book"]).eval()
    module.trainer = pl.Trainer(accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False)
    module.score_threshold = calibrated
    thresholds = []
    monkeypatch.setattr(module_code, "draw_prediction",
                        lambda image, prediction, names, score_threshold=0.5: thresholds.append(score_threshold))
    images, targets = toy_batch()
    module.validation_step((images, [{**t, "image_id": i} for i, t in enumerate(targets)]), 0)
    assert thresholds == [drawn_from, drawn_from]
    assert DEFAULT_SCORE_THRESHOLD == 0.7  # the value conf/predict.yaml and conf/evaluate.yaml promise


@pytest.mark.parametrize("value, loads", [(224, True), (112, False)])
def test_a_checkpoint_saved_with_a_retired_knob_loads_when_it_held_the_value_now_built_in(tmp_path, value, loads):
    cfg = tiny_config()
    torch.save(build_maskrcnn(cfg, 2).state_dict(), tmp_path / "m.pth")
    spec = {"model": {**asdict(cfg), "roi_canonical_scale": value}, "class_names": ["book"], "resize": None}
    (tmp_path / "m.json").write_text(json.dumps({"booksegm": spec}))
    if loads:
        assert load_model(tmp_path / "m.pth").class_names == ["book"]
    else:
        with pytest.raises(ConfigError, match="trained with roi_canonical_scale=112"):
            load_model(tmp_path / "m.pth")
