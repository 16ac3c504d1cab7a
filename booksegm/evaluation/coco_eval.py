"""COCO box and mask mAP for torchvision detection outputs, computed with pycocotools.

``update`` RLE-encodes masks as they arrive, so a whole validation set costs a few bytes per
instance; ``compute`` builds the ground truth and the detections as in-memory COCO objects
and runs ``COCOeval`` once for ``bbox`` and once for ``segm``. Scores are never thresholded
here: AP needs the low-confidence tail of the precision/recall curve.
"""

from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import Sequence

import numpy as np
from pycocotools import mask as mask_util
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

log = logging.getLogger(__name__)

# The first nine entries of COCOeval.stats for bbox/segm, in order.
STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100")
IOU_TYPES = {"segm": "mask", "bbox": "box"}  # COCOeval iouType -> key prefix


def encode_masks(masks: np.ndarray) -> list[dict]:
    """[N, H, W] binary masks -> N compressed RLEs (pycocotools wants Fortran-ordered HxWxN)."""
    if len(masks) == 0:
        return []
    return mask_util.encode(np.asfortranarray(masks.transpose(1, 2, 0).astype(np.uint8)))


def _xywh(box: Sequence[float]) -> list[float]:
    x1, y1, x2, y2 = box
    return [x1, y1, x2 - x1, y2 - y1]


def _make_coco(images: list[dict], categories: list[dict], annotations: list[dict]) -> COCO:
    coco = COCO()
    # COCOeval marks "unmatched" with id 0, so annotation ids must start at 1.
    coco.dataset = {
        "images": images,
        "categories": categories,
        "annotations": [dict(ann, id=i) for i, ann in enumerate(annotations, start=1)],
    }
    coco.createIndex()
    return coco


