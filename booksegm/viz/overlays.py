"""Pictures of predictions: instance overlays (captioned or numbered), matterport's colour splash, image
grids, a validation image's predictions.

Drawing uses numpy and OpenCV only, so overlays are cheap enough for every validation step.
"""

from __future__ import annotations

import colorsys
import math
from collections.abc import Sequence

import cv2
import numpy as np
import torch

from booksegm.evaluation.voc import ArrayLike, binary_masks, to_numpy


def palette(n: int) -> np.ndarray:
    """n distinct, saturated RGB colours, the same on every call (golden-ratio hue steps)."""
    hues = (np.arange(n) * 0.618033988749895) % 1.0
    return np.array(
        [[round(255 * c) for c in colorsys.hsv_to_rgb(h, 0.85, 0.95)] for h in hues], np.uint8
    ).reshape(n, 3)


def _check(image: np.ndarray, masks: np.ndarray) -> None:
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image must be uint8 HxWx3, got {image.dtype} {image.shape}")
    if masks.shape[1:] != image.shape[:2]:
        raise ValueError(f"masks are {masks.shape[1:]}, image is {image.shape[:2]}")


def draw_instances(
    image: np.ndarray,
    masks: ArrayLike,
    boxes: ArrayLike | None = None,
    scores: ArrayLike | None = None,
    labels: ArrayLike | None = None,
    class_names: Sequence[str] | None = None,
    alpha: float = 0.45,
) -> np.ndarray:
    """Overlay instances on a copy of ``image``: translucent fills, outlines, boxes, captions.

    ``masks`` may be bool/uint8 or probabilities ([N, H, W] or [N, 1, H, W]); boxes are xyxy
    pixels; ``class_names[i]`` names label ``i + 1``. Pixels away from the masks, boxes and
    captions are left untouched.
    """
    masks = binary_masks(masks)
    _check(image, masks)
    out = image.copy()
    colors = palette(len(masks))
    thickness = max(1, round(min(image.shape[:2]) / 400))
    font_scale = max(0.35, min(image.shape[:2]) / 1000)

    for i, mask in enumerate(masks):
        color = colors[i]
        out[mask] = np.round((1 - alpha) * out[mask] + alpha * color).astype(np.uint8)
        contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        cv2.drawContours(out, contours, -1, color.tolist(), thickness)

    # Boxes and captions after all fills, so no later fill covers an earlier caption.
    for i, mask in enumerate(masks):
        color = colors[i].tolist()
        if boxes is not None:
            x1, y1, x2, y2 = (int(round(v)) for v in to_numpy(boxes)[i])
            cv2.rectangle(out, (x1, y1), (x2, y2), color, thickness)
            anchor = (x1, y1)
        elif mask.any():
            ys, xs = np.nonzero(mask)
            anchor = (int(xs.min()), int(ys.min()))
        else:
            continue  # an empty mask and no box: nowhere to put a caption
        caption = _caption(i, scores, labels, class_names)
        if caption:
            _put_text(out, caption, anchor, color, font_scale)
    return out


def draw_numbered(image: np.ndarray, masks: ArrayLike, numbers: Sequence[str],
                  anchors: Sequence[tuple[float, float]]) -> np.ndarray:
    """``draw_instances``' fills and outlines, and each instance's number on a tag centred at its anchor."""
    out = draw_instances(image, masks)
    scale = max(0.35, min(image.shape[:2]) / 1000)
    for number, (x, y), color in zip(numbers, anchors, palette(len(numbers)), strict=True):
        (w, h), baseline = cv2.getTextSize(number, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
        _put_text(out, number, (round(x - w / 2), round(y + (h + baseline + 2) / 2)), color.tolist(), scale)
    return out


def _caption(i, scores, labels, class_names) -> str:
    parts = []
    if labels is not None:
        label = int(to_numpy(labels)[i])
        named = class_names is not None and 1 <= label <= len(class_names)
        parts.append(class_names[label - 1] if named else str(label))
    if scores is not None:
        parts.append(f"{float(to_numpy(scores)[i]):.2f}")
    return " ".join(parts)


def _put_text(img: np.ndarray, text: str, anchor: tuple[int, int], color, scale: float) -> None:
    """Caption on a filled tag of the instance colour, above ``anchor`` (inside if no room)."""
    font = cv2.FONT_HERSHEY_SIMPLEX
    (w, h), baseline = cv2.getTextSize(text, font, scale, 1)
    tag_h = h + baseline + 2
    x = min(max(anchor[0], 0), max(img.shape[1] - w - 2, 0))
    y = anchor[1] - tag_h if anchor[1] >= tag_h else anchor[1]
    cv2.rectangle(img, (x, y), (x + w + 2, y + tag_h), color, cv2.FILLED)
    # Dark text on light colours, white on dark ones (Rec. 601 luma).
    ink = (0, 0, 0) if 0.299 * color[0] + 0.587 * color[1] + 0.114 * color[2] > 140 else (255, 255, 255)
    cv2.putText(img, text, (x + 1, y + h + 1), font, scale, ink, 1, cv2.LINE_AA)


def color_splash(image: np.ndarray, masks: ArrayLike) -> np.ndarray:
    """matterport's splash: pixels inside any mask keep their colour, the rest turn gray."""
    masks = binary_masks(masks)
    _check(image, masks)
    gray = cv2.cvtColor(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY), cv2.COLOR_GRAY2RGB)
    inside = masks.any(0)[..., None]
    return np.where(inside, image, gray)


def make_grid(images: Sequence[np.ndarray], ncols: int = 4, pad: int = 2) -> np.ndarray:
    """Tile HxWx3 uint8 images row by row into one picture, each cell as large as the largest."""
    if not images:
        raise ValueError("make_grid needs at least one image")
    ncols = max(1, min(ncols, len(images)))
    nrows = math.ceil(len(images) / ncols)
    cell_h = max(im.shape[0] for im in images)
    cell_w = max(im.shape[1] for im in images)
    grid = np.full(
        (nrows * cell_h + (nrows + 1) * pad, ncols * cell_w + (ncols + 1) * pad, 3), 255, np.uint8
    )
    for k, im in enumerate(images):
        r, c = divmod(k, ncols)
        y, x = pad + r * (cell_h + pad), pad + c * (cell_w + pad)
        grid[y : y + im.shape[0], x : x + im.shape[1]] = im
    return grid


@torch.no_grad()
def draw_prediction(image: torch.Tensor, prediction: dict, class_names: list[str], score_threshold: float):
    """One validation image with its confident predicted masks drawn on it (uint8 HWC)."""
    keep = prediction["scores"] >= score_threshold
    picture = (image.detach().float().cpu().permute(1, 2, 0).numpy() * 255).clip(0, 255).astype(np.uint8)
    return draw_instances(
        picture,
        (prediction["masks"][keep, 0] >= 0.5).cpu().numpy(),
        boxes=prediction["boxes"][keep].cpu().numpy(),
        scores=prediction["scores"][keep].cpu().numpy(),
        labels=prediction["labels"][keep].cpu().numpy(),
        class_names=class_names,
    )
