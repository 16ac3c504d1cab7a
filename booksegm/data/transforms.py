"""Augmentation and rasterisation: polygons travel with the image, masks are drawn at the end.

Polygons use edge coordinates (pixel i spans [i, i+1)), as VIA and COCO do; albumentations
moves keypoints in pixel-centre coordinates, so they are shifted by half a pixel around it.
"""

from __future__ import annotations

from booksegm.config import ConfigError
from dataclasses import dataclass

import albumentations as A
import cv2
import numpy as np
from pycocotools import mask as mask_utils


@dataclass
class AugmentConfig:
    hflip: float = 0.5  # probability of a left-right flip (the seed's Fliplr)
    vflip: float = 0.5  # probability of an up-down flip (the seed's Flipud)
    rotate_p: float = 0.5  # probability of a rotation (the seed's Affine rotate)
    rotate_limit: float = 15.0  # largest rotation, degrees either way
    scale_p: float = 0.0  # probability of a random zoom (scale jitter)
    scale_limit: float = 0.0  # zoom factor drawn from [1 - limit, 1 + limit]
    photometric_p: float = 0.3  # probability of brightness/contrast jitter
    copy_paste_p: float = 0.0  # probability of pasting a random half of another image's books onto it
    stretch_p: float = 0.0  # probability of stretching the width against the height (another camera's or export's aspect)
    stretch_limit: float = 0.0  # width scaled by a factor drawn from [1 - limit, 1 + limit], height kept

    def validate(self) -> None:
        for name in ("hflip", "vflip", "rotate_p", "scale_p", "photometric_p", "copy_paste_p", "stretch_p"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"data.augment.{name} is a probability in [0, 1], got {getattr(self, name)}")
        if not 0.0 <= self.rotate_limit <= 180.0:
            raise ConfigError(f"data.augment.rotate_limit must be in [0, 180] degrees, got {self.rotate_limit}")
        for name in ("scale_limit", "stretch_limit"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ConfigError(f"data.augment.{name} must be in [0, 1), got {getattr(self, name)}")


def build_augmentation(cfg: AugmentConfig) -> A.Compose:
    return A.Compose(
        [
            A.HorizontalFlip(p=cfg.hflip),
            A.VerticalFlip(p=cfg.vflip),
            A.Rotate(limit=cfg.rotate_limit, border_mode=cv2.BORDER_CONSTANT, fill=0, p=cfg.rotate_p),
            A.Affine(scale=(1 - cfg.scale_limit, 1 + cfg.scale_limit), border_mode=cv2.BORDER_CONSTANT, fill=0, p=cfg.scale_p),
            A.RandomBrightnessContrast(p=cfg.photometric_p),
            # last, so that the draws of the transforms above stay what they were without it
            A.Affine(scale={"x": (1 - cfg.stretch_limit, 1 + cfg.stretch_limit), "y": 1.0},
                     border_mode=cv2.BORDER_CONSTANT, fill=0, p=cfg.stretch_p),
        ],
        # vertices leaving the frame must stay: the polygon is clipped when rasterised
        keypoint_params=A.KeypointParams(format="xy", remove_invisible=False),
    )


def augment_image_and_polygons(
    augment: A.Compose, image: np.ndarray, polygons: list[np.ndarray], seed: int
) -> tuple[np.ndarray, list[np.ndarray]]:
    """Apply one random draw of ``augment`` to the image and every polygon vertex alike."""
    # one seed per transform: a shared seed would make every transform draw the same
    # number (flips always together) in albumentations 2.x
    for transform, child in zip(augment.transforms, np.random.SeedSequence(seed).generate_state(len(augment.transforms))):
        transform.set_random_seed(int(child))
    if not polygons:
        return augment(image=image, keypoints=np.zeros((0, 2), np.float32))["image"], []
    vertices = np.concatenate(polygons) - 0.5
    out = augment(image=image, keypoints=vertices)
    moved = np.asarray(out["keypoints"], dtype=np.float32).reshape(len(vertices), -1)[:, :2] + 0.5
    return out["image"], np.split(moved, np.cumsum([len(p) for p in polygons])[:-1])


def rasterize(polygons: list[np.ndarray], height: int, width: int) -> np.ndarray:
    """One instance's polygons -> (H, W) uint8 mask, clipped to the image (COCO's rasteriser)."""
    rings = [p.reshape(-1).astype(np.float64).tolist() for p in polygons if len(p) >= 3]
    if not rings:
        return np.zeros((height, width), dtype=np.uint8)
    rle = mask_utils.merge(mask_utils.frPyObjects(rings, height, width))
    return mask_utils.decode(rle)
