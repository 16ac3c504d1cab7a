"""Inference plumbing shared by evaluate, predict, export and the notebooks.

- :func:`load_model`: a Mask R-CNN from a Lightning checkpoint (``.ckpt``, with the training
  run's config when it still sits in its run folder) or from an exported state dict (``.pth``
  with the ``.json`` that ``python -m booksegm.export format=state_dict`` writes beside it).
- :func:`prepare_image` / :func:`restore_detections`: the model never resizes (see
  ``booksegm.model.build.PreResizedTransform``), so a photo is resized as validation resized it,
  and the boxes and masks that come back are mapped onto the photo again.
- The pixel budget: no caller runs the model on an input longer than ``max_side`` (default
  :data:`DEFAULT_MAX_SIDE`). A photo that would be is scaled down first, with one log line per
  photo size, and its detections come back at the photo's own size. Checkpoints trained with
  ``resize.mode=none`` would otherwise run a 6000x4000 photo at full size: past 11 GB.
- :func:`predict_views`: a photo's detections with each test-time view's apart, for ``booksegm
  data suggest``, which measures how much the views disagree, and what the backbone sees in the
  photo, by which suggest tells kinds of photo apart.
"""

from __future__ import annotations

import functools
import json
import logging
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TypeVar

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException
from torchvision.models.detection import MaskRCNN

from booksegm.config import ConfigError, as_plain, to_dataclass
from booksegm.data.dataset import to_tensor
from booksegm.data.resize import ResizeConfig, resize_image_and_polygons
from booksegm.model.build import ModelConfig, build_maskrcnn, without_retired_keys
from booksegm.model.bundled import model_file
from booksegm.model.checkpoint_file import (
    RUN_CONFIG_KEY,
    SCORE_THRESHOLD_KEY,
    CheckpointError,
    display_threshold,
    read_torch_file,
)
from booksegm.model.tta import TTAMaskRCNN, View, merge_views, tta_views, view_detections

log = logging.getLogger(__name__)
T = TypeVar("T")

# The views a model without test-time augmentation is compared in (predict_views): as given, mirrored.
MIRRORED_VIEWS: list[View] = tta_views([1.0], hflip=True)
SPEC_SECTION = "booksegm"  # the exported JSON's section that booksegm itself reads
# The longest side of any model input, px: torchvision's max_size for its COCO Mask R-CNN, above
# resize.mode=square's 1024. The CPU model's four views then peak at 4.5 GB whatever the photo's size;
# at full size a 12 MP photo took 6.7 GB and was still growing (docs/reliability.md).
DEFAULT_MAX_SIDE = 1333


@dataclass
class LoadedModel:
    model: MaskRCNN  # in eval mode, on the requested device
    class_names: list[str]  # class_names[i] names label i + 1
    model_cfg: ModelConfig
    resize: ResizeConfig | None  # how validation resized images (None: the file does not say)
    run_config: DictConfig | None  # the training run's config (in the checkpoint, or beside it for older ones)
    source: Path
    score_threshold: float | None = None  # the F1-best score on the run's validation, when the file has it

    def display_threshold(self, requested: float | None) -> float:
        """The confidence threshold for showing detections: the one asked for, else the calibrated one."""
        return display_threshold(requested, self.score_threshold)

    def spec(self) -> dict:
        """What booksegm needs besides the weights to rebuild this model (the JSON's own section),
        with the detection limits in force (``set_detection_limits``)."""
        limiter = self.model if isinstance(self.model, TTAMaskRCNN) else self.model.roi_heads  # set_detection_limits
        limits = {"box_score_thresh": limiter.score_thresh, "box_detections_per_img": limiter.detections_per_img}
        return {
            "model": {**asdict(self.model_cfg), **limits},
            "class_names": self.class_names,
            "resize": asdict(self.resize) if self.resize is not None else None,
            SCORE_THRESHOLD_KEY: self.score_threshold,
        }


def read_settings(schema: type[T], cfg: DictConfig) -> T:
    """A command's own top-level knobs (the fields of ``schema``), interpolations resolved, as a
    checked dataclass: a missing ``???`` value or a wrong type is a ConfigError."""
    try:
        values = {k: as_plain(cfg[k]) for k in schema.__dataclass_fields__ if k in cfg}
    except OmegaConfBaseException as err:
        raise ConfigError(str(err).splitlines()[0]) from None
    return to_dataclass(schema, values)


