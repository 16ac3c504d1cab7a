"""How unsure a model is about a photo, from its predictions alone: which unlabelled photos to label next.

Three criteria, each a number in [0, 1] (1: most unsure), from the detections of one photo:

- ``near_threshold``: the mean over every detection the model keeps (down to its score floor) of
  ``1 - |s - t| / (t or 1 - t)``, the score's closeness to the threshold ``t`` the detections are
  shown at (1 at ``t``, 0 at a score of 0 or 1): books the model can neither keep nor drop.
- ``view_disagreement``: the photo's views (as given, mirrored, enlarged: ``booksegm.model.tta``)
  each compared with the first: ``1 - the mean best mask IoU`` of every shown detection of one
  view against the other's, averaged over the views. A book the views outline differently, or
  find in one view only, is one the model does not know.
- ``poor_masks``: the mean over shown detections of ``2 (1 - maskness)``, maskness being the mean
  mask probability over the pixels the mask keeps (SOLOv2's; 0.5 to 1, so 0 to 1 here): masks
  whose pixels the model is unsure of.

A photo's uncertainty is their weighted mean (:class:`CriterionWeights`). A photo without
detections scores 0 on each: nothing the model doubts. The functions take numpy arrays or tensors
and run no model.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

from booksegm.evaluation.voc import ArrayLike, binary_masks, mask_ious, to_numpy

CRITERIA = ("near_threshold", "view_disagreement", "poor_masks")


@dataclass(frozen=True)
class CriterionWeights:
    """How much each criterion counts in a photo's uncertainty: >= 0, not all 0, any scale (the mean is weighted)."""

    near_threshold: float
    view_disagreement: float
    poor_masks: float


@dataclass(frozen=True)
class PhotoUncertainty:
    near_threshold: float
    view_disagreement: float
    poor_masks: float

    def total(self, weights: CriterionWeights) -> float:
        """The weighted mean of the criteria."""
        pairs = [(getattr(self, f.name), getattr(weights, f.name)) for f in fields(self)]
        return sum(value * weight for value, weight in pairs) / sum(weight for _, weight in pairs)


def near_threshold(scores: ArrayLike, threshold: float) -> float:
    """The mean closeness of the scores to ``threshold`` (module docstring); 0 without scores."""
    scores = to_numpy(scores).astype(np.float64)
    if len(scores) == 0:
        return 0.0
    span = np.where(scores < threshold, threshold, 1.0 - threshold)  # the distance at which closeness reaches 0
    closeness = 1.0 - np.abs(scores - threshold) / np.maximum(span, 1e-9)
    return float(np.clip(closeness, 0.0, 1.0).mean())


def view_disagreement(views: list[np.ndarray]) -> float:
    """1 - the mean best mask IoU between each view's masks and the first view's, both ways, averaged
    over the views; ``views``: each view's shown masks ([N, H, W] bool, the same frame)."""
    if len(views) < 2:
        raise ValueError("view disagreement needs at least two views of the photo")
    return float(np.mean([1.0 - mean_best_iou(views[0], view) for view in views[1:]]))


def mean_best_iou(a: np.ndarray, b: np.ndarray) -> float:
    """The mean, over the masks of both sets, of each one's best IoU with the other set's; 1 when
    both are empty (they agree), 0 when only one is."""
    if len(a) == 0 and len(b) == 0:
        return 1.0
    ious = mask_ious(a, b)
    best_a = ious.max(1) if len(b) else np.zeros(len(a))
    best_b = ious.max(0) if len(a) else np.zeros(len(b))
    return float(np.concatenate([best_a, best_b]).mean())


def poor_masks(probabilities: ArrayLike) -> float:
    """The mean of ``2 (1 - maskness)`` over [N, H, W] (or [N, 1, H, W]) mask probabilities; 0 without masks."""
    probabilities = to_numpy(probabilities).astype(np.float64)
    if len(probabilities) == 0:
        return 0.0
    flat = probabilities.reshape(len(probabilities), -1)
    kept = flat > 0.5
    maskness = (flat * kept).sum(1) / np.maximum(kept.sum(1), 1)  # an empty mask: maskness 0
    return float(np.clip(2.0 * (1.0 - maskness), 0.0, 1.0).mean())


def photo_uncertainty(scores: ArrayLike, masks: ArrayLike, views: list[tuple[ArrayLike, ArrayLike]],
                      threshold: float) -> PhotoUncertainty:
    """The three criteria of one photo: ``scores`` and ``masks`` (probabilities) of its merged
    detections, down to the model's score floor; ``views``: (scores, masks) of each view, first
    the photo as given, in one frame. A detection is shown at a score >= ``threshold``."""
    scores = to_numpy(scores)
    masks = to_numpy(masks)
    shown_views = [binary_masks(to_numpy(m)[to_numpy(s) >= threshold]) for s, m in views]
    return PhotoUncertainty(
        near_threshold=near_threshold(scores, threshold),
        view_disagreement=view_disagreement(shown_views),
        poor_masks=poor_masks(masks[scores >= threshold]),
    )


def rank(uncertainties: list[float]) -> list[int]:
    """Indices from the most unsure to the least (ties keep their order)."""
    return sorted(range(len(uncertainties)), key=lambda i: -uncertainties[i])