class CocoEvaluator:
    """Accumulates predictions and targets; ``compute`` returns ``mask_*`` and ``box_*`` metrics.

    ``class_names[i]`` names label ``i + 1`` (0 is background), as in the data records.
    """

    def __init__(self, class_names: Sequence[str], mask_threshold: float = 0.5):
        self.class_names = tuple(class_names)
        self.mask_threshold = mask_threshold
        self.reset()

    def reset(self) -> None:
        self._images: list[dict] = []
        self._image_ids: set[int] = set()
        self._gts: list[dict] = []
        self._dets: list[dict] = []
        self._evals: dict[str, COCOeval] | None = None  # None until compute() ran

    def update(self, predictions: list[dict], targets: list[dict]) -> None:
        for pred, target in zip(predictions, targets, strict=True):
            image_id = int(target["image_id"])
            if image_id in self._image_ids:
                raise ValueError(f"image_id {image_id} was added twice to the evaluator")
            self._image_ids.add(image_id)

            # The image size comes from the masks: boxes alone do not give it.
            gt_masks = target["masks"].detach().cpu().numpy().astype(bool)
            height, width = gt_masks.shape[-2:]
            self._images.append({"id": image_id, "height": height, "width": width})
            gt_rles = encode_masks(gt_masks)
            for box, label, rle in zip(
                target["boxes"].tolist(), target["labels"].tolist(), gt_rles, strict=True
            ):
                self._gts.append({
                    "image_id": image_id, "category_id": label, "bbox": _xywh(box),
                    "segmentation": rle, "area": float(mask_util.area(rle)), "iscrowd": 0,
                })

            masks = pred["masks"].detach().cpu()
            masks = masks.flatten(0, -3)  # [M, 1, H, W] -> [M, H, W]; also accepts [M, H, W]
            if tuple(masks.shape[-2:]) != (height, width):
                raise ValueError(
                    f"image_id {image_id}: predicted masks are {tuple(masks.shape[-2:])}, "
                    f"target masks {(height, width)}; predictions must be at the target size"
                )
            rles = encode_masks((masks > self.mask_threshold).numpy())
            for box, label, score, rle in zip(
                pred["boxes"].tolist(), pred["labels"].tolist(), pred["scores"].tolist(), rles,
                strict=True,
            ):
                self._dets.append({
                    "image_id": image_id, "category_id": label, "score": score,
                    "bbox": _xywh(box), "segmentation": rle, "mask_area": float(mask_util.area(rle)),
                })

    def state(self) -> dict[str, list[dict]]:
        """What ``update`` gathered, as plain picklable lists: one process's share of the images under DDP."""
        return {"images": self._images, "gts": self._gts, "dets": self._dets}

    def load_states(self, states: list[dict[str, list[dict]]]) -> None:
        """Hold the images of every state at once (each process's share, gathered), so ``compute`` scores
        all of them as one set. An image in more than one share counts once: torch's DistributedSampler
        repeats a few images so that every process gets as many."""
        self.reset()
        for state in states:
            new = {image["id"] for image in state["images"]} - self._image_ids
            self._image_ids |= new
            self._images += [image for image in state["images"] if image["id"] in new]
            self._gts += [gt for gt in state["gts"] if gt["image_id"] in new]
            self._dets += [det for det in state["dets"] if det["image_id"] in new]

    def _detections(self, iou_type: str) -> list[dict]:
        # COCOeval drops unmatched detections outside an area range by their "area", which is
        # the mask area for segm and the box area for bbox (as pycocotools' loadRes sets it).
        if iou_type == "segm":
            return [
                {"image_id": d["image_id"], "category_id": d["category_id"], "score": d["score"],
                 "segmentation": d["segmentation"], "area": d["mask_area"],
                 "bbox": mask_util.toBbox(d["segmentation"]).tolist(), "iscrowd": 0}
                for d in self._dets
            ]
        return [
            {"image_id": d["image_id"], "category_id": d["category_id"], "score": d["score"],
             "bbox": d["bbox"], "area": d["bbox"][2] * d["bbox"][3], "iscrowd": 0}
            for d in self._dets
        ]

    def compute(self) -> dict[str, float]:
        keys = [f"{prefix}_{name}" for prefix in IOU_TYPES.values() for name in STAT_NAMES] + ["mask_F1", "mask_F1_score"]
        self._evals = {}
        if not self._gts:
            log.warning(
                "no ground-truth instances in %d evaluated image(s): COCO mAP is undefined (NaN)",
                len(self._images),
            )
            return dict.fromkeys(keys, float("nan"))

        categories = [{"id": i, "name": n} for i, n in enumerate(self.class_names, start=1)]
        results = {}
        # pycocotools prints progress and the summary table; keep the logs clean.
        with contextlib.redirect_stdout(io.StringIO()):
            # Fresh dicts each time: COCOeval writes "ignore" flags into the annotations.
            gt = _make_coco(self._images, categories, self._gts)
            for iou_type, prefix in IOU_TYPES.items():
                dt = _make_coco(self._images, categories, self._detections(iou_type))
                coco_eval = COCOeval(gt, dt, iou_type)
                coco_eval.evaluate()
                coco_eval.accumulate()
                coco_eval.summarize()
                self._evals[iou_type] = coco_eval
                for name, value in zip(STAT_NAMES, coco_eval.stats[: len(STAT_NAMES)], strict=True):
                    # COCOeval reports -1 where there is nothing to measure (e.g. no large books).
                    results[f"{prefix}_{name}"] = float(value) if value > -1 else float("nan")
        results["mask_F1"], results["mask_F1_score"] = self.best_f1()
        return results

    def best_f1(self, iou: float = 0.5, kind: str = "segm") -> tuple[float, float]:
        """The best F1 over score thresholds at one IoU, and the score that reaches it: the
        confidence threshold that shows a model's real detections (matterport's
        DETECTION_MIN_CONFIDENCE, calibrated). (nan, nan) when no detection matches."""
        recall, precision = self.precision_recall(iou, kind)
        coco_eval = self._evals[kind] if self._evals else None
        if coco_eval is None or not np.isfinite(precision).any():
            return float("nan"), float("nan")
        params = coco_eval.params
        t = int(np.flatnonzero(np.isclose(params.iouThrs, iou))[0])
        a, m = params.areaRngLbl.index("all"), params.maxDets.index(100)
        scores = coco_eval.eval["scores"][t, :, :, a, m].max(1)  # [recall]: the score reaching that recall
        f1 = np.where(precision > 0, 2 * precision * recall / np.maximum(precision + recall, 1e-12), 0.0)
        best = int(np.argmax(f1))
        if f1[best] <= 0:
            return float("nan"), float("nan")
        return float(f1[best]), float(scores[best])

    def precision_recall(self, iou: float, kind: str = "segm") -> tuple[np.ndarray, np.ndarray]:
        """The PR curve at one of COCO's IoU thresholds (0.5, 0.55, ..., 0.95).

        Returns the 101 recall thresholds and the interpolated precision at each, for area
        "all" and 100 detections per image, averaged over the classes that have ground truth.
        """
        if kind not in IOU_TYPES:
            raise ValueError(f"kind must be one of {sorted(IOU_TYPES)}, got {kind!r}")
        if self._evals is None:
            raise RuntimeError("call compute() before precision_recall()")
        if not self._evals:  # no ground truth at all
            recall = np.linspace(0.0, 1.0, 101)
            return recall, np.full_like(recall, np.nan)

        coco_eval = self._evals[kind]
        params = coco_eval.params
        t = np.flatnonzero(np.isclose(params.iouThrs, iou))
        if t.size == 0:
            raise ValueError(f"IoU {iou} is not one of COCOeval's thresholds {params.iouThrs.round(2)}")
        a = params.areaRngLbl.index("all")
        m = params.maxDets.index(100)
        precision = coco_eval.eval["precision"][t[0], :, :, a, m]  # [recall, class]
        valid = precision > -1  # -1: a class without ground truth
        return params.recThrs.copy(), (precision * valid).sum(1) / valid.sum(1)
