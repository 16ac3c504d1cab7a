"""How unsure a model is about a photo, from its predictions alone: which unlabelled photos to label next.

Three criteria, each a doubt in [0, 1] per detection (1: most unsure), added up over the photo's
detections by their mean (the share of doubt in the photo) or their sum (how many doubtful books
it holds; Brust et al. 2019, "Active Learning for Deep Object Detection", found summing best):

- ``near_threshold``: each detection the model keeps (down to its score floor) counts
  ``1 - |s - t| / (t or 1 - t)``, its score's closeness to the threshold ``t`` the detections are
  shown at (1 at ``t``, 0 at a score of 0 or 1): books the model can neither keep nor drop.
- ``view_disagreement``: the photo's views (as given, mirrored, enlarged: ``booksegm.model.tta``)
  each compared with the first: each shown mask of either view counts ``1 -`` its best IoU with
  the other view's masks; averaged over the views. A book the views outline differently, or find
  in one view only, is one the model does not know.
- ``poor_masks``: each shown detection counts ``2 (1 - maskness)``, maskness being the mean mask
  probability over the pixels the mask keeps (SOLOv2's; 0.5 to 1, so 0 to 1 here): masks whose
  pixels the model is unsure of.

A photo's uncertainty is the criteria's weighted mean (:class:`CriterionWeights`). A photo without
detections scores 0 on each: nothing the model doubts.

Which k photos to label: the k most unsure (:func:`rank`), or a diverse pick
(:func:`diverse_pick`, Zhdanov 2019, "Diverse mini-batch Active Learning"): k clusters of the
photos' image features, each photo weighted by its uncertainty, and from each cluster the photo
nearest its centre. The k most unsure photos tend to be alike (the same hard scene, k times);
a few labels teach more when they cover the kinds of photo there are.

The functions take numpy arrays or tensors and run no model.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
import torch

from booksegm.evaluation.voc import ArrayLike, binary_masks, mask_ious, to_numpy


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


def add_up(doubts: np.ndarray, aggregate: str) -> float:
    """The detections' doubts as one number for the photo (``aggregate``: mean or sum); 0 without detections."""
    if aggregate not in ("mean", "sum"):
        raise ValueError(f"aggregate must be mean or sum, got {aggregate!r}")
    if len(doubts) == 0:
        return 0.0
    return float(doubts.sum() if aggregate == "sum" else doubts.mean())


def near_threshold(scores: ArrayLike, threshold: float, aggregate: str = "mean") -> float:
    """The scores' closeness to ``threshold`` (module docstring), added up."""
    scores = to_numpy(scores).astype(np.float64)
    span = np.where(scores < threshold, threshold, 1.0 - threshold)  # the distance at which closeness reaches 0
    closeness = 1.0 - np.abs(scores - threshold) / np.maximum(span, 1e-9)
    return add_up(np.clip(closeness, 0.0, 1.0), aggregate)


def view_disagreement(views: list[np.ndarray], aggregate: str = "mean") -> float:
    """Each view against the first (``views``: each view's shown masks, [N, H, W] bool, one frame):
    ``1 -`` each mask's best IoU with the other view's, both ways, added up; averaged over the views."""
    if len(views) < 2:
        raise ValueError("view disagreement needs at least two views of the photo")
    return float(np.mean([add_up(1.0 - best_ious(views[0], view), aggregate) for view in views[1:]]))


def best_ious(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The best IoU of each mask of ``a`` with ``b``'s masks, then of each of ``b``'s with ``a``'s (0 where
    the other set is empty)."""
    ious = mask_ious(a, b)
    best_a = ious.max(1) if len(b) else np.zeros(len(a))
    best_b = ious.max(0) if len(a) else np.zeros(len(b))
    return np.concatenate([best_a, best_b])


def poor_masks(probabilities: ArrayLike, aggregate: str = "mean") -> float:
    """``2 (1 - maskness)`` of each of the [N, H, W] (or [N, 1, H, W]) mask probabilities, added up."""
    quality = maskness(torch.as_tensor(to_numpy(probabilities), dtype=torch.float64)).numpy()
    return add_up(np.clip(2.0 * (1.0 - quality), 0.0, 1.0), aggregate)


def maskness(probabilities: torch.Tensor) -> torch.Tensor:
    """Each mask's mean probability over the pixels it keeps (> 0.5), SOLOv2's "maskness", from 0.5
    to 1; an empty mask: 0. Also what the model's maskness scoring multiplies its scores by."""
    flat = probabilities.flatten(1)
    kept = (flat > 0.5).to(flat.dtype)
    return (flat * kept).sum(1) / kept.sum(1).clamp(min=1.0)


