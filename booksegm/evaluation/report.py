"""An evaluation in one object: COCO mAP over every detection, plus per-image figures.

COCO AP needs the low-score tail of the detections, so :class:`CocoEvaluator` sees them all.
The per-image figures are what a user reads to find the photos that fail: detections at or
above ``score_threshold`` (matterport's DETECTION_MIN_CONFIDENCE, what ``model.detect``
returned) are matched to the ground truth at mask IoU 0.5, giving TP/FP/FN, the IoU of each
match, and matterport's ``compute_ap`` (VOC AP50), whose mean over images is the figure
matterport users compare with.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from booksegm.evaluation.coco_eval import CocoEvaluator
from booksegm.evaluation.voc import compute_ap, match_instances

MATCH_IOU = 0.5  # mask IoU of a per-image match (and of matterport's compute_ap)
PR_CURVES = (("mask", "segm", 0.5), ("mask", "segm", 0.75), ("box", "bbox", 0.5), ("box", "bbox", 0.75))


@dataclass
class ImageResult:
    image: str
    gt: int  # ground-truth instances
    detections: int  # detections at or above the score threshold
    tp: int
    fp: int
    fn: int
    mean_match_iou: float  # mean mask IoU of the true positives; NaN without any
    voc_ap50: float  # matterport's compute_ap; NaN without ground truth

    @property
    def f1(self) -> float:
        """2TP / (2TP + FP + FN); 1.0 for a photo without books and without detections."""
        errors = self.fp + self.fn
        return 1.0 if self.tp == errors == 0 else 2 * self.tp / (2 * self.tp + errors)


class EvaluationReport:
    """Feed batches with :meth:`update`; read :meth:`metrics`, :meth:`curves` and :meth:`worst_first`."""

    def __init__(self, class_names: Sequence[str], score_threshold: float):
        self.coco = CocoEvaluator(class_names)
        self.score_threshold = score_threshold
        self.images: list[ImageResult] = []
        self._metrics: dict[str, float] | None = None

    def update(self, predictions: list[dict], targets: list[dict], names: Sequence[str]) -> None:
        """``predictions`` and ``targets`` in torchvision's format, at the same image size."""
        self.coco.update(predictions, targets)
        self._metrics = None
        for prediction, target, name in zip(predictions, targets, names, strict=True):
            self.images.append(self._image_result(prediction, target, name))

    def _image_result(self, prediction: dict, target: dict, name: str) -> ImageResult:
        keep = prediction["scores"] >= self.score_threshold
        masks, scores, labels = prediction["masks"][keep], prediction["scores"][keep], prediction["labels"][keep]
        matches = match_instances(masks, target["masks"], scores, MATCH_IOU, labels, target["labels"])
        ap, _, _ = compute_ap(masks, target["masks"], scores, MATCH_IOU, labels, target["labels"])
        ious = matches.matched_ious
        return ImageResult(
            image=name, gt=len(target["labels"]), detections=int(keep.sum()), tp=matches.tp, fp=matches.fp,
            fn=matches.fn, mean_match_iou=float(ious.mean()) if len(ious) else math.nan, voc_ap50=ap,
        )

    def metrics(self) -> dict[str, float]:
        """COCO ``mask_*``/``box_*`` and ``voc_mask_AP50``, the mean of the per-image VOC AP50
        over images with ground truth (``booksegm.evaluation.voc.mean_voc_ap``)."""
        if self._metrics is None:
            aps = [r.voc_ap50 for r in self.images if not math.isnan(r.voc_ap50)]
            self._metrics = {**self.coco.compute(), "voc_mask_AP50": float(np.mean(aps)) if aps else math.nan}
        return self._metrics

    def curves(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Precision-recall curves at IoU 0.5 and 0.75, for masks and boxes."""
        self.metrics()
        return {f"{name} IoU {iou}": self.coco.precision_recall(iou, kind) for name, kind, iou in PR_CURVES}

    def worst_first(self) -> list[ImageResult]:
        """Lowest F1 first; among equals, the most errors (FP + FN) first."""
        return sorted(self.images, key=lambda r: (r.f1, -(r.fp + r.fn), r.image))

    def write_csv(self, path: str | Path) -> Path:
        path = Path(path)
        fields = ["image", "gt", "detections", "tp", "fp", "fn", "f1", "mean_match_iou", "voc_ap50"]
        with open(path, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=fields)
            writer.writeheader()
            for result in self.worst_first():
                row = {**asdict(result), "f1": result.f1}
                writer.writerow({k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()})
        return path

