"""Procedurally rendered photos of books, labelled as a VIA 2.x export.

booksegm's default training run learns from this set, so it needs no download. Scenes are drawn
with numpy and OpenCV only: bookcases with rows of spines (upright, leaning, lying in small
stacks, now and then one facing out, a vase in front), and tables with single and stacked books
seen in perspective, some standing against the wall behind. Each photo gets its own shadows,
camera tilt, uneven lighting, blur and sensor noise; about 5% of photos show no book at all.

Labels are the *visible* outline of each book: items are drawn back to front, the part of a
book hidden by later items is cut away, and layouts that would split a book into pieces or punch
a hole in it are rejected, so one polygon describes each book. Books of which little is left in
the photo are not labelled.

``generate_dataset(out_dir, ...)`` writes ``out_dir/images/synth_00000.jpg ...`` and then
``out_dir/via_region_data.json``, whose ``filename`` entries are bare file names: the image root
for reading it is ``out_dir/images``. Every image is rendered from ``np.random.default_rng([seed,
index])``, so an image does not depend on how many are generated.

``render_books`` also says where each book of a row was put (its board, its step along the row, its
level in a stack), and ``shelf_order`` turns that into the row and position a shelf inventory
should find (tests/test_inventory.py); recording it draws nothing and no random number.

Coordinates follow booksegm.data.records: continuous pixel coordinates with the origin at the
top-left corner of the top-left pixel, so pixel (i, j) covers [i, i+1) x [j, j+1).
"""

from __future__ import annotations

import colorsys
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from booksegm.config import ConfigError
from booksegm.data.formats.via import write_via
from booksegm.data.records import AnnotationSet, ImageRecord, Instance

SCENE_KINDS = ("shelf", "table", "empty")
STYLES = ("photo", "plain")  # plain: the same scenes without light, shadows, blur, noise or vases and mugs
SCENE_WEIGHTS = (0.57, 0.38, 0.05)
MAX_SHELF_BOOKS = 32  # real shelves hold more; the set aims at roughly 3-25 books per photo
MIN_LABEL_AREA = 0.0006  # share of the photo below which a visible book is not labelled
MIN_LABEL_WIDTH = 2.5  # pixels (2 * area / perimeter): thinner visible parts are not labelled
OUTLINE_GRID = 4  # visible outlines are traced on a grid this much finer than pixels
SHIFT = 4  # fractional bits of OpenCV's fixed-point polygon vertices
JPEG_QUALITY = 92

FONTS = (
    cv2.FONT_HERSHEY_SIMPLEX, cv2.FONT_HERSHEY_DUPLEX, cv2.FONT_HERSHEY_COMPLEX,
    cv2.FONT_HERSHEY_TRIPLEX, cv2.FONT_HERSHEY_PLAIN, cv2.FONT_HERSHEY_COMPLEX_SMALL,
)
ACCENTS = ((212, 175, 55), (236, 230, 214), (22, 22, 22), (192, 192, 198), (150, 24, 28))
DARK_INKS = ((18, 18, 18), (70, 20, 20), (20, 30, 70), (40, 40, 40))
LIGHT_INKS = ((245, 240, 225), (212, 175, 55), (250, 250, 250), (225, 215, 180))
WOODS = ((200, 160, 110), (110, 70, 42), (125, 58, 38), (218, 184, 135), (70, 48, 34), (160, 120, 80))
PAINTED = ((232, 230, 224), (40, 38, 36), (120, 125, 130), (200, 190, 170))
WALLS = (
    (236, 234, 228), (222, 206, 182), (172, 174, 178), (190, 206, 216),
    (182, 192, 160), (192, 124, 96), (78, 82, 88), (238, 226, 200),
)
CLOTHS = ((170, 40, 40), (40, 60, 110), (220, 220, 210), (70, 110, 70), (150, 150, 150))
PAPER = (236, 228, 204)


# ---------------------------------------------------------------- geometry


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


# ---------------------------------------------------------------- colours and textures


def jitter(rng, colour, amount: float = 12) -> np.ndarray:
    return np.clip(np.asarray(colour, np.float32) + rng.uniform(-amount, amount, 3), 0, 255)


def pick(rng, options):
    return options[rng.integers(len(options))]


def book_colour(rng) -> np.ndarray:
    if rng.random() < 0.15:  # black, white, cream and greys are common bindings
        h, s, v = rng.random(), rng.uniform(0, 0.15), rng.uniform(0.08, 0.95)
    else:
        h, s, v = rng.random(), rng.uniform(0.25, 0.9), rng.uniform(0.2, 0.9)
    return np.array(colorsys.hsv_to_rgb(h, s, v), np.float32) * 255


def ink_for(rng, colour) -> tuple:
    luminance = 0.3 * colour[0] + 0.59 * colour[1] + 0.11 * colour[2]
    return tuple(float(c) for c in pick(rng, DARK_INKS if luminance > 135 else LIGHT_INKS))


