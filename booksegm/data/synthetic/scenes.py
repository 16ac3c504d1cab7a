"""Scenes drawn item by item, back to front: rows and stacks of books, bookcases, tables, what stays in view."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import cv2
import numpy as np

from booksegm.data.synthetic.geometry import (
    bounds,
    clipped_box,
    coverage,
    facing_corners,
    fill_polygon,
    grow,
    map_points,
    overlaps,
    paint,
    pixels_per_unit,
    rectangle,
    rotated_rect,
)
from booksegm.data.synthetic.textures import (
    PAINTED,
    PAPER,
    WALLS,
    WOODS,
    book_colour,
    cover_texture,
    jitter,
    page_texture,
    pick,
    shaded,
    spine_texture,
    surface_texture,
    wall_texture,
    wood_texture,
)

if TYPE_CHECKING:
    from booksegm.data.synthetic.spine_photos import SpineCutouts

SCENE_KINDS = ("shelf", "table", "empty")
SCENE_WEIGHTS = (0.57, 0.38, 0.05)
MAX_SHELF_BOOKS = 32  # real shelves hold more; the set aims at roughly 3-25 books per photo
MAX_PACKED_BOOKS = 90  # a packed bookcase: its rows full, edge to edge
OUTLINE_GRID = 4  # visible outlines are traced on a grid this much finer than pixels


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
    spines: SpineCutouts | None = None  # real spines to paint books with; None: drawn ones only
    packed_share: float = 0.0  # share of bookcases drawn close up with their rows packed full
    flat_share: float = 0.0  # share of places in every row (packed too) given to a stack lying flat


def new_scene(rng, height: int, width: int, plain: bool = False, spines: SpineCutouts | None = None,
              packed_share: float = 0.0, flat_share: float = 0.0) -> Scene:
    angle = rng.uniform(0.15, 0.85) * np.pi
    offset = np.array([np.cos(angle), np.sin(angle)]) * rng.uniform(0.004, 0.025) * height
    return Scene(
        image=np.zeros((height, width, 3), np.float32), shadow_offset=offset,
        shadow_blur=rng.uniform(0.008, 0.025) * height, shadow_strength=rng.uniform(0.2, 0.5), plain=plain,
        spines=spines, packed_share=packed_share, flat_share=flat_share,
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


def spine_look(rng, length: float, thickness: float, colour, spines: SpineCutouts | None) -> np.ndarray:
    """A spine's strip: cut from a real photo (at the cut-outs' share), else drawn in ``colour``.
    Without cut-outs no random number is drawn here: scenes stay as they were."""
    if spines is not None and rng.random() < spines.share:
        return spines.strip(rng, length, thickness)
    return spine_texture(rng, length, thickness, colour)


def spine_item(rng, corners: np.ndarray, length: float, thickness: float, spines: SpineCutouts | None) -> Item:
    """A book showing its spine; corners are where the strip's (0,0), (L,0), (L,T), (0,T) go."""
    texture = spine_look(rng, length, thickness, book_colour(rng), spines)
    turned = corners[[2, 3, 0, 1]] if rng.random() < 0.5 else corners  # titles run up or down the spine
    return Item(corners, [(facing_corners(turned), texture)])


def cover_item(rng, corners: np.ndarray) -> Item:
    width = np.linalg.norm(corners[1] - corners[0])
    height = np.linalg.norm(corners[3] - corners[0])
    return Item(corners, [(corners, cover_texture(rng, width, height, book_colour(rng)))])


def upright(x: float, floor: float, width: float, height: float) -> np.ndarray:
    """Spine corners of a standing book, text running from its foot to its head."""
    return rectangle(x, floor - height, x + width, floor)[[3, 0, 1, 2]]


