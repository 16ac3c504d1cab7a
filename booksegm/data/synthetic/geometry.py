"""Polygons on the canvas: rasterised on a fine grid, boxed, clipped, grown, mapped in perspective, and painted."""

import cv2
import numpy as np

SHIFT = 4  # fractional bits of OpenCV's fixed-point polygon vertices


def fill_polygon(mask: np.ndarray, polygon: np.ndarray, value: int, origin=(0.0, 0.0), scale: int = 1) -> None:
    """Set the pixels of `mask` whose centres lie inside the polygon; the mask is a raster `scale`
    times finer than pixels whose top-left corner sits at `origin`.

    cv2.fillPoly also takes pixels up to half a pixel outside every edge (and its cv2.LINE_AA fill
    spreads further), so the polygon is first shrunk by half a raster pixel.
    """
    shrunk = grow((np.asarray(polygon, np.float64) - origin) * scale, -0.5)
    vertices = np.round((shrunk - 0.5) * (1 << SHIFT)).astype(np.int32)  # OpenCV puts integers at pixel centres
    cv2.fillPoly(mask, [vertices], value, cv2.LINE_8, SHIFT)


def bounds(points: np.ndarray) -> tuple[int, int, int, int]:
    """Integer box (x0, y0, x1, y1) holding every point."""
    x0, y0 = np.floor(points.min(axis=0)).astype(int)
    x1, y1 = np.ceil(points.max(axis=0)).astype(int)
    return int(x0), int(y0), int(x1), int(y1)


def clipped_box(points: np.ndarray, shape, pad: int = 0):
    """The pixel box of `points` (grown by pad) inside an image of `shape`, or None if empty."""
    x0, y0, x1, y1 = bounds(points)
    x0, y0 = max(x0 - pad, 0), max(y0 - pad, 0)
    x1, y1 = min(x1 + pad, shape[1]), min(y1 + pad, shape[0])
    return (x0, y0, x1, y1) if x1 > x0 and y1 > y0 else None


def overlaps(a, b) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def signed_area(points: np.ndarray) -> float:
    x, y = points[:, 0], points[:, 1]
    return 0.5 * float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)))


def facing_corners(corners: np.ndarray) -> np.ndarray:
    """Reorder a textured quad so the texture is not mirrored on it (text stays readable)."""
    return corners if signed_area(corners) > 0 else corners[[1, 0, 3, 2]]


def grow(polygon: np.ndarray, distance: float) -> np.ndarray:
    """Move every edge of a simple polygon outward by `distance` (mitred corners, capped when sharp)."""
    edges = np.roll(polygon, -1, axis=0) - polygon
    normals = np.column_stack([edges[:, 1], -edges[:, 0]]) / np.maximum(np.linalg.norm(edges, axis=1), 1e-9)[:, None]
    if signed_area(polygon) < 0:
        normals = -normals
    previous = np.roll(normals, 1, axis=0)
    mitre = (previous + normals) / np.maximum(1 + np.sum(previous * normals, axis=1), 0.25)[:, None]
    return polygon + distance * mitre


def clip_to_rect(polygon: np.ndarray, width: float, height: float) -> np.ndarray:
    """Sutherland-Hodgman clip of a polygon to [0, width] x [0, height]."""
    for axis, limit, sign in ((0, 0.0, 1), (0, width, -1), (1, 0.0, 1), (1, height, -1)):
        if len(polygon) == 0:
            break
        inside = sign * (polygon[:, axis] - limit)
        if inside.min() >= 0:
            continue
        kept = []
        for i in range(len(polygon)):
            j = (i + 1) % len(polygon)
            if inside[i] >= 0:
                kept.append(polygon[i])
            if (inside[i] >= 0) != (inside[j] >= 0):
                t = inside[i] / (inside[i] - inside[j])
                kept.append(polygon[i] + t * (polygon[j] - polygon[i]))
        polygon = np.array(kept, np.float64).reshape(-1, 2)
    return polygon


def rectangle(x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
    """Corners top-left, top-right, bottom-right, bottom-left."""
    return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], np.float64)


def rotated_rect(centre, size, angle: float) -> np.ndarray:
    """Corners (top-left, top-right, bottom-right, bottom-left before rotation) of a rectangle."""
    c, s = np.cos(angle), np.sin(angle)
    half_w = np.array([c, s]) * size[0] / 2
    half_h = np.array([-s, c]) * size[1] / 2
    centre = np.asarray(centre, np.float64)
    return centre + np.array([-half_w - half_h, half_w - half_h, half_w + half_h, -half_w + half_h])


def map_points(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Apply a 3x3 perspective map to (N, 2) points."""
    return cv2.perspectiveTransform(np.asarray(points, np.float64).reshape(-1, 1, 2), matrix).reshape(-1, 2)


def pixels_per_unit(plane_to_image: np.ndarray, uv: np.ndarray) -> float:
    """How many image pixels one unit of the table plane spans around `uv` (across the view)."""
    a, b = map_points(plane_to_image, np.array([uv, uv + (0.01, 0)]))
    return float(np.linalg.norm(b - a)) / 0.01


# ---------------------------------------------------------------- painting


def coverage(polygon: np.ndarray, box, grid: int = 4) -> np.ndarray:
    """Share (0..1) of each pixel of `box` covered by the polygon, from a `grid`-times finer raster."""
    x0, y0, x1, y1 = box
    fine = np.zeros(((y1 - y0) * grid, (x1 - x0) * grid), np.uint8)
    fill_polygon(fine, polygon, 255, (x0, y0), grid)
    if grid > 1:
        fine = cv2.resize(fine, (x1 - x0, y1 - y0), interpolation=cv2.INTER_AREA)
    return fine.astype(np.float32) * (1 / 255)


def warp_texture(texture: np.ndarray, corners: np.ndarray, box) -> np.ndarray:
    """The texture mapped onto the quad `corners` (where its corners (0,0), (w,0), (w,h), (0,h) land), over `box`."""
    h, w = texture.shape[:2]
    source = np.float32([[-0.5, -0.5], [w - 0.5, -0.5], [w - 0.5, h - 0.5], [-0.5, h - 0.5]])
    target = (corners - (box[0], box[1]) - 0.5).astype(np.float32)
    matrix = cv2.getPerspectiveTransform(source, target)
    size = (box[2] - box[0], box[3] - box[1])
    return cv2.warpPerspective(texture, matrix, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def paint(image: np.ndarray, polygon: np.ndarray, look) -> None:
    """Paint a polygon with a colour (3 values) or a texture (then the polygon is its 4 corners)."""
    box = clipped_box(polygon, image.shape)
    if box is None or abs(signed_area(polygon)) < 0.5:
        return
    look = np.asarray(look)
    layer = warp_texture(look, polygon, box).astype(np.float32) if look.ndim == 3 else look.astype(np.float32)
    region = image[box[1]:box[3], box[0]:box[2]]
    region += coverage(polygon, box)[..., None] * (layer - region)