def photo_uncertainty(scores: ArrayLike, masks: ArrayLike, views: list[tuple[ArrayLike, ArrayLike]],
                      threshold: float, aggregate: str = "mean") -> PhotoUncertainty:
    """The three criteria of one photo: ``scores`` and ``masks`` (probabilities) of its merged
    detections, down to the model's score floor; ``views``: (scores, masks) of each view, first
    the photo as given, in one frame. A detection is shown at a score >= ``threshold``."""
    scores = to_numpy(scores)
    masks = to_numpy(masks)
    shown_views = [binary_masks(to_numpy(m)[to_numpy(s) >= threshold]) for s, m in views]
    return PhotoUncertainty(
        near_threshold=near_threshold(scores, threshold, aggregate),
        view_disagreement=view_disagreement(shown_views, aggregate),
        poor_masks=poor_masks(masks[scores >= threshold], aggregate),
    )


def rank(uncertainties: list[float]) -> list[int]:
    """Indices from the most unsure to the least (ties keep their order)."""
    return sorted(range(len(uncertainties)), key=lambda i: -uncertainties[i])


def diverse_pick(features: ArrayLike, uncertainties: list[float], k: int, seed: int = 0,
                 iterations: int = 50) -> list[int]:
    """k photos spread over ``features`` ([N, D], one row a photo) and drawn to where the model is
    unsure: weighted k-means (k-means++ start, ``seed``) with ``uncertainties`` as weights, then the
    photo nearest each centre; most unsure first. All photos when k >= N."""
    points = to_numpy(features).astype(np.float64)
    weights = np.asarray(uncertainties, dtype=np.float64)
    if len(points) != len(weights):
        raise ValueError(f"{len(points)} feature rows for {len(weights)} uncertainties")
    if k >= len(points):
        return rank(list(weights))
    weights = weights + 1e-6 * max(weights.max(), 1.0)  # a photo nothing is doubted on still counts a little
    centres = kmeans_plus_plus(points, weights, k, np.random.default_rng(seed))
    for _ in range(iterations):
        nearest = squared_distances(points, centres).argmin(1)
        moved = centres.copy()
        for c in range(k):
            members = nearest == c
            if members.any():
                moved[c] = np.average(points[members], axis=0, weights=weights[members])
        if np.allclose(moved, centres):
            break
        centres = moved
    distances = squared_distances(points, centres)
    nearest = distances.argmin(1)
    picked = [int(np.flatnonzero(nearest == c)[distances[nearest == c, c].argmin()])
              for c in range(k) if (nearest == c).any()]
    # an emptied cluster leaves a place: the most unsure photos not picked yet fill it
    picked += [i for i in rank(list(weights)) if i not in picked][:k - len(picked)]
    return sorted(picked, key=lambda i: -weights[i])


def kmeans_plus_plus(points: np.ndarray, weights: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """k starting centres, each drawn with probability weight x squared distance to the nearest one drawn."""
    centres = [points[rng.choice(len(points), p=weights / weights.sum())]]
    for _ in range(k - 1):
        chances = weights * squared_distances(points, np.array(centres)).min(1)
        total = chances.sum()
        # every photo on a centre already (duplicates): any photo will do
        drawn = rng.choice(len(points), p=chances / total) if total > 0 else rng.integers(len(points))
        centres.append(points[drawn])
    return np.array(centres)


def squared_distances(points: np.ndarray, centres: np.ndarray) -> np.ndarray:
    return ((points[:, None, :] - centres[None, :, :]) ** 2).sum(-1)