def random_words(rng) -> str:
    words = ["".join(chr(65 + k) for k in rng.integers(0, 26, rng.integers(2, 9))) for _ in range(rng.integers(1, 4))]
    text = " ".join(words)
    return text if rng.random() < 0.6 else text.title()


def put_text(rng, texture, text, box_x, box_y, box_w, box_h, ink) -> None:
    """Write text scaled to fit a box (x, y, w, h), vertically centred in it."""
    font = pick(rng, FONTS)
    (tw, th), _ = cv2.getTextSize(text, font, 1.0, 1)
    scale = min(box_w / tw, box_h / th)
    if scale * th < 2:  # too small to read even as marks
        return
    weight = 2 if scale * th > 14 and rng.random() < 0.5 else 1
    baseline = box_y + (box_h + scale * th) / 2
    cv2.putText(texture, text, (int(box_x), int(baseline)), font, scale, ink, weight, cv2.LINE_AA)


def smooth_noise(rng, height: int, width: int, cells_y: int, cells_x: int) -> np.ndarray:
    """Values in about [0, 1] varying smoothly over the given number of cells."""
    grid = rng.random((max(cells_y, 1) + 1, max(cells_x, 1) + 1)).astype(np.float32)
    return cv2.resize(grid, (width, height), interpolation=cv2.INTER_CUBIC)


def shaded(texture: np.ndarray, shade: np.ndarray) -> np.ndarray:
    return np.clip(texture.astype(np.float32) * shade, 0, 255).astype(np.uint8)


