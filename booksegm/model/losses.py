"""matterport's loss names and LOSS_WEIGHTS over torchvision's loss dict."""

from __future__ import annotations

from booksegm.config import ConfigError
from torch import Tensor

# torchvision key -> matterport name (the TensorBoard tags users know)
LOSS_NAMES = {
    "loss_objectness": "rpn_class_loss",
    "loss_rpn_box_reg": "rpn_bbox_loss",
    "loss_classifier": "mrcnn_class_loss",
    "loss_box_reg": "mrcnn_bbox_loss",
    "loss_mask": "mrcnn_mask_loss",
}


def validate_loss_weights(weights: dict[str, float]) -> dict[str, float]:
    """Complete and check LOSS_WEIGHTS: matterport names only, each >= 0, missing ones 1.0."""
    unknown = set(weights) - set(LOSS_NAMES.values())
    if unknown:
        raise ConfigError(f"train.loss_weights has unknown key(s) {sorted(unknown)}; use {list(LOSS_NAMES.values())}")
    full = {name: float(weights.get(name, 1.0)) for name in LOSS_NAMES.values()}
    negative = {k: v for k, v in full.items() if v < 0}
    if negative:
        raise ConfigError(f"train.loss_weights must be >= 0, got {negative}")
    return full


def weighted_loss(loss_dict: dict[str, Tensor], weights: dict[str, float]) -> tuple[Tensor, dict[str, Tensor]]:
    """The training loss (sum of weight x component) and the components under matterport names."""
    named = {LOSS_NAMES[key]: value for key, value in loss_dict.items()}
    total = sum(weights[name] * value for name, value in named.items())
    return total, named
