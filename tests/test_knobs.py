"""Every matterport knob reaches what it claims to (tests/test_model.py covers the RPN and ROI-head ones):
config files, normalisation, TRAIN_BN, backbones and the v2 layout, optimizer and LR schedule."""

from __future__ import annotations

import re

import pytest
import torch
from support import CONF, compose_config, tiny_config, toy_batch
from torch import nn
from torchvision.models.detection import MaskRCNN_ResNet50_FPN_V2_Weights, maskrcnn_resnet50_fpn_v2
from torchvision.models.detection.faster_rcnn import FastRCNNConvFCHead, TwoMLPHead
from torchvision.ops.misc import FrozenBatchNorm2d

from booksegm.config import ConfigError, to_dataclass
from booksegm.model import weights
from booksegm.model.build import AnchorConfig, ModelConfig, build_maskrcnn, is_torchvision_v1_layout
from booksegm.training.module import OptimConfig, build_optimizer, lr_factor


@pytest.mark.parametrize("path", ["model/maskrcnn.yaml", "train/default.yaml"])
def test_every_config_value_is_commented(path):
    """Each knob is a config value with its matterport name (or meaning) in a comment."""
    for line in (CONF / path).read_text().splitlines():
        if re.match(r"^\s*\w+:\s*\S", line) and not line.lstrip().startswith("#"):
            assert "#" in line, f"{path}: no comment on {line.strip()!r}"


def test_model_and_train_files_hold_every_dataclass_field():
    cfg = compose_config("model=maskrcnn")
    assert set(cfg.model) == set(ModelConfig.__dataclass_fields__)
    assert set(cfg.train) == set(OptimConfig.__dataclass_fields__)


def test_composed_model_overrides_reach_the_built_model():
    cfg = compose_config(
        "model.backbone=resnet18", "model.anchors.sizes=[8,16,32,64,128]", "model.anchors.ratios=[0.25,1]",
        "model.rpn_nms_thresh=0.65", "model.box_batch_size_per_image=48", "model.box_detections_per_img=33",
        "model.image_mean=[0.5,0.5,0.5]", "model.mask_pool_size=7", "model.roi_sampling_ratio=0",
    )
    model = build_maskrcnn(to_dataclass(ModelConfig, cfg.model, "model"), num_classes=2)
    assert model.rpn.anchor_generator.sizes[0] == (8,)
    assert model.rpn.anchor_generator.aspect_ratios[0] == pytest.approx((4.0, 1.0))
    assert model.rpn.nms_thresh == 0.65
    assert model.roi_heads.fg_bg_sampler.batch_size_per_image == 48
    assert model.roi_heads.detections_per_img == 33
    assert model.transform.image_mean == [0.5, 0.5, 0.5]
    assert model.roi_heads.mask_roi_pool.output_size == (7, 7)
    assert model.roi_heads.box_roi_pool.sampling_ratio == model.roi_heads.mask_roi_pool.sampling_ratio == 0


@pytest.mark.parametrize("change", [{}, {"maskness_scoring": True}, {"mask_threshold": 0.3}, {"roi_sampling_ratio": 1},
                                    {"fpn_channels": 128}, {"tta_hflip": True}])
def test_only_torchvisions_own_recipe_counts_as_its_v1_layout(change):
    """export's torchvision-only recipe rebuilds the model with maskrcnn_resnet50_fpn: any other knob value breaks it."""
    assert is_torchvision_v1_layout(ModelConfig(**change)) is (not change)


def test_image_mean_and_std_normalise_the_input():
    model = build_maskrcnn(tiny_config(image_mean=[0.1, 0.2, 0.3], image_std=[0.5, 0.25, 1.0]), num_classes=2)
    image = torch.ones(3, 8, 8)
    normalised = model.transform.normalize(image)
    assert normalised[:, 0, 0].tolist() == pytest.approx([1.8, 3.2, 0.7])


@pytest.mark.parametrize(
    "weights_spec, train_bn, norm",
    [("imagenet", False, FrozenBatchNorm2d), ("imagenet", True, nn.BatchNorm2d), ("none", False, nn.BatchNorm2d)],
)
def test_train_bn_decides_the_backbone_batchnorm(weights_spec, train_bn, norm):
    model = build_maskrcnn(tiny_config(weights=weights_spec, train_bn=train_bn), num_classes=2)
    body_norms = {type(m) for m in model.backbone.body.modules() if isinstance(m, (nn.BatchNorm2d, FrozenBatchNorm2d))}
    assert body_norms == {norm}


@pytest.mark.parametrize("backbone, blocks", [("resnet18", [2, 2, 2, 2]), ("resnet34", [3, 4, 6, 3])])
def test_backbone_name_picks_the_resnet(backbone, blocks):
    body = build_maskrcnn(tiny_config(backbone=backbone), num_classes=2).backbone.body
    assert [len(getattr(body, f"layer{i}")) for i in range(1, 5)] == blocks