def spine_texture(rng, length: float, thickness: float, colour) -> np.ndarray:
    """A spine as a strip: columns run along the book's height, rows across its thickness."""
    L, T = max(round(length), 2), max(round(thickness), 2)
    tex = np.empty((T, L, 3), np.uint8)
    tex[:] = colour
    ink = ink_for(rng, colour)
    accent = tuple(float(c) for c in pick(rng, ACCENTS)) if rng.random() < 0.6 else ink
    for _ in range(rng.integers(0, 3)):  # decorative bands, mirrored at both ends
        at, width = rng.uniform(0.02, 0.16) * L, max(1, int(rng.uniform(0.004, 0.03) * L))
        tex[:, int(at):int(at) + width] = accent
        tex[:, L - int(at) - width:L - int(at)] = accent
    title_from, title_to = rng.uniform(0.18, 0.35) * L, rng.uniform(0.65, 0.85) * L
    if rng.random() < 0.35:  # a title panel in another colour
        panel = book_colour(rng)
        inset = int(T * rng.uniform(0, 0.2))
        tex[inset:T - inset, int(title_from):int(title_to)] = panel
        ink = ink_for(rng, panel)
    put_text(rng, tex, random_words(rng), title_from + 1, T * 0.2, title_to - title_from - 2, T * 0.6, ink)
    if rng.random() < 0.7:  # author or publisher near the foot
        put_text(rng, tex, random_words(rng), L * 0.04, T * 0.3, L * 0.12, T * 0.4, ink)
    across = (np.arange(T) + 0.5) / T
    rounding = 0.7 + 0.3 * np.sin(np.pi * across) ** 0.7  # a rounded spine is darker at its edges
    scuffs = 1 + 0.08 * (smooth_noise(rng, 1, L, 1, max(L // 6, 1)) - 0.5)
    return shaded(tex, rounding[:, None, None] * scuffs[..., None])


def cover_texture(rng, width: float, height: float, colour) -> np.ndarray:
    """A front cover: title, author, and sometimes a picture, a band or a frame."""
    W, H = max(round(width), 2), max(round(height), 2)
    tex = np.empty((H, W, 3), np.uint8)
    tex[:] = colour
    ink = ink_for(rng, colour)
    style = rng.random()
    if style < 0.45:  # a picture: two-colour gradient, sometimes with a disc
        x0, x1 = int(W * rng.uniform(0, 0.15)), int(W * rng.uniform(0.85, 1))
        y0, y1 = int(H * rng.uniform(0.3, 0.45)), int(H * rng.uniform(0.75, 0.92))
        ramp = np.linspace(0, 1, max(y1 - y0, 1), dtype=np.float32)[:, None, None]
        top, bottom = book_colour(rng), book_colour(rng)
        tex[y0:y1, x0:x1] = (top * (1 - ramp) + bottom * ramp).astype(np.uint8)
        if rng.random() < 0.5:
            centre = (int(rng.uniform(x0, x1)), int(rng.uniform(y0, y1)))
            radius = int(rng.uniform(0.08, 0.25) * W)
            cv2.circle(tex, centre, radius, tuple(float(c) for c in book_colour(rng)), -1, cv2.LINE_AA)
    elif style < 0.7:  # a band across the cover
        y0 = int(H * rng.uniform(0.1, 0.6))
        tex[y0:y0 + int(H * rng.uniform(0.1, 0.3))] = book_colour(rng)
    if rng.random() < 0.3:
        inset = max(1, int(W * 0.06))
        cv2.rectangle(tex, (inset, inset), (W - inset, H - inset), ink, 1, cv2.LINE_AA)
    put_text(rng, tex, random_words(rng), W * 0.12, H * 0.08, W * 0.76, H * 0.14, ink)
    if rng.random() < 0.5:
        put_text(rng, tex, random_words(rng), W * 0.15, H * 0.2, W * 0.7, H * 0.09, ink)
    put_text(rng, tex, random_words(rng), W * 0.25, H * 0.9, W * 0.5, H * 0.06, ink)
    hinge = np.ones(W, np.float32)
    hinge[: max(1, W // 25)] = 0.8  # the fold beside the spine
    light = np.linspace(1.06, 0.9, H, dtype=np.float32)
    return shaded(tex, light[:, None, None] * hinge[None, :, None])


def page_texture(rng, length: float, thickness: float) -> np.ndarray:
    """Edges of the pages: fine lines along the book."""
    L, T = max(round(length), 2), max(round(thickness), 2)
    lines = 0.8 + 0.2 * rng.random((T, 1, 1))
    return np.broadcast_to(shaded(jitter(rng, PAPER, 10)[None, None], lines), (T, L, 3)).copy()


def wood_texture(rng, height: int, width: int, colour, vertical: bool = False) -> np.ndarray:
    if vertical:
        return wood_texture(rng, width, height, colour).transpose(1, 0, 2)
    rows = np.arange(height, dtype=np.float32)[:, None]
    # growth rings: long lines along the board whose spacing varies and which wander a little
    spacing = 1 + 0.6 * smooth_noise(rng, height, 1, 8, 1)
    wander = rng.uniform(0.3, 1.5) * smooth_noise(rng, height, width, 2, 3)
    phase = rows / rng.uniform(4, 12) * spacing + wander
    rings = (0.5 + 0.5 * np.sin(2 * np.pi * phase)) ** 4
    fibres = smooth_noise(rng, height, width, height // 2, width // 30)
    shade = 0.78 + 0.12 * rings + 0.1 * fibres
    return shade[..., None] * jitter(rng, colour)


def wall_texture(rng, height: int, width: int, colour) -> np.ndarray:
    blotches = smooth_noise(rng, height, width, 3, 4)
    grain = smooth_noise(rng, height, width, height // 3, width // 3)
    shade = 0.88 + 0.12 * blotches + 0.04 * grain
    return shade[..., None] * jitter(rng, colour)


def surface_texture(rng, height: int, width: int) -> np.ndarray:
    """A table top: wood, painted board or cloth."""
    kind = rng.random()
    if kind < 0.6:
        return wood_texture(rng, height, width, pick(rng, WOODS))
    if kind < 0.8:
        return wall_texture(rng, height, width, pick(rng, PAINTED))
    weave = 0.9 + 0.1 * smooth_noise(rng, height, width, height // 2, width // 2)
    return (weave * (0.9 + 0.1 * smooth_noise(rng, height, width, 2, 3)))[..., None] * jitter(rng, pick(rng, CLOTHS))


# ---------------------------------------------------------------- items and scenes


@dataclass(frozen=True)
class ShelfPlace:
    """Where a book was put in its row of books: what a shelf inventory should find again."""

    floor: float  # canvas y of the board the row stands on
    slot: int  # the building step along the row, increasing left to right in the photo
    level: int = 0  # in a stack of books lying flat: 0 at the bottom


@dataclass
class Item:
    outline: np.ndarray  # (N, 2) float64 canvas coordinates: what the item covers
    layers: list  # (polygon, colour or texture) painted in order, all inside the outline
    is_book: bool = True
    place: ShelfPlace | None = None  # books standing in a row; None for the rest


@dataclass
class Scene:
    image: np.ndarray  # float32 RGB canvas, larger than the photo: the camera crops it
    shadow_offset: np.ndarray  # where items throw their shadow (light from above)
    shadow_blur: float
    shadow_strength: float
    plain: bool = False  # the "plain" style: no shadows, distractors or camera effects
    outlines: list = field(default_factory=list)  # every item drawn, back to front
    boxes: list = field(default_factory=list)
    is_book: list = field(default_factory=list)
    places: list = field(default_factory=list)  # each item's ShelfPlace or None


def new_scene(rng, height: int, width: int, plain: bool = False) -> Scene:
    angle = rng.uniform(0.15, 0.85) * np.pi
    offset = np.array([np.cos(angle), np.sin(angle)]) * rng.uniform(0.004, 0.025) * height
    return Scene(
        image=np.zeros((height, width, 3), np.float32), shadow_offset=offset,
        shadow_blur=rng.uniform(0.008, 0.025) * height, shadow_strength=rng.uniform(0.2, 0.5), plain=plain,
    )


def cast_shadow(scene: Scene, outline: np.ndarray) -> None:
    if scene.plain:
        return
    shifted = outline + scene.shadow_offset
    box = clipped_box(shifted, scene.image.shape, pad=int(3 * scene.shadow_blur) + 1)
    if box is None:
        return
    shadow = cv2.GaussianBlur(coverage(shifted, box, grid=1), (0, 0), scene.shadow_blur)  # blurred anyway
    scene.image[box[1]:box[3], box[0]:box[2]] *= 1 - scene.shadow_strength * shadow[..., None]


def draw(scene: Scene, item: Item) -> None:
    cast_shadow(scene, item.outline)
    for polygon, look in item.layers:
        paint(scene.image, polygon, look)
    scene.outlines.append(item.outline)
    scene.boxes.append(bounds(item.outline))
    scene.is_book.append(item.is_book)
    scene.places.append(item.place)


def visible_mask(outlines, boxes, index: int, grid: int):
    """outlines[index] minus what is drawn after it, on a `grid`-times finer raster.
    Returns the 0/1 mask, the pixel count before occlusion, and the mask's origin."""
    x0, y0, x1, y1 = boxes[index]
    mask = np.zeros(((y1 - y0) * grid, (x1 - x0) * grid), np.uint8)
    fill_polygon(mask, outlines[index], 1, (x0, y0), grid)
    full = int(mask.sum())
    for j in range(index + 1, len(outlines)):
        if overlaps(boxes[j], boxes[index]):
            fill_polygon(mask, outlines[j], 0, (x0, y0), grid)
    return mask, full, (x0, y0)


def pieces_and_holes(mask: np.ndarray) -> tuple[list[float], list[float]]:
    """Areas of the 8-connected pieces of a 0/1 mask, largest first, and of the holes in them
    (areas of the outlines through boundary pixel centres: close enough to pixel counts)."""
    contours, hierarchy = cv2.findContours(mask, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
    pieces, holes = [], []
    for contour, links in zip(contours, hierarchy[0] if hierarchy is not None else []):
        (holes if links[3] >= 0 else pieces).append(cv2.contourArea(contour))
    return sorted(pieces, reverse=True), holes


def leaves_books_whole(scene: Scene, outline: np.ndarray) -> bool:
    """Whether drawing `outline` on top keeps every book mostly visible, in one piece, without holes.

    Checked on the raster the labels are traced on, so what passes here traces as one outline.
    """
    box = bounds(outline)
    crumb = 3 * OUTLINE_GRID**2  # pieces and holes up to about 3 pixels are ignored
    for i, is_book in enumerate(scene.is_book):
        if not is_book or not overlaps(scene.boxes[i], box):
            continue
        mask, full, origin = visible_mask(scene.outlines, scene.boxes, i, OUTLINE_GRID)
        fill_polygon(mask, outline, 0, origin, OUTLINE_GRID)
        pieces, holes = pieces_and_holes(mask)
        if not pieces or pieces[0] < 0.3 * full or any(a > crumb for a in pieces[1:] + holes):
            return False
    return True


def visible_outline(scene: Scene, index: int):
    """The outline of what is seen of item `index`: its own outline when nothing covers it."""
    mask, full, origin = visible_mask(scene.outlines, scene.boxes, index, OUTLINE_GRID)
    if int(mask.sum()) == full:
        return scene.outlines[index]
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    if not contours:
        return None
    contour = cv2.approxPolyDP(max(contours, key=cv2.contourArea), 0.4 * OUTLINE_GRID, True)[:, 0, :]
    # contour points are the centres of the outermost fine-grid pixels: half a fine pixel inside
    return grow((contour + 0.5) / OUTLINE_GRID + origin, 0.5 / OUTLINE_GRID)


# ---------------------------------------------------------------- books


def spine_item(rng, corners: np.ndarray, length: float, thickness: float) -> Item:
    """A book showing its spine; corners are where the strip's (0,0), (L,0), (L,T), (0,T) go."""
    texture = spine_texture(rng, length, thickness, book_colour(rng))
    turned = corners[[2, 3, 0, 1]] if rng.random() < 0.5 else corners  # titles run up or down the spine
    return Item(corners, [(facing_corners(turned), texture)])


def cover_item(rng, corners: np.ndarray) -> Item:
    width = np.linalg.norm(corners[1] - corners[0])
    height = np.linalg.norm(corners[3] - corners[0])
    return Item(corners, [(corners, cover_texture(rng, width, height, book_colour(rng)))])


def upright(x: float, floor: float, width: float, height: float) -> np.ndarray:
    """Spine corners of a standing book, text running from its foot to its head."""
    return rectangle(x, floor - height, x + width, floor)[[3, 0, 1, 2]]


def shelf_books(rng, x_start: float, x_end: float, floor: float, clearance: float, budget: int) -> list[Item]:
    """A row of books standing on `floor`, between x_start and x_end, under `clearance` of headroom."""
    items = []
    x = x_start + (rng.uniform(0, 0.4) * clearance if rng.random() < 0.5 else 0)
    gappy = rng.random() < 0.3
    leaning_on = None  # (right edge, height) of the standing book a leaner can rest on
    mirrored = rng.random() < 0.5  # leaners lean left when built; mirroring makes them lean right

    def place(points):  # build left to right, mirror when asked
        return points if not mirrored else np.column_stack([x_start + x_end - points[:, 0], points[:, 1]])

    while len(items) < budget:
        width = clearance * np.exp(rng.uniform(np.log(0.06), np.log(0.24)))
        height = clearance * rng.uniform(0.55, 0.96)
        kind = rng.random()
        if kind < 0.05:  # a few books lying flat, spines out
            stack, top, right = [], floor, x
            for _ in range(rng.integers(2, 6)):
                thick = min(width * rng.uniform(0.5, 1.0), top - (floor - 0.9 * clearance))
                if thick < 0.03 * clearance:
                    break
                length = height * rng.uniform(0.85, 1.0)
                shift = x + rng.uniform(0, 0.06) * clearance
                corners = rectangle(shift, top - thick, shift + length, top)
                stack.append((corners, length, thick))
                top, right = top - thick, max(right, shift + length)
            new_items = [spine_item(rng, place(c), length, t) for c, length, t in stack]
            leaning_on = None
        elif kind < 0.08:  # one facing out, its cover tipped back a little
            cover_w = height * rng.uniform(0.62, 0.78)
            tip = rng.uniform(0, 0.05) * cover_w
            corners = rectangle(x, floor - height, x + cover_w, floor) + [[tip, 0], [-tip, 0], [0, 0], [0, 0]]
            new_items, right, leaning_on = [cover_item(rng, place(corners))], x + cover_w, None
        elif kind < 0.17 and leaning_on is not None:
            angle = rng.uniform(0.12, 0.5)
            c, s = np.cos(angle), np.sin(angle)
            height = min(height, (clearance * 0.97 - width * s) / c)
            prev_right, prev_height = leaning_on
            foot_x = prev_right + (height * s if height * c <= prev_height else prev_height * s / c)
            foot = np.array([foot_x, floor])
            along, up = np.array([c, -s]), np.array([-s, -c])
            corners = np.array([foot, foot + height * up, foot + height * up + width * along, foot + width * along])
            new_items, right, leaning_on = [spine_item(rng, place(corners), height, width)], foot_x + width * c, None
        else:
            new_items, right = [spine_item(rng, place(upright(x, floor, width, height)), height, width)], x + width
            leaning_on = (right, height)
        if right > x_end:
            break
        slot = len(items)  # one per step: a stack's books share it
        for level, item in enumerate(new_items):  # a stack is built bottom up
            item.place = ShelfPlace(floor, -slot if mirrored else slot, level)
        items.extend(new_items)
        if rng.random() < (0.2 if gappy else 0.06):
            x = right + rng.uniform(0.1, 0.6) * clearance
            leaning_on = None
        else:
            x = right + rng.uniform(0, 0.012) * clearance
    return items[:budget]


def cylinder_item(rng, base: np.ndarray, radius: float, height: float) -> Item:
    """A mug or vase standing at `base`: the hull of its top and bottom ellipses."""
    squash = rng.uniform(0.25, 0.5)
    axes = (max(int(radius * 16), 1), max(int(radius * squash * 16), 1))
    ellipse = cv2.ellipse2Poly((0, 0), axes, 0, 0, 360, 10).astype(np.float64) / 16
    top = ellipse + base - (0, height)
    outline = cv2.convexHull(np.concatenate([ellipse + base, top]).astype(np.float32))[:, 0, :].astype(np.float64)
    colour = book_colour(rng)
    highlight = rectangle(base[0] - 0.5 * radius, base[1] - height, base[0] - 0.3 * radius, base[1])
    opening = ellipse * 0.85 + base - (0, height)
    layers = [(outline, colour), (highlight, np.minimum(colour * 1.3 + 30, 255)), (opening, colour * 0.4)]
    return Item(outline, layers, is_book=False)


def lying_book(rng, cover: np.ndarray, thickness: float) -> Item:
    """A book lying flat: its cover quad (top-left, top-right, bottom-right, bottom-left, spine on
    the left) seen from above, with the sides that face the camera below it."""
    drop = np.array([0.0, thickness])
    colour = book_colour(rng)
    outline = cv2.convexHull(np.concatenate([cover, cover + drop]).astype(np.float32))[:, 0, :].astype(np.float64)
    layers = [(outline, jitter(rng, PAPER, 10) * 0.85)]
    centre = cover.mean(axis=0)
    side_shade = rng.uniform(0.65, 0.85)
    for k in range(4):
        a, b = cover[k], cover[(k + 1) % 4]
        normal = np.array([b[1] - a[1], a[0] - b[0]])
        if np.dot(normal, (a + b) / 2 - centre) < 0:
            normal = -normal
        if normal[1] <= 0:  # faces away from the camera
            continue
        length = np.linalg.norm(b - a)
        texture = spine_texture(rng, length, thickness, colour) if k == 3 else page_texture(rng, length, thickness)
        layers.append((facing_corners(np.array([a, b, b + drop, a + drop])), shaded(texture, side_shade)))
    width, height = np.linalg.norm(cover[1] - cover[0]), np.linalg.norm(cover[3] - cover[0])
    layers.append((cover, cover_texture(rng, width, height, colour)))
    return Item(outline, layers)


# ---------------------------------------------------------------- scene builders


def build_shelves(rng, scene: Scene, with_books: bool) -> None:
    height, width = scene.image.shape[:2]
    wood = pick(rng, WOODS) if rng.random() < 0.7 else pick(rng, PAINTED)
    if rng.random() < 0.5:
        back = wood_texture(rng, height, width, wood, vertical=True)
    else:
        back = wall_texture(rng, height, width, pick(rng, WALLS))
    scene.image[:] = back * rng.uniform(0.45, 0.8)
    pitch = height * rng.uniform(0.35, 0.85)  # board to board
    board = pitch * rng.uniform(0.06, 0.12)
    sides = np.where(rng.random(2) < 0.3, rng.uniform(0.03, 0.25, 2) * width, 0.0)  # side panels in view
    left, right = sides[0], width - sides[1]
    floors = np.arange(rng.uniform(0.25, 1.0) * pitch, height + pitch, pitch)
    for floor in floors:  # the board's front edge, and the shade under it on the back panel
        front = rectangle(left, floor, right, floor + board)
        paint(scene.image, front, wood_texture(rng, max(int(board), 2), max(int(right - left), 2), wood))
        lit_edge = rectangle(left, floor, right, floor + max(0.15 * board, 1))
        paint(scene.image, lit_edge, np.minimum(jitter(rng, wood) * 1.25 + 20, 255))
        shade_from, shade_to = max(int(floor + board), 0), min(int(floor + board + 0.35 * pitch), height)
        if shade_to > shade_from:
            ramp = np.linspace(0.55, 1.0, shade_to - shade_from, dtype=np.float32)
            scene.image[shade_from:shade_to, int(left) : int(right)] *= ramp[:, None, None]
    for x0, x1 in ((0, left), (right, width)):  # side panels of the case
        if x1 - x0 > 1:
            panel = rectangle(x0, 0, x1, height)
            paint(scene.image, panel, wood_texture(rng, height, max(int(x1 - x0), 2), wood, vertical=True))
    if not with_books:
        return
    budget = int(rng.integers(4, MAX_SHELF_BOOKS + 1))
    in_view = floors[(floors > 0.3 * pitch) & (floors < height + 0.4 * pitch)]  # rows whose books show
    for floor in rng.permutation(in_view):
        books = shelf_books(rng, left, right, floor, pitch - board, budget - sum(scene.is_book))
        for item in books:
            draw(scene, item)
        if books and rng.random() < 0.15:  # a vase or mug in front of the books
            radius = (pitch - board) * rng.uniform(0.06, 0.15)
            base = np.array([rng.uniform(left + radius, right - radius), floor + radius * 0.1])
            vase = cylinder_item(rng, base, radius, (pitch - board) * rng.uniform(0.2, 0.55))
            if leaves_books_whole(scene, vase.outline) and not scene.plain:
                draw(scene, vase)


def build_table(rng, scene: Scene, with_books: bool) -> None:
    height, width = scene.image.shape[:2]
    scene.image[:] = wall_texture(rng, height, width, pick(rng, WALLS))
    horizon = height * rng.uniform(-0.3, 0.45)  # the table's far edge
    near_half = width * rng.uniform(0.7, 1.1)
    far_half = near_half * rng.uniform(0.55, 0.9)
    centre = width * rng.uniform(0.35, 0.65)
    near = height * rng.uniform(1.05, 1.4)
    table = np.array([
        [centre - far_half, horizon], [centre + far_half, horizon],
        [centre + near_half, near], [centre - near_half, near],
    ])
    plane_to_image = cv2.getPerspectiveTransform(np.float32([[0, 0], [1, 0], [1, 1], [0, 1]]), table.astype(np.float32))
    image_to_plane = np.linalg.inv(plane_to_image)
    paint(scene.image, table, surface_texture(rng, 160, 240))
    if not with_books:
        return
    if horizon > 0.2 * height and rng.random() < 0.5:  # books standing against the wall
        x0, x1 = width * rng.uniform(0, 0.4), width * rng.uniform(0.6, 1.0)
        for item in shelf_books(rng, x0, x1, horizon + 0.01 * height, height * rng.uniform(0.2, 0.45), 12):
            draw(scene, item)
    top = max(horizon, 0) + 0.1 * height
    spots = rng.uniform((0.08 * width, top), (0.92 * width, max(top, 0.95 * height)), (rng.integers(2, 8), 2))
    stacks = map_points(image_to_plane, spots)
    for spot in stacks[np.argsort(stacks[:, 1])]:  # far stacks first: near ones cover them
        base_angle = rng.uniform(-np.pi, np.pi)
        lift = 0.0
        for _ in range(1 if rng.random() < 0.35 else rng.integers(2, 7)):
            size = np.array([1.0, rng.uniform(1.2, 1.55)]) * rng.uniform(0.08, 0.22)
            centre_uv = spot + rng.normal(0, 0.015, 2)
            cover = map_points(plane_to_image, rotated_rect(centre_uv, size, base_angle + rng.normal(0, 0.15)))
            thickness = size[1] * rng.uniform(0.04, 0.14) * pixels_per_unit(plane_to_image, centre_uv)
            book = lying_book(rng, cover - (0, lift + thickness), thickness)
            if not leaves_books_whole(scene, book.outline):
                break
            draw(scene, book)
            lift += thickness
    if rng.random() < 0.3:
        base = rng.uniform((0.1 * width, max(horizon, 0) + 0.2 * height), (0.9 * width, height))
        scale = pixels_per_unit(plane_to_image, map_points(image_to_plane, base[None])[0])
        mug = cylinder_item(rng, base, scale * rng.uniform(0.03, 0.06), scale * rng.uniform(0.08, 0.14))
        if leaves_books_whole(scene, mug.outline) and not scene.plain:
            draw(scene, mug)


def map_points(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Apply a 3x3 perspective map to (N, 2) points."""
    return cv2.perspectiveTransform(np.asarray(points, np.float64).reshape(-1, 1, 2), matrix).reshape(-1, 2)


def pixels_per_unit(plane_to_image: np.ndarray, uv: np.ndarray) -> float:
    """How many image pixels one unit of the table plane spans around `uv` (across the view)."""
    a, b = map_points(plane_to_image, np.array([uv, uv + (0.01, 0)]))
    return float(np.linalg.norm(b - a)) / 0.01


# ---------------------------------------------------------------- camera


def photograph(rng, canvas: np.ndarray, width: int, height: int, plain: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Take a photo of the canvas: a slightly tilted camera, uneven light, blur and sensor noise
    (``plain``: the tilt alone; the random draws are the same, so the scenes are too).
    Returns the uint8 photo and the 3x3 map from canvas to photo coordinates."""
    margin = (np.array(canvas.shape[1::-1]) - (width, height)) / 2
    photo_corners = np.float32([[0, 0], [width, 0], [width, height], [0, height]])
    tilt = rng.uniform(-0.8, 0.8, (4, 2)) * margin if rng.random() < 0.8 else np.zeros((4, 2))
    to_photo = cv2.getPerspectiveTransform((photo_corners + margin + tilt).astype(np.float32), photo_corners)
    centres = np.array([[1, 0, 0.5], [0, 1, 0.5], [0, 0, 1]])  # OpenCV pixel indices sit at pixel centres
    photo = cv2.warpPerspective(
        canvas, np.linalg.inv(centres) @ to_photo @ centres, (width, height),
        flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE,
    )
    across = (np.arange(width, dtype=np.float32) + 0.5) / width - 0.5
    down = (np.arange(height, dtype=np.float32) + 0.5) / height - 0.5
    angle = rng.uniform(0, 2 * np.pi)
    light = 1 + rng.uniform(0, 0.7) * (np.cos(angle) * across[None, :] + np.sin(angle) * down[:, None])
    light *= 1 - rng.uniform(0, 0.8) * (across[None, :] ** 2 + down[:, None] ** 2)  # vignetting
    cast = (rng.uniform(0.7, 1.2) * rng.uniform(0.92, 1.08, 3)).astype(np.float32)
    blur = rng.uniform(0.3, 1.1) if rng.random() < 0.7 else 0.0
    noise = rng.standard_normal(photo.shape, dtype=np.float32) * rng.uniform(1, 5)
    if not plain:
        photo *= light[..., None] * cast
        photo = cv2.GaussianBlur(photo, (0, 0), blur) if blur else photo
        photo += noise
    return np.clip(photo + 0.5, 0, 255).astype(np.uint8), to_photo


def render_scene(
    rng: np.random.Generator, width: int, height: int, kind: str | None = None, style: str = "photo"
) -> tuple[np.ndarray, list[np.ndarray]]:
    """RGB uint8 HxWx3 image and one (N,2) float32 polygon (x, y pixel coords) per visible book.

    `kind` forces one of SCENE_KINDS; by default it is drawn with SCENE_WEIGHTS.
    Coordinates are rounded to 0.1 px, as the VIA file stores them.
    """
    photo, books = render_books(rng, width, height, kind, style)
    return photo, [polygon for polygon, _ in books]


def render_books(
    rng: np.random.Generator, width: int, height: int, kind: str | None = None, style: str = "photo"
) -> tuple[np.ndarray, list[tuple[np.ndarray, ShelfPlace | None]]]:
    """render_scene's photo, and its books as (polygon, where the book was put in its row)."""
    if kind is None:
        kind = SCENE_KINDS[rng.choice(len(SCENE_KINDS), p=SCENE_WEIGHTS)]
    if kind not in SCENE_KINDS:
        raise ConfigError(f"scene kind {kind!r} is not one of {SCENE_KINDS}")
    margin = round(0.1 * max(width, height))  # room for the camera tilt
    if style not in STYLES:
        raise ConfigError(f"style {style!r} is not one of {STYLES}")
    scene = new_scene(rng, height + 2 * margin, width + 2 * margin, plain=style == "plain")
    if kind == "shelf" or (kind == "empty" and rng.random() < 0.5):
        build_shelves(rng, scene, with_books=kind != "empty")
    else:
        build_table(rng, scene, with_books=kind != "empty")
    photo, to_photo = photograph(rng, scene.image, width, height, plain=scene.plain)
    return photo, visible_books(scene, to_photo, width, height)


def big_enough(points: np.ndarray, photo_area: float) -> bool:
    """Whether a visible part is worth labelling: not tiny, and not a sliver along the photo's edge."""
    area = abs(signed_area(points))
    mean_width = 2 * area / cv2.arcLength(points.astype(np.float32), True)
    return area >= MIN_LABEL_AREA * photo_area and mean_width >= MIN_LABEL_WIDTH


def visible_books(scene: Scene, to_photo: np.ndarray, width: int,
                  height: int) -> list[tuple[np.ndarray, ShelfPlace | None]]:
    """The visible outline of each book in photo coordinates, clipped to the photo, with its place."""
    books = []
    for i, is_book in enumerate(scene.is_book):
        outline = visible_outline(scene, i) if is_book else None
        if outline is None:
            continue
        points = map_points(to_photo, outline)
        points = np.round(clip_to_rect(points, width, height), 1)
        if len(points):
            points = points[np.any(points != np.roll(points, 1, axis=0), axis=1)]  # repeated vertices
        if len(points) >= 3 and big_enough(points, width * height):
            books.append((points.astype(np.float32), scene.places[i]))
    return books


def shelf_order(places: list[ShelfPlace | None]) -> list[tuple[int, int] | None]:
    """(row, position), both from 1, of each book as it was put: rows top to bottom among those with
    a book here, positions left to right in the row, a stack of books lying flat taking one place
    and numbered top down. None for a book not standing in a row."""
    floors = sorted({place.floor for place in places if place is not None})
    order = [None] * len(places)
    for row, floor in enumerate(floors, 1):
        in_row = [i for i, place in enumerate(places) if place is not None and place.floor == floor]
        for position, i in enumerate(sorted(in_row, key=lambda i: (places[i].slot, -places[i].level)), 1):
            order[i] = (row, position)
    return order


# ---------------------------------------------------------------- dataset


ANNOTATION_FILE, IMAGE_FOLDER = "via_region_data.json", "images"  # a rendered set's layout under its folder


def generate_dataset(
    out_dir: str | Path, num_images: int, seed: int = 0, width: int = 320, height: int = 240, progress: bool = True,
    style: str = "photo",
) -> Path:
    """Write out_dir/images/synth_00000.jpg ... (JPEG quality 92) and out_dir/via_region_data.json;
    return the JSON path. Deterministic for a seed (same bytes for same args). Shows a tqdm bar when progress."""
    if num_images < 0 or width < 32 or height < 32:
        raise ConfigError(f"need num_images >= 0 and at least 32x32 pixels, got {num_images} images of {width}x{height}")
    out_dir = Path(out_dir)
    image_dir = out_dir / IMAGE_FOLDER
    image_dir.mkdir(parents=True, exist_ok=True)
    json_path = out_dir / ANNOTATION_FILE
    annotations = AnnotationSet(source=json_path, flavour="synthetic", records=[], class_names=("book",))
    for index in tqdm(range(num_images), desc="synthetic books", unit="img", disable=not progress):
        image, polygons = render_scene(np.random.default_rng([seed, index]), width, height, style=style)
        bgr = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
        data = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])[1].tobytes()
        name = f"synth_{index:05d}.jpg"
        (image_dir / name).write_bytes(data)
        instances = [Instance((polygon,), 1) for polygon in polygons]
        annotations.records.append(ImageRecord(name, image_dir / name, instances))
    write_via(annotations, json_path, image_root=image_dir)  # bare file names: the image root is images/
    return json_path
