"""Real spines on rendered books: the labelled books of real photos, cut out and painted on the
generator's spines instead of its own drawn titles and bands.

A rendered shelf then has the geometry the generator controls (rows, leaning, stacks, tilt) and the
look of real spines (print, wear, glare, the binding's texture), which no procedural texture has.
Each labelled book is cut along its outline's minimum-area rectangle and turned so that its long
side runs along the strip, the layout :func:`~booksegm.data.synthetic.textures.spine_texture`
draws (rows across the thickness, columns along the length).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import cv2
import numpy as np
from tqdm import tqdm

from booksegm.config import ConfigError
from booksegm.data.images import ImageReadError, load_rgb
from booksegm.data.records import AnnotationSet

log = logging.getLogger(__name__)

MIN_THICKNESS = 6  # px across: thinner cut-outs are mostly edge
MIN_ELONGATION = 1.8  # length / thickness: rounder outlines are covers, not spines
INSET = 0.04  # share of the thickness trimmed off each long side: the neighbours' edges
CANDIDATES = 8  # cut-outs drawn per spine, the one of the closest shape painted: less stretched print


@dataclass(frozen=True)
class SpineCutouts:
    """Spine strips cut from real photos, and the share of rendered spines that get one."""

    strips: list[np.ndarray]  # (thickness, length, 3) uint8
    share: float  # 0..1
    source: str  # the annotations they were cut from, for the rendered set's record

    def strip(self, rng: np.random.Generator, length: float, thickness: float) -> np.ndarray:
        """One strip of ``length`` x ``thickness`` px: of a few drawn at random, the one whose shape is closest."""
        wanted = np.log(max(length, 1.0) / max(thickness, 1.0))
        drawn = rng.integers(len(self.strips), size=CANDIDATES)
        best = min(drawn, key=lambda i: abs(np.log(self.strips[i].shape[1] / self.strips[i].shape[0]) - wanted))
        size = (max(round(length), 2), max(round(thickness), 2))
        return cv2.resize(self.strips[best], size, interpolation=cv2.INTER_AREA)


def cut_spine(image: np.ndarray, outline: np.ndarray) -> np.ndarray | None:
    """The spine inside ``outline`` ((N, 2) pixel coordinates) as an upright strip, or None when
    the outline is too thin or too round to be one."""
    (cx, cy), (w, h), angle = cv2.minAreaRect(outline.astype(np.float32))
    length, thickness = max(w, h), min(w, h) * (1 - 2 * INSET)
    if thickness < MIN_THICKNESS or length < MIN_ELONGATION * min(w, h):
        return None
    if w < h:  # turn the rectangle so that its first side is the long one
        angle += 90.0
    along = np.array([np.cos(np.radians(angle)), np.sin(np.radians(angle))])
    across = np.array([-along[1], along[0]])
    centre = np.array([cx, cy])
    corners = np.float32([centre + s * along * length / 2 + t * across * thickness / 2
                          for s, t in ((-1, -1), (1, -1), (1, 1), (-1, 1))])
    size = (round(length), round(thickness))
    target = np.float32([[0, 0], [size[0], 0], [size[0], size[1]], [0, size[1]]])
    return cv2.warpPerspective(image, cv2.getPerspectiveTransform(corners, target), size, flags=cv2.INTER_AREA,
                               borderMode=cv2.BORDER_REPLICATE)


def cut_spines(annotations: AnnotationSet, share: float, source: str, progress: bool = True) -> SpineCutouts:
    """Every labelled book of the photos that is shaped like a spine, as strips (``source``: how the
    settings name the annotations); an unreadable photo is skipped with a log line."""
    if not 0.0 < share <= 1.0:
        raise ConfigError(f"the share of rendered spines painted with real ones must lie in (0, 1], got {share}")
    strips = []
    for record in tqdm(annotations.records, desc="cutting spines", unit="photo", disable=not progress):
        try:
            image = load_rgb(record.path)
        except ImageReadError as err:
            log.warning("skipping %s", err)
            continue
        cut = (cut_spine(image, instance.polygons[0]) for instance in record.instances if instance.polygons)
        strips.extend(strip for strip in cut if strip is not None)
    if not strips:
        raise ConfigError(f"{annotations.source}: no labelled book shaped like a spine (at least {MIN_THICKNESS} px "
                          f"thick, {MIN_ELONGATION}x as long) to paint rendered spines with")
    log.info("%d spines cut from %d photos of %s", len(strips), len(annotations.records), annotations.source)
    return SpineCutouts(strips, share, source)