def select_device(name: str) -> torch.device:
    """``auto`` picks CUDA when there is a GPU; anything else is a torch device string."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"device={name!r} is not a device: use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device={name!r}, but this machine has no CUDA GPU: use device=cpu or auto")
    return device


def load_model(path: str | Path | None, device: str | torch.device = "cpu",
               test_time_augmentation: bool = True) -> LoadedModel:
    """The model stored at ``path`` (Lightning checkpoint or exported state dict; a bundled model's
    name, or None for the default bundled model), in eval mode; one view of each image, whatever
    ``model.tta_*`` say, without ``test_time_augmentation``."""
    path = model_file(path)
    data = read_torch_file(path)
    if "state_dict" in data and "hyper_parameters" in data:  # a Lightning checkpoint
        hparams = data["hyper_parameters"]
        state = {k.removeprefix("model."): v for k, v in data["state_dict"].items() if k.startswith("model.")}
        spec = {"model": hparams.get("model"), "class_names": hparams.get("class_names"),
                SCORE_THRESHOLD_KEY: data.get(SCORE_THRESHOLD_KEY)}
        run_config = read_run_config(path, data)
        resize = validation_resize(run_config) if run_config is not None else None
    else:
        state, spec, run_config = data, read_spec(path), None
        resize = to_dataclass(ResizeConfig, spec["resize"], f"{path}: resize") if spec.get("resize") else None
    if not isinstance(spec.get("model"), dict) or not spec.get("class_names"):
        raise CheckpointError(f"{path}: no model config or class names in it; was it written by booksegm?")
    model_cfg = to_dataclass(ModelConfig, without_retired_keys(spec["model"], str(path)), f"{path}: model")
    model = build_maskrcnn(model_cfg, 1 + len(spec["class_names"]), test_time_augmentation)
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise CheckpointError(f"{path}: the weights do not fit its model config: {str(err).splitlines()[0]}") from None
    if resize is not None:
        resize.validate(training=False)
    threshold = spec.get(SCORE_THRESHOLD_KEY)
    return LoadedModel(
        model.eval().to(device), list(spec["class_names"]), model_cfg, resize, run_config, path,
        float(threshold) if isinstance(threshold, (int, float)) else None,
    )


def spec_path(weights: Path) -> Path:
    """The JSON that describes an exported state dict: the same name with ``.json``."""
    return weights.with_suffix(".json")


def read_spec(weights: Path) -> dict:
    path = spec_path(weights)
    try:
        spec = json.loads(path.read_text(encoding="utf-8"))[SPEC_SECTION]
    except FileNotFoundError:
        raise CheckpointError(
            f"{weights}: a plain state dict needs its model config {path.name} beside it "
            "(python -m booksegm.export format=state_dict writes both)"
        ) from None
    except (ValueError, KeyError, TypeError) as err:
        raise CheckpointError(f"{path}: not a booksegm model config ({err})") from None
    if not isinstance(spec, dict):
        raise CheckpointError(f"{path}: '{SPEC_SECTION}' must be an object")
    return spec


def read_run_config(ckpt: Path, checkpoint: dict) -> DictConfig | None:
    """The config (unresolved) of the run a Lightning checkpoint came from: carried in the file
    since booksegm wrote it there, else ``<run>/.hydra/config.yaml`` for ``<run>/checkpoints/x.ckpt``
    (older checkpoints); None when neither has it."""
    if checkpoint.get(RUN_CONFIG_KEY) is not None:
        return OmegaConf.create(checkpoint[RUN_CONFIG_KEY])
    config = ckpt.resolve().parent.parent / ".hydra" / "config.yaml"
    if not config.is_file():
        log.info("%s: no run config in it or at %s", ckpt, config)
        return None
    return OmegaConf.load(config)


def validation_resize(run_config: DictConfig) -> ResizeConfig:
    """How the run resized validation images: ``data.val_resize``, else ``data.resize``."""
    data = run_config.data
    section = data.val_resize if data.get("val_resize") is not None else data.resize
    return to_dataclass(ResizeConfig, section, "data.val_resize")


def set_detection_limits(model: MaskRCNN, score_threshold: float | None, max_detections: int | None) -> None:
    """DETECTION_MIN_CONFIDENCE and DETECTION_MAX_INSTANCES; applied before NMS, as in matterport
    (and to the final score too, when maskness rescores it: ``PreResizedTransform``)."""
    if isinstance(model, TTAMaskRCNN):  # the views keep the model's floor: the limits apply to their merge
        if score_threshold is not None:
            model.score_thresh = float(score_threshold)
        if max_detections is not None:
            model.detections_per_img = int(max_detections)
        return
    if score_threshold is not None:
        model.roi_heads.score_thresh = float(score_threshold)
        model.transform.score_thresh = float(score_threshold)
    if max_detections is not None:
        model.roi_heads.detections_per_img = int(max_detections)


def with_mask_threshold(loaded: LoadedModel, threshold: float | None) -> LoadedModel:
    """``loaded`` cutting its masks at ``threshold`` from now on (its ``model.mask_threshold``, also in
    the files exported from it); None: where it was trained or bundled to cut them."""
    if threshold is None:
        return loaded
    loaded.model.transform.mask_threshold = float(threshold)
    return replace(loaded, model_cfg=replace(loaded.model_cfg, mask_threshold=float(threshold)))


@dataclass(frozen=True)
class Placement:
    """Where a photo lies in the model input: input = photo * scale + offset, per axis (x, y)."""

    height: int  # the photo's size
    width: int
    scale: tuple[float, float]
    offset: tuple[float, float]

    def crop(self) -> tuple[slice, slice]:
        """The rows and columns of the model input that hold the photo (the rest is padding)."""
        x0, y0 = round(self.offset[0]), round(self.offset[1])
        return slice(y0, y0 + round(self.height * self.scale[1])), slice(x0, x0 + round(self.width * self.scale[0]))


def capped_size(height: int, width: int, max_side: int) -> tuple[int, int] | None:
    """(height, width) scaled down so the longest side is ``max_side``; None when it fits already."""
    longest = max(height, width)
    if longest <= max_side:
        return None
    return max(1, round(height * max_side / longest)), max(1, round(width * max_side / longest))


@functools.cache  # once per size: the frames of a video would repeat it
def note_scaled_down(size: tuple[int, int], capped: tuple[int, int], max_side: int) -> None:
    log.info("a %dx%d model input runs at %dx%d (max_side=%d bounds memory); detections come back at the "
             "photo's own size", size[1], size[0], capped[1], capped[0], max_side)


def prepare_image(image: np.ndarray, resize: ResizeConfig,
                  max_side: int = DEFAULT_MAX_SIDE) -> tuple[torch.Tensor, Placement]:
    """An (H, W, 3) uint8 photo -> the model's (3, h, w) float input, sized as in validation, then
    scaled down to ``max_side`` if longer."""
    height, width = image.shape[:2]
    # The photo's corners, moved by the same resize as its pixels, give the exact map between them.
    corners = np.array([[0, 0], [width, height]], dtype=np.float32)
    resized, (moved,), _ = resize_image_and_polygons(image, [corners], resize)
    capped = capped_size(*resized.shape[:2], max_side)
    if capped is not None:
        note_scaled_down(resized.shape[:2], capped, max_side)
        moved = moved * np.array([capped[1] / resized.shape[1], capped[0] / resized.shape[0]], dtype=np.float32)
        resized = cv2.resize(resized, (capped[1], capped[0]), interpolation=cv2.INTER_AREA)
    scale = (moved[1] - moved[0]) / corners[1]
    placement = Placement(height, width, (float(scale[0]), float(scale[1])), (float(moved[0, 0]), float(moved[0, 1])))
    return to_tensor(resized), placement


@dataclass
class Detections:
    """One image's predictions on the photo itself, best score first."""

    boxes: np.ndarray  # (N, 4) float32 xyxy, photo pixels
    scores: np.ndarray  # (N,) float32
    labels: np.ndarray  # (N,) int64, 1-based
    masks: np.ndarray  # (N, H, W) bool, photo size

    def __len__(self) -> int:
        return len(self.scores)


