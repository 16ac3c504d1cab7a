"""Turning drawn outlines into polygons a mask can be made from: deduplicated, valid, in the image."""

from __future__ import annotations

import math

import cv2
import numpy as np
import shapely
from shapely.geometry import LineString, Point, Polygon, box

from booksegm.data.records import SkipRegion

MIN_AREA = 1e-3  # px^2: below this an outline is a line or a dot, not an object
CLIPPED = "clipped to the image"
REPAIRED = "self-intersecting, repaired"


def clean_polygons(outlines: list[np.ndarray], size: tuple[int, int] | None) -> tuple[list[np.ndarray], set[str]]:
    """clean_polygon over the parts of one instance: the parts left, and the fixes made.

    A part without area is dropped when others remain; when none remain, the last part's reason is
    raised (SkipRegion).
    """
    parts, fixes, skip = [], set(), SkipRegion("fewer than 3 distinct points")
    for outline in outlines:
        try:
            cleaned, fixed = clean_polygon(outline, size)
        except SkipRegion as err:
            skip = err
            continue
        parts.extend(cleaned)
        fixes.update(fixed)
    if not parts:
        raise skip
    return parts, fixes


def clean_polygon(points: np.ndarray, size: tuple[int, int] | None) -> tuple[list[np.ndarray], list[str]]:
    """The parts of one outline to train on, and what had to be fixed (``CLIPPED``, ``REPAIRED``).

    ``points`` is (N, 2) in pixels; ``size`` is (width, height) when known. Repeated consecutive
    points (including a closing copy of the first) are dropped. A valid outline inside the image
    comes back unchanged. A self-intersecting one is split by shapely's ``make_valid`` into the
    valid parts its outline encloses; one crossing the image border is cut to the image. Holes
    cannot be kept (instances are outlines, as in COCO), so a part's exterior is used. Raises
    SkipRegion with the reason when no part with area is left.
    """
    points = drop_repeated_points(np.asarray(points, dtype=np.float32))
    if len(np.unique(points, axis=0)) < 3:
        raise SkipRegion("fewer than 3 distinct points")
    polygon = Polygon(points.astype(np.float64))
    fixes = []
    geometry = polygon
    if not polygon.is_valid:
        geometry = shapely.make_valid(polygon)
        fixes.append(REPAIRED)
    if geometry.area < MIN_AREA:
        raise SkipRegion("zero area")
    if size is not None and not box(0, 0, *size).contains(geometry):
        geometry = geometry.intersection(box(0, 0, *size))
        fixes.append(CLIPPED)
    if not fixes:
        return [points], fixes
    parts = [
        drop_repeated_points(np.asarray(part.exterior.coords, dtype=np.float32))
        for part in polygonal_parts(geometry)
        if part.area >= MIN_AREA
    ]
    if not parts:
        raise SkipRegion("outside the image")
    return parts, fixes


def mask_outlines(mask: np.ndarray) -> list[np.ndarray]:
    """The outer outlines of a (H, W) mask's parts, on pixel edges (so they rasterise back to the
    same pixels); none for an empty mask."""
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    outlines = []
    for contour in contours:
        centres = contour[:, 0, :].astype(np.float64) + 0.5  # contours run through boundary pixel centres
        if len(centres) >= 3:
            line = Polygon(centres)
        else:  # a one- or two-pixel run
            line = LineString(centres) if len(centres) == 2 else Point(centres[0])
        grown = shapely.make_valid(line).buffer(0.5, cap_style="square", join_style="mitre")  # out to pixel edges
        outlines.extend(np.asarray(p.exterior.coords[:-1], dtype=np.float32) for p in polygonal_parts(grown))
    return outlines


def largest_outline(mask: np.ndarray, tolerance: float) -> np.ndarray | None:
    """The outline of a mask's largest part, on pixel edges, simplified (``cv2.approxPolyDP`` with
    ``tolerance`` px); None for an empty mask. VIA holds one polygon per region, and a book is one
    piece: a mask split in parts keeps its largest one."""
    outlines = mask_outlines(mask)
    if not outlines:
        return None
    largest = max(outlines, key=lambda p: abs(cv2.contourArea(p)))
    simplified = cv2.approxPolyDP(largest.reshape(-1, 1, 2), tolerance, closed=True).reshape(-1, 2)
    return simplified if len(simplified) >= 3 else largest


def polygonal_parts(geometry) -> list[Polygon]:
    """The polygons in a shapely result (make_valid and intersection may add lines and points)."""
    if isinstance(geometry, Polygon):
        return [geometry]
    return [part for g in getattr(geometry, "geoms", ()) for part in polygonal_parts(g)]


def drop_repeated_points(points: np.ndarray) -> np.ndarray:
    """Without consecutive repeats or a closing copy of the first point (the first point stays first)."""
    keep = np.ones(len(points), dtype=bool)
    keep[1:] = np.any(points[1:] != points[:-1], axis=1)
    points = points[keep]
    return points[:-1] if len(points) > 1 and np.array_equal(points[0], points[-1]) else points


def ellipse_polygon(cx: float, cy: float, rx: float, ry: float, theta: float = 0.0) -> np.ndarray:
    """Vertices on the ellipse (x = cx + rx cos t, rotated by ``theta`` radians, y down).

    Enough vertices that the outline is within a quarter pixel of the true curve (at least 32,
    which also keeps the inscribed polygon's area within 1 % of pi * rx * ry).
    """
    radius = max(abs(rx), abs(ry), 0.25)
    n = min(max(math.ceil(math.pi / math.acos(1 - 0.25 / radius)), 32), 1024)
    t = np.linspace(0, 2 * math.pi, n, endpoint=False)
    x, y = rx * np.cos(t), ry * np.sin(t)
    cos, sin = math.cos(theta), math.sin(theta)
    return np.stack([cx + x * cos - y * sin, cy + x * sin + y * cos], axis=1).astype(np.float32)


def rect_polygon(x: float, y: float, width: float, height: float) -> np.ndarray:
    return np.array([[x, y], [x + width, y], [x + width, y + height], [x, y + height]], dtype=np.float32)
