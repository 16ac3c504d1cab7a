"""Test-time augmentation: each image also seen mirrored and enlarged, the views' detections merged.

A detection found in every view keeps its mean score; one that only some views find is scored as
if the others had given it 0 (score sum over the number of views), so the views vote. Boxes and
mask probabilities of a detection are the mean of the views that found it. (detectron2's and
YOLOv5's TTA keep the union of the views' boxes under NMS; averaging the scores as well is what
turns the views' agreement into a better ranking.)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.models.detection import MaskRCNN
from torchvision.ops import batched_nms, box_iou

View = tuple[float, bool]  # (scale, mirrored left-right)
AS_GIVEN: list[View] = [(1.0, False)]  # the views without test-time augmentation
MATCH_IOU = 0.5  # box IoU at which two views' detections are the same book
VIEW_SCORE_FLOOR = 0.05  # torchvision's box_score_thresh: each view keeps its low scores, which still vote


def tta_views(scales: list[float], hflip: bool) -> list[View]:
    """The views of ``model.tta_scales`` x (as given, mirrored when ``model.tta_hflip``)."""
    return [(float(scale), flip) for scale in scales for flip in ((False, True) if hflip else (False,))]


class TTAMaskRCNN(MaskRCNN):
    """torchvision's ``MaskRCNN`` (the same modules and state dict) whose inference runs every
    image in several views (``configure``) and merges their detections; training is unchanged.
    ``score_thresh`` and ``detections_per_img`` apply to the merged detections; each view scores
    down to ``VIEW_SCORE_FLOOR`` (or the lower ``score_thresh``)."""

    def configure(self, views: list[View], score_thresh: float, detections_per_img: int) -> None:
        self.views = views
        self.score_thresh = score_thresh
        self.detections_per_img = detections_per_img
        self.roi_heads.score_thresh = self.transform.score_thresh = min(score_thresh, VIEW_SCORE_FLOOR)

    def forward(self, images, targets=None):
        if self.training:
            return super().forward(images, targets)
        per_view = view_detections(self, images, self.views)
        return [
            merge_views([view[i] for view in per_view], self.roi_heads.nms_thresh, self.score_thresh,
                        self.detections_per_img)
            for i in range(len(images))
        ]


def view_detections(model: MaskRCNN, images: list[Tensor], views: list[View]) -> list[list[dict[str, Tensor]]]:
    """Each view's detections of each image (``[view][image]``), mapped back onto the image: the
    network run as torchvision's ``MaskRCNN`` in every view, unmerged (``booksegm data suggest``
    compares them), whatever views the model merges itself."""
    per_view = []
    for scale, flip in views:
        shown = [view_image(image, scale, flip) for image in images]
        detections = MaskRCNN.forward(model, shown)
        per_view.append([map_back(d, tuple(image.shape[-2:]), tuple(s.shape[-2:]), flip)
                         for d, image, s in zip(detections, images, shown, strict=True)])
    return per_view


def view_image(image: Tensor, scale: float, flip: bool) -> Tensor:
    """A (3, H, W) image resized by ``scale`` and mirrored left-right when ``flip``."""
    if scale != 1.0:
        size = (round(image.shape[-2] * scale), round(image.shape[-1] * scale))
        image = F.interpolate(image[None], size=size, mode="bilinear", align_corners=False)[0]
    return image.flip(-1) if flip else image


def map_back(detections: dict[str, Tensor], size: tuple[int, int], shown: tuple[int, int],
             flip: bool) -> dict[str, Tensor]:
    """One view's detections (boxes and pasted masks in the view's pixels) on the image of ``size``."""
    boxes, masks = detections["boxes"], detections["masks"]
    if flip:
        boxes = torch.stack([shown[1] - boxes[:, 2], boxes[:, 1], shown[1] - boxes[:, 0], boxes[:, 3]], dim=1)
        masks = masks.flip(-1)
    if shown != size:
        scale = boxes.new_tensor([size[1] / shown[1], size[0] / shown[0]] * 2)
        boxes = boxes * scale
        masks = (F.interpolate(masks, size=size, mode="bilinear", align_corners=False) if len(masks)
                 else masks.new_zeros((0, 1, *size)))
    return {**detections, "boxes": boxes, "masks": masks}


def merge_views(views: list[dict[str, Tensor]], nms_thresh: float, score_thresh: float,
                detections_per_img: int) -> dict[str, Tensor]:
    """The views' detections of one image as one set (module docstring), after NMS at
    ``nms_thresh``, those scoring under ``score_thresh`` dropped, at most ``detections_per_img``."""
    joined = {key: torch.cat([view[key] for view in views]) for key in views[0]}
    device = joined["boxes"].device
    source = torch.cat([torch.full((len(view["scores"]),), i, device=device) for i, view in enumerate(views)])
    iou = box_iou(joined["boxes"], joined["boxes"])
    iou[joined["labels"][:, None] != joined["labels"][None, :]] = 0.0  # a book never merges with another class
    free = torch.ones(len(source), dtype=torch.bool, device=device)
    merged: dict[str, list[Tensor]] = {key: [] for key in joined}
    for i in torch.argsort(joined["scores"], descending=True).tolist():
        if not free[i]:
            continue
        members = [i]
        for view in set(range(len(views))) - {int(source[i])}:  # the best free match of each other view
            candidates = torch.nonzero(free & (source == view) & (iou[i] >= MATCH_IOU)).flatten()
            if len(candidates):
                members.append(int(candidates[iou[i, candidates].argmax()]))
        free[members] = False
        group = torch.tensor(members, device=device)
        merged["boxes"].append(joined["boxes"][group].mean(0))
        merged["masks"].append(joined["masks"][group].mean(0))
        merged["scores"].append(joined["scores"][group].sum() / len(views))
        merged["labels"].append(joined["labels"][i])
    if not merged["scores"]:
        return views[0]
    result = {key: torch.stack(values) for key, values in merged.items()}
    keep = batched_nms(result["boxes"], result["scores"], result["labels"], nms_thresh)
    keep = keep[result["scores"][keep] >= score_thresh][:detections_per_img]
    return {key: value[keep] for key, value in result.items()}