def restore_detections(
    prediction: dict[str, torch.Tensor], placement: Placement, mask_threshold: float = 0.5
) -> Detections:
    """Map a model output (model-input pixels) back onto the photo ``placement`` describes."""
    scale = np.array(placement.scale * 2, dtype=np.float32)
    offset = np.array(placement.offset * 2, dtype=np.float32)
    boxes = (prediction["boxes"].detach().cpu().numpy() - offset) / scale
    boxes = np.clip(boxes, 0, [placement.width, placement.height] * 2).astype(np.float32)
    rows, cols = placement.crop()
    probabilities = prediction["masks"].detach().cpu().numpy()[:, 0, rows, cols]
    size = (placement.width, placement.height)
    # one instance at a time: N full-size float masks of a large photo would not fit in memory
    masks = np.zeros((len(probabilities), placement.height, placement.width), dtype=bool)
    for i, probability in enumerate(probabilities):
        masks[i] = cv2.resize(probability, size, interpolation=cv2.INTER_LINEAR) > mask_threshold
    return Detections(
        boxes=boxes,
        scores=prediction["scores"].detach().cpu().numpy().astype(np.float32),
        labels=prediction["labels"].detach().cpu().numpy().astype(np.int64),
        masks=masks,
    )


@torch.no_grad()
def predict_images(loaded: LoadedModel, images: list[np.ndarray], resize: ResizeConfig,
                   max_side: int = DEFAULT_MAX_SIDE) -> list[Detections]:
    """Detections on each photo of a batch (RGB uint8), resized for the model and mapped back."""
    device = next(loaded.model.parameters()).device
    prepared = [prepare_image(image, resize, max_side) for image in images]
    outputs = loaded.model([tensor.to(device) for tensor, _ in prepared])
    return [restore_detections(output, placement) for output, (_, placement) in zip(outputs, prepared, strict=True)]


