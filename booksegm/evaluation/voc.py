"""The matterport Mask_RCNN figure: VOC-style mask AP at one IoU threshold, per image.

matterport's ``utils.compute_matches`` / ``compute_ap``: predictions in descending score order
each take the highest-IoU ground truth that is still free, has the same class and passes the
threshold; AP is the area under the precision envelope at the points where recall changes.
``mean_voc_ap`` is the mean of that per-image AP, as in matterport's evaluation notebooks.
Two deliberate differences: ties in score keep their input order (as COCOeval does), and a
ground truth matched by prediction 0 cannot be matched again (matterport's ``gt_match[j] > 0``
test let it).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from pycocotools import mask as mask_util

from booksegm.evaluation.coco_eval import encode_masks

log = logging.getLogger(__name__)

ArrayLike = np.ndarray | torch.Tensor | Sequence


def to_numpy(x: ArrayLike) -> np.ndarray:
    """A tensor (any device) or array-like as a numpy array."""
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def binary_masks(masks: ArrayLike, threshold: float = 0.5) -> np.ndarray:
    """[N, H, W] or [N, 1, H, W] masks (bool, uint8 or probabilities) -> bool [N, H, W]."""
    masks = to_numpy(masks)
    if masks.ndim == 4:
        masks = masks[:, 0]
    return masks > threshold if np.issubdtype(masks.dtype, np.floating) else masks.astype(bool)


def mask_ious(pred_masks: np.ndarray, gt_masks: np.ndarray) -> np.ndarray:
    """IoU of every (prediction, ground truth) pair of bool masks, [M, N]."""
    if len(pred_masks) == 0 or len(gt_masks) == 0:
        return np.zeros((len(pred_masks), len(gt_masks)))
    # On RLEs: exact, the same IoU COCOeval uses, and no [M, H*W] float matrices in memory.
    ious = mask_util.iou(encode_masks(pred_masks), encode_masks(gt_masks), [0] * len(gt_masks))
    return np.asarray(ious).reshape(len(pred_masks), len(gt_masks))


@dataclass
class Matches:
    """Greedy one-to-one matching of predictions to ground truth at one IoU threshold."""

    pred_match: np.ndarray  # [M] index of the matched ground truth, -1 for a false positive
    gt_match: np.ndarray  # [N] index of the matched prediction, -1 for a missed object
    ious: np.ndarray  # [M, N] IoU of every pair

    @property
    def tp(self) -> int:
        return int((self.pred_match >= 0).sum())

    @property
    def fp(self) -> int:
        return len(self.pred_match) - self.tp

    @property
    def fn(self) -> int:
        return len(self.gt_match) - self.tp

    @property
    def matched_ious(self) -> np.ndarray:
        """IoU of each true positive with its ground truth, in prediction order."""
        hit = np.flatnonzero(self.pred_match >= 0)
        return self.ious[hit, self.pred_match[hit]]


def _score_order(scores: ArrayLike) -> np.ndarray:
    return np.argsort(-to_numpy(scores).astype(np.float64), kind="stable")


def match_instances(
    pred_masks: ArrayLike,
    gt_masks: ArrayLike,
    scores: ArrayLike,
    iou_threshold: float = 0.5,
    pred_labels: ArrayLike | None = None,
    gt_labels: ArrayLike | None = None,
) -> Matches:
    """Match predictions (best score first) to the free ground truth of highest IoU >= threshold.

    Labels are optional: without them every instance is the same class.
    """
    pred = binary_masks(pred_masks)
    gt = binary_masks(gt_masks)
    ious = mask_ious(pred, gt)
    pred_labels = np.zeros(len(pred), int) if pred_labels is None else to_numpy(pred_labels)
    gt_labels = np.zeros(len(gt), int) if gt_labels is None else to_numpy(gt_labels)

    pred_match = np.full(len(pred), -1)
    gt_match = np.full(len(gt), -1)
    for i in _score_order(scores):
        for j in np.argsort(-ious[i], kind="stable"):
            if ious[i, j] < iou_threshold:
                break  # the rest overlap even less
            if gt_match[j] < 0 and pred_labels[i] == gt_labels[j]:
                pred_match[i], gt_match[j] = j, i
                break
    return Matches(pred_match, gt_match, ious)


def voc_ap(hits: np.ndarray, num_gt: int) -> tuple[float, np.ndarray, np.ndarray]:
    """AP from the true-positive flags of detections sorted by descending score.

    Returns (AP, precisions, recalls), the curves padded with matterport's end points.
    """
    tp = np.cumsum(hits)
    precisions = np.concatenate([[0.0], tp / np.arange(1, len(hits) + 1), [0.0]])
    recalls = np.concatenate([[0.0], tp / num_gt, [1.0]])
    # Precision at recall r becomes the best precision at any recall >= r (the VOC envelope).
    precisions = np.maximum.accumulate(precisions[::-1])[::-1]
    steps = np.flatnonzero(recalls[1:] != recalls[:-1]) + 1
    ap = float(np.sum((recalls[steps] - recalls[steps - 1]) * precisions[steps]))
    return ap, precisions, recalls


def compute_ap(
    pred_masks: ArrayLike,
    gt_masks: ArrayLike,
    scores: ArrayLike,
    iou_threshold: float = 0.5,
    pred_labels: ArrayLike | None = None,
    gt_labels: ArrayLike | None = None,
) -> tuple[float, np.ndarray, np.ndarray]:
    """matterport's per-image ``compute_ap`` on masks: (AP, precisions, recalls).

    AP is NaN for an image without ground truth (recall is undefined there).
    """
    matches = match_instances(pred_masks, gt_masks, scores, iou_threshold, pred_labels, gt_labels)
    if len(matches.gt_match) == 0:
        return float("nan"), np.empty(0), np.empty(0)
    hits = matches.pred_match[_score_order(scores)] >= 0
    return voc_ap(hits, len(matches.gt_match))


def mean_voc_ap(predictions: list[dict], targets: list[dict], iou_threshold: float = 0.5) -> float:
    """Mean over images of the per-image mask AP; images without ground truth are left out."""
    aps = []
    for pred, target in zip(predictions, targets, strict=True):
        ap, _, _ = compute_ap(
            pred["masks"], target["masks"], pred["scores"], iou_threshold,
            pred["labels"], target["labels"],
        )
        if not np.isnan(ap):
            aps.append(ap)
    if not aps:
        log.warning("no image with ground truth among %d: VOC AP is undefined (NaN)", len(targets))
        return float("nan")
    return float(np.mean(aps))