def test_resnet50_v2_has_torchvisions_v2_layout_with_our_anchors_and_pool_size():
    cfg = ModelConfig(backbone="resnet50_v2", weights="coco", anchors=AnchorConfig(ratios=[0.25, 0.5, 1.0, 2.0]),
                      pool_size=5)
    model = build_maskrcnn(cfg, num_classes=2)
    assert len(model.rpn.head.conv) == 2  # conv_depth=2
    assert model.rpn.head.cls_logits.out_channels == 4
    assert isinstance(model.roi_heads.box_head, FastRCNNConvFCHead)
    assert model.roi_heads.box_head[5].in_features == 256 * 5 * 5
    assert isinstance(model.roi_heads.mask_head[0][1], nn.BatchNorm2d)
    assert isinstance(model.backbone.fpn.layer_blocks[0][1], nn.BatchNorm2d)
    assert isinstance(build_maskrcnn(tiny_config(), num_classes=2).roi_heads.box_head, TwoMLPHead)
    # the forward pass and losses work at a small size
    model.train()
    images, targets = toy_batch()
    assert set(model(images, targets)) == {"loss_objectness", "loss_rpn_box_reg", "loss_classifier",
                                           "loss_box_reg", "loss_mask"}


def test_resnet50_v2_loads_torchvisions_v2_coco_weights(monkeypatch):
    torch.manual_seed(0)
    coco = maskrcnn_resnet50_fpn_v2(weights=None, weights_backbone=None, num_classes=91).state_dict()
    asked = []
    monkeypatch.setattr(weights, "fetch_state_dict", lambda enum: asked.append(enum) or coco)
    model = build_maskrcnn(ModelConfig(backbone="resnet50_v2", weights="coco"), num_classes=2)
    weights.load_initial_weights(model, "coco", "resnet50_v2")
    assert asked == [MaskRCNN_ResNet50_FPN_V2_Weights.COCO_V1]
    state = model.state_dict()
    for key in ("backbone.body.layer4.2.conv3.weight", "backbone.fpn.layer_blocks.0.1.running_var",
                "rpn.head.conv.1.0.weight", "roi_heads.box_head.5.weight", "roi_heads.mask_head.3.1.weight"):
        assert torch.equal(state[key], coco[key]), key
    assert state["roi_heads.box_predictor.cls_score.weight"].shape[0] == 2


def test_coco_weights_for_a_backbone_without_them_fail_in_one_line():
    with pytest.raises(ConfigError, match="model.weights=coco exists for backbones"):
        weights.load_initial_weights(build_maskrcnn(tiny_config(), num_classes=2), "coco", "resnet18")


# -- optimizer and schedule ---------------------------------------------------------------------

@pytest.mark.parametrize("name, kind", [("sgd", torch.optim.SGD), ("adam", torch.optim.Adam), ("adamw", torch.optim.AdamW)])
def test_optimizer_choice_lr_momentum_and_weight_decay(name, kind):
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    model[1].weight.requires_grad_(False)  # frozen parameters stay out of the optimizer
    cfg = OptimConfig(optimizer=name, momentum=0.8, weight_decay=0.01)
    optimizer = build_optimizer(model, cfg, lr=0.003)
    assert type(optimizer) is kind
    decayed, not_decayed = optimizer.param_groups
    assert decayed["params"] == [model[0].weight] and decayed["weight_decay"] == 0.01
    assert not_decayed["params"] == [model[0].bias, model[1].bias] and not_decayed["weight_decay"] == 0.0
    assert decayed["lr"] == 0.003
    if name == "sgd":
        assert decayed["momentum"] == 0.8


def test_decay_norm_and_bias_puts_every_parameter_under_weight_decay():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    (group,) = build_optimizer(model, OptimConfig(weight_decay=0.05, decay_norm_and_bias=True), lr=0.1).param_groups
    assert len(group["params"]) == 4 and group["weight_decay"] == 0.05


def test_lr_schedule_warms_up_then_follows_the_schedule():
    cfg = OptimConfig(warmup_steps=10, warmup_factor=0.1, schedule="step", step_milestones=[0.5], step_gamma=0.1)
    assert lr_factor(0, 110, cfg) == pytest.approx(0.1)
    assert lr_factor(5, 110, cfg) == pytest.approx(0.55)
    assert lr_factor(10, 110, cfg) == 1.0 and lr_factor(59, 110, cfg) == 1.0
    assert lr_factor(60, 110, cfg) == pytest.approx(0.1)
    cosine = OptimConfig(warmup_steps=0, schedule="cosine")
    assert lr_factor(50, 100, cosine) == pytest.approx(0.5) and lr_factor(100, 100, cosine) == pytest.approx(0.0)
    assert lr_factor(99, 100, OptimConfig(warmup_steps=0, schedule="constant")) == 1.0


def test_gradient_clipping_defaults_to_matterports_norm_5():
    cfg = compose_config()
    assert cfg.trainer.gradient_clip_val == 5.0 and cfg.trainer.gradient_clip_algorithm == "norm"


@pytest.mark.parametrize(
    "values, message",
    [({"optimizer": "rmsprop"}, "train.optimizer='rmsprop' is unknown"),
     ({"schedule": "linear"}, "train.schedule='linear' is unknown"),
     ({"lr": 0.0}, "train.lr must be > 0")],
)
def test_invalid_optimizer_values_fail_in_one_line(values, message):
    with pytest.raises(ConfigError, match=message) as info:
        to_dataclass(OptimConfig, values, "train").validate()
    assert "\n" not in str(info.value)