@torch.no_grad()
def predict_inputs(loaded: LoadedModel, images: list[torch.Tensor],
                   max_side: int = DEFAULT_MAX_SIDE) -> list[dict[str, torch.Tensor]]:
    """The model's outputs (torchvision's format, on the CPU) for (3, H, W) inputs already sized as
    validation sized them, as evaluate feeds them; an input longer than ``max_side`` runs scaled down
    and its boxes and masks (then boolean) come back in its own frame."""
    device = next(loaded.model.parameters()).device
    inputs, placements = [], []
    for image in images:
        height, width = image.shape[-2:]
        capped = capped_size(height, width, max_side)
        placement = None
        if capped is not None:
            note_scaled_down((height, width), capped, max_side)
            image = F.interpolate(image[None], size=capped, mode="bilinear", antialias=True, align_corners=False)[0]
            placement = Placement(height, width, (capped[1] / width, capped[0] / height), (0.0, 0.0))
        inputs.append(image.to(device))
        placements.append(placement)
    results = []
    for output, placement in zip(loaded.model(inputs), placements, strict=True):
        output = {k: v.cpu() for k, v in output.items()}
        if placement is not None:
            restored = restore_detections(output, placement)
            output = {"boxes": torch.from_numpy(restored.boxes), "scores": torch.from_numpy(restored.scores),
                      "labels": torch.from_numpy(restored.labels), "masks": torch.from_numpy(restored.masks)[:, None]}
        results.append(output)
    return results


@dataclass
class ViewedPhoto:
    """One photo as the model sees it: its detections, and each view's apart."""

    detections: Detections  # those scoring at least ``shown_from``, on the photo
    merged: dict[str, torch.Tensor]  # every detection down to the model's score floor, in the model input's frame
    views: list[dict[str, torch.Tensor]]  # each view's, the input as given first, in the same frame
    features: np.ndarray  # the backbone's feature maps of the input as given, pooled (pooled_features)


@torch.no_grad()
def predict_views(loaded: LoadedModel, image: np.ndarray, resize: ResizeConfig, shown_from: float,
                  max_side: int = DEFAULT_MAX_SIDE) -> ViewedPhoto:
    """A photo (RGB uint8) in the model's own test-time views, or as given and mirrored for a model
    of one view; its detections are what the model gives (the views merged, or the view as given).
    The model's detection limits are left as loaded, so the low scores are there too."""
    model = loaded.model
    tensor, placement = prepare_image(image, resize, max_side)
    merges = isinstance(model, TTAMaskRCNN)
    device = next(model.parameters()).device
    pooled = []  # the backbone's output for the first view, the input as given, pooled as it runs

    def pool_first(module, inputs, levels):
        if not pooled:
            pooled.append(pooled_features(levels))

    hook = model.backbone.register_forward_hook(pool_first)
    try:
        per_view = view_detections(model, [tensor.to(device)], model.views if merges else MIRRORED_VIEWS)
    finally:
        hook.remove()
    views = [{key: value.cpu() for key, value in view.items()} for (view,) in per_view]
    merged = (merge_views(views, model.roi_heads.nms_thresh, model.score_thresh, model.detections_per_img)
              if merges else views[0])
    shown = {key: value[merged["scores"] >= shown_from] for key, value in merged.items()}
    return ViewedPhoto(restore_detections(shown, placement), merged, views, pooled[0])


def pooled_features(levels: dict[str, torch.Tensor]) -> np.ndarray:
    """The first image of a backbone's output as one vector: each feature map averaged over the
    image and scaled to unit length (so that every level counts alike), joined, unit length."""
    vectors = [F.normalize(level[0].mean((1, 2)), dim=0) for level in levels.values()]
    return (torch.cat(vectors) / len(vectors) ** 0.5).cpu().numpy()
