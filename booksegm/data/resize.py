"""matterport's IMAGE_RESIZE_MODE, applied to an image and its polygons together.

Modes (as ``mrcnn.utils.resize_image``):
  none    no resizing or padding.
  square  scale up so the short side reaches ``min_dim`` (never down for it), at least by
          ``min_scale``, and down so the long side fits ``max_dim``; pad to max_dim x max_dim.
  pad64   scale as above from ``min_dim`` and ``min_scale`` only; pad both sides to a multiple of 64.
  crop    scale as pad64, then a random ``min_dim`` x ``min_dim`` crop (training only).
Padding is split evenly between the two sides, as in matterport.
"""

from __future__ import annotations

from booksegm.config import ConfigError
from dataclasses import dataclass

import cv2
import numpy as np

RESIZE_MODES = ("none", "square", "pad64", "crop")


@dataclass
class ResizeConfig:
    mode: str = "square"  # IMAGE_RESIZE_MODE: none | square | pad64 | crop (crop is training-only)
    min_dim: int = 800  # IMAGE_MIN_DIM
    max_dim: int = 1024  # IMAGE_MAX_DIM (square mode)
    min_scale: float = 0.0  # IMAGE_MIN_SCALE; 0 = no minimum

    def validate(self, training: bool = True) -> None:
        if self.mode not in RESIZE_MODES:
            raise ConfigError(f"data.resize.mode={self.mode!r} is unknown; choose one of {list(RESIZE_MODES)}")
        if self.mode == "crop" and not training:
            raise ConfigError("data.resize.mode=crop is training-only; set data.val_resize.mode to square, pad64 or none")
        if self.min_dim < 0 or self.max_dim < 0 or self.min_scale < 0:
            raise ConfigError("data.resize.min_dim, max_dim and min_scale must be >= 0")
        if self.mode == "square" and self.max_dim <= 0:
            raise ConfigError("data.resize.mode=square needs data.resize.max_dim > 0")
        if self.mode == "pad64" and self.min_dim % 64:
            raise ConfigError(f"data.resize.mode=pad64 needs min_dim divisible by 64, got {self.min_dim}")
        if self.mode == "crop" and self.min_dim <= 0:
            raise ConfigError("data.resize.mode=crop needs data.resize.min_dim > 0 (the crop size)")


def resize_scale(height: int, width: int, cfg: ResizeConfig) -> float:
    if cfg.mode == "none":
        return 1.0
    scale = max(1.0, cfg.min_dim / min(height, width)) if cfg.min_dim else 1.0
    if cfg.min_scale and scale < cfg.min_scale:
        scale = cfg.min_scale
    if cfg.mode == "square" and round(max(height, width) * scale) > cfg.max_dim:
        scale = cfg.max_dim / max(height, width)
    return scale


def resize_image_and_polygons(
    image: np.ndarray, polygons: list[np.ndarray], cfg: ResizeConfig, rng: np.random.Generator | None = None
) -> tuple[np.ndarray, list[np.ndarray], float]:
    """Resize/pad/crop ``image`` (H, W, C) and move ``polygons`` ((N, 2) x, y) with it.

    Returns the new image, the new polygons and the scale applied. ``rng`` chooses the crop.
    """
    height, width = image.shape[:2]
    scale = resize_scale(height, width, cfg)
    new_h, new_w = max(1, round(height * scale)), max(1, round(width * scale))
    if (new_h, new_w) != (height, width):
        interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
        image = cv2.resize(image, (new_w, new_h), interpolation=interpolation)
    # exact per-axis factors, since rounding makes them differ slightly from ``scale``
    factor = np.array([new_w / width, new_h / height], dtype=np.float32)
    offset = np.zeros(2, dtype=np.float32)

    if cfg.mode == "square":
        top, left = (cfg.max_dim - new_h) // 2, (cfg.max_dim - new_w) // 2
        image = _pad(image, top, cfg.max_dim - new_h - top, left, cfg.max_dim - new_w - left)
        offset += (left, top)
    elif cfg.mode == "pad64":
        pad_h, pad_w = -new_h % 64, -new_w % 64
        image = _pad(image, pad_h // 2, pad_h - pad_h // 2, pad_w // 2, pad_w - pad_w // 2)
        offset += (pad_w // 2, pad_h // 2)
    elif cfg.mode == "crop":
        rng = rng or np.random.default_rng()
        size = cfg.min_dim
        # an image smaller than the crop is padded first (matterport assumes min_dim made it large enough)
        pad_h, pad_w = max(0, size - new_h), max(0, size - new_w)
        image = _pad(image, 0, pad_h, 0, pad_w)
        y = int(rng.integers(0, image.shape[0] - size + 1))
        x = int(rng.integers(0, image.shape[1] - size + 1))
        image = image[y : y + size, x : x + size]
        offset -= (x, y)

    polygons = [p * factor + offset for p in polygons]
    return image, polygons, scale


def _pad(image: np.ndarray, top: int, bottom: int, left: int, right: int) -> np.ndarray:
    if top == bottom == left == right == 0:
        return image
    return cv2.copyMakeBorder(image, top, bottom, left, right, cv2.BORDER_CONSTANT, value=0)