def shelf_books(rng, x_start: float, x_end: float, floor: float, clearance: float, budget: int,
                spines: SpineCutouts | None, packed: bool = False, flat_share: float = 0.0) -> list[Item]:
    """A row of books standing on `floor`, between x_start and x_end, under `clearance` of headroom;
    ``packed``: thinner books, edge to edge from x_start, seldom a gap; ``flat_share``: the share of
    places that hold a stack lying flat, packed rows included, beside a loose row's own few."""
    items = []
    x = x_start + (rng.uniform(0, 0.4) * clearance if rng.random() < 0.5 and not packed else 0)
    gappy = rng.random() < 0.3 and not packed
    leaning_on = None  # (right edge, height) of the standing book a leaner can rest on
    mirrored = rng.random() < 0.5  # leaners lean left when built; mirroring makes them lean right

    def place(points):  # build left to right, mirror when asked
        return points if not mirrored else np.column_stack([x_start + x_end - points[:, 0], points[:, 1]])

    while len(items) < budget:
        width = clearance * np.exp(rng.uniform(np.log(0.045 if packed else 0.06), np.log(0.16 if packed else 0.24)))
        height = clearance * rng.uniform(0.55, 0.96)
        # drawn only when asked for, so that scenes without extra stacks stay as they were
        stacked = flat_share > 0 and rng.random() < flat_share
        kind = rng.uniform(0.08, 1.0) if packed else rng.random()  # a packed row has no room for stacks or covers
        if stacked or kind < 0.05:  # books lying flat, spines out
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
            new_items = [spine_item(rng, place(c), length, t, spines) for c, length, t in stack]
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
            new_items = [spine_item(rng, place(corners), height, width, spines)]
            right, leaning_on = foot_x + width * c, None
        else:
            new_items = [spine_item(rng, place(upright(x, floor, width, height)), height, width, spines)]
            right = x + width
            leaning_on = (right, height)
        if right > x_end:
            break
        slot = len(items)  # one per step: a stack's books share it
        for level, item in enumerate(new_items):  # a stack is built bottom up
            item.place = ShelfPlace(floor, -slot if mirrored else slot, level)
        items.extend(new_items)
        if rng.random() < (0.2 if gappy else 0.015 if packed else 0.06):
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


def lying_book(rng, cover: np.ndarray, thickness: float, spines: SpineCutouts | None) -> Item:
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
        texture = spine_look(rng, length, thickness, colour, spines) if k == 3 else page_texture(rng, length, thickness)
        layers.append((facing_corners(np.array([a, b, b + drop, a + drop])), shaded(texture, side_shade)))
    width, height = np.linalg.norm(cover[1] - cover[0]), np.linalg.norm(cover[3] - cover[0])
    layers.append((cover, cover_texture(rng, width, height, colour)))
    return Item(outline, layers)


# ---------------------------------------------------------------- scene builders


def build_shelves(rng, scene: Scene, with_books: bool) -> None:
    height, width = scene.image.shape[:2]
    # drawn only when asked for, so that scenes without packed shelves stay as they were
    packed = scene.packed_share > 0 and with_books and rng.random() < scene.packed_share
    wood = pick(rng, WOODS) if rng.random() < 0.7 else pick(rng, PAINTED)
    if rng.random() < 0.5:
        back = wood_texture(rng, height, width, wood, vertical=True)
    else:
        back = wall_texture(rng, height, width, pick(rng, WALLS))
    scene.image[:] = back * rng.uniform(0.45, 0.8)
    pitch = height * rng.uniform(0.6, 1.1) if packed else height * rng.uniform(0.35, 0.85)  # board to board
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
    budget = MAX_PACKED_BOOKS if packed else int(rng.integers(4, MAX_SHELF_BOOKS + 1))
    in_view = floors[(floors > 0.3 * pitch) & (floors < height + 0.4 * pitch)]  # rows whose books show
    for floor in rng.permutation(in_view):
        books = shelf_books(rng, left, right, floor, pitch - board, budget - sum(scene.is_book), scene.spines, packed,
                            scene.flat_share)
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
        clearance = height * rng.uniform(0.2, 0.45)
        for item in shelf_books(rng, x0, x1, horizon + 0.01 * height, clearance, 12, scene.spines):
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
            book = lying_book(rng, cover - (0, lift + thickness), thickness, scene.spines)
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
