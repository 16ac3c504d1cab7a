"""ImageRecords -> (image, target) pairs in the form torchvision's detection models take."""

from __future__ import annotations

import logging
import multiprocessing
from multiprocessing.sharedctypes import Synchronized

import albumentations as A
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from booksegm.data.images import ImageReadError, load_rgb
from booksegm.data.records import ImageRecord
from booksegm.data.resize import ResizeConfig, resize_image_and_polygons
from booksegm.data.transforms import augment_image_and_polygons, rasterize

log = logging.getLogger(__name__)


class BookDataset(Dataset):
    """Loads, resizes and (for training) augments each image, then rasterises its instances.

    Masks are drawn only at the output size, after every geometric transform, so a large photo
    never holds full-resolution masks. Instances left with fewer than ``min_area`` pixels
    (rotated or cropped out of frame) are dropped. An image that no longer loads (changed since
    the datamodule's start-up check) gives None, logged and counted in ``skipped``: shared memory,
    so DataLoader workers count into it too.
    """

    def __init__(
        self,
        records: list[ImageRecord],
        resize: ResizeConfig,
        augment: A.Compose | None = None,
        min_area: int = 1,
        skipped: Synchronized | None = None,
        copy_paste_p: float = 0.0,
        max_instances: int = 100,
    ):
        self.records = records
        self.resize = resize
        self.augment = augment
        self.min_area = min_area
        self.copy_paste_p = copy_paste_p
        self.max_instances = max_instances  # data.max_gt_instances: copy-paste keeps to it too
        self.skipped = skipped if skipped is not None else multiprocessing.Value("i", 0)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[torch.Tensor, dict[str, torch.Tensor]] | None:
        # a training draw brings its own augmentation seed (booksegm.data.sampler), so the same epoch
        # augments alike whatever the worker count or a resume; otherwise the index seeds it
        index, seed = key if isinstance(key, tuple) else (key, key)
        item = self._load(index, seed)
        if item is None:
            return None
        image, masks, labels = item
        if self.copy_paste_p and len(self.records) > 1:
            image, masks, labels = self._copy_paste(index, seed, image, masks, labels)
        height, width = image.shape[:2]
        return to_tensor(image), make_target(masks, labels, index, height, width)

    def _copy_paste(self, index: int, seed: int, image: np.ndarray, masks: list[np.ndarray], labels: list[int]):
        """With probability copy_paste_p, books of another image (drawn by ``seed``) pasted onto this one."""
        rng = np.random.default_rng([seed, 1])
        if rng.random() >= self.copy_paste_p:
            return image, masks, labels
        donor_index = (index + 1 + int(rng.integers(len(self.records) - 1))) % len(self.records)
        donor = self._load(donor_index, int(rng.integers(2**31 - 1)))
        if donor is None or donor[0].shape != image.shape or not donor[1]:  # sizes differ without a fixed resize
            return image, masks, labels
        return paste_instances(image, masks, labels, *donor, rng, self.min_area, self.max_instances)

    def _load(self, index: int, seed: int) -> tuple[np.ndarray, list[np.ndarray], list[int]] | None:
        """Image ``index`` loaded, resized and augmented by ``seed``, with its instances' masks."""
        record = self.records[index]
        try:
            image = load_rgb(record.path)
        except ImageReadError as err:  # changed since the start-up check: skip and count, not end the run
            with self.skipped.get_lock():
                self.skipped.value += 1
                count = self.skipped.value
            log.warning("skipping an image that no longer loads: %s (%d skipped in this run)", err, count)
            return None
        polygons = [p for inst in record.instances for p in inst.polygons]
        owners = [i for i, inst in enumerate(record.instances) for _ in inst.polygons]
        image, polygons, _ = resize_image_and_polygons(image, polygons, self.resize, np.random.default_rng(seed))
        if self.augment is not None:
            image, polygons = augment_image_and_polygons(self.augment, image, polygons, seed)

        height, width = image.shape[:2]
        masks, labels = [], []
        for i, inst in enumerate(record.instances):
            mask = rasterize([p for p, o in zip(polygons, owners) if o == i], height, width)
            if int(mask.sum()) >= self.min_area:
                masks.append(mask)
                labels.append(inst.label)
        return image, masks, labels


def paste_instances(
    image: np.ndarray, masks: list[np.ndarray], labels: list[int], donor_image: np.ndarray,
    donor_masks: list[np.ndarray], donor_labels: list[int], rng: np.random.Generator, min_area: int,
    max_instances: int,
) -> tuple[np.ndarray, list[np.ndarray], list[int]]:
    """Simple Copy-Paste (Ghiasi et al. 2021): a random half (at least one) of the donor's
    instances pasted where they lie onto ``image``; what they cover is cut from its masks, and
    instances left under ``min_area`` pixels go. At most ``max_instances`` come out."""
    pick = rng.random(len(donor_masks)) < 0.5
    pick[rng.integers(len(donor_masks))] = True
    pick &= np.cumsum(pick) <= max_instances - len(masks)
    if not pick.any():
        return image, masks, labels
    pasted = [m for m, keep in zip(donor_masks, pick) if keep]
    cover = np.any(pasted, axis=0)
    image = np.where(cover[..., None], donor_image, image)
    kept = [(m & ~cover, label) for m, label in zip(masks, labels)]
    kept = [(m, label) for m, label in kept if int(m.sum()) >= min_area]
    out_masks = [m for m, _ in kept] + pasted
    out_labels = [label for _, label in kept] + [label for label, keep in zip(donor_labels, pick) if keep]
    return image, out_masks, out_labels


def to_tensor(image: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 -> (3, H, W) float in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float().div_(255.0)


def make_target(masks: list[np.ndarray], labels: list[int], image_id: int, height: int, width: int) -> dict:
    mask_tensor = (
        torch.from_numpy(np.stack(masks)) if masks else torch.zeros((0, height, width), dtype=torch.uint8)
    )
    return {
        "boxes": masks_to_boxes(mask_tensor),
        "labels": torch.tensor(labels, dtype=torch.int64),
        "masks": mask_tensor,
        "image_id": image_id,
        "area": mask_tensor.flatten(1).sum(1).float(),
        "iscrowd": torch.zeros(len(labels), dtype=torch.int64),
    }


def masks_to_boxes(masks: torch.Tensor) -> torch.Tensor:
    """Tight xyxy boxes in edge coordinates (a one-pixel mask at column 3 spans x 3..4)."""
    if masks.shape[0] == 0:
        return torch.zeros((0, 4), dtype=torch.float32)
    boxes = torch.zeros((masks.shape[0], 4), dtype=torch.float32)
    for i, mask in enumerate(masks):
        ys, xs = torch.where(mask > 0)
        boxes[i] = torch.tensor([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=torch.float32)
    return boxes


def collate_detection(batch):
    """Lists of images and targets (detection images differ in size and instance counts), without
    the items that did not load (None); None when no item loaded."""
    batch = [item for item in batch if item is not None]
    return tuple(zip(*batch)) if batch else None


class SkipEmptyBatches(DataLoader):
    """A DataLoader that leaves out the batches in which no image loaded (collate_detection's None).

    Lightning's training loop skips a None batch by itself; validation and evaluation steps would
    fail on one.
    """

    def __iter__(self):
        batches = super().__iter__()
        return (batch for batch in batches if batch is not None)
