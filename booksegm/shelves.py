"""Books on shelves from their masks alone: shelf rows, left-to-right order, standing or lying, and an
upright crop of each spine. No model: ``booksegm inventory`` feeds it predictions, the tests feed it
the synthetic generator's own masks.

The method, in short (docs/inventory.md has it in full):

1. **Frame.** Each mask's minimum-area rectangle gives its long axis; the median of the axes' tilts
   from the nearest image axis is the photo's turn: ``u`` runs along the shelves, ``v`` down across them.
2. **Orientation.** A book whose long axis is nearer ``u`` than ``v`` is lying, else standing.
3. **Stacks.** Lying books that overlap along ``u`` and touch along ``v`` are one place in the row.
4. **Rows.** Places taken left to right join the row whose latest places share their stretch of
   ``v``, else start a new row: neighbours on one board share their height, a board parts rows.
5. **Numbers.** Rows top to bottom, places left to right, a stack's books top down.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

ROW_OVERLAP = 0.1  # share of the shorter stretch along v that a place and its row's latest ones cover together
ROW_NEIGHBOURS = 3  # how many of a row's latest places a new one is compared with
STACK_OVERLAP = 0.5  # share of the shorter length along u that two lying books of one stack share
STACK_GAP = 0.25  # largest gap along v between two books of one stack, in the thinner one's thickness
GREY = 128  # what a crop shows outside the book's mask


@dataclass(frozen=True)
class Shape:
    """A mask's geometry, in continuous pixel coordinates (pixel (i, j) covers [j, j+1) x [i, i+1))."""

    hull: np.ndarray  # (K, 2) convex hull of the pixel centres
    centre: np.ndarray  # (2,) mean of the pixel centres
    area: int  # pixels
    box: tuple[int, int, int, int]  # x0, y0, x1, y1 on pixel edges
    axis: np.ndarray  # (2,) unit vector along the minimum-area rectangle's long side, sign arbitrary
    length: float  # the rectangle's long side, px
    thickness: float  # its short side, px


@dataclass(frozen=True)
class ShelvedBook:
    """One book in a photo's inventory: ``index`` is its mask's index in the list given."""

    index: int
    row: int  # 1 = the top row
    position: int  # 1 = the leftmost place of its row
    standing: bool
    up: tuple[float, float]  # the photo direction that is up in the book's crop (unit vector)
    shape: Shape


def mask_shape(mask: np.ndarray) -> Shape | None:
    """The geometry of a (H, W) mask; None when it is empty."""
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return None
    centres = np.column_stack([xs, ys]).astype(np.float32) + 0.5
    hull = cv2.convexHull(centres)[:, 0, :].astype(np.float64)
    corners = cv2.boxPoints(cv2.minAreaRect(hull.astype(np.float32))).astype(np.float64)
    sides = [corners[1] - corners[0], corners[2] - corners[1]]
    long_side, short_side = sorted(sides, key=lambda side: -np.linalg.norm(side))
    length = float(np.linalg.norm(long_side))
    axis = long_side / length if length > 0 else np.array([0.0, 1.0])
    box = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
    # + 1: the rectangle runs through pixel centres, the book covers half a pixel more on each side
    return Shape(hull, centres.mean(axis=0).astype(np.float64), len(xs), box, axis, length + 1,
                 float(np.linalg.norm(short_side)) + 1)


def fold(angle: float | np.ndarray) -> float | np.ndarray:
    """An angle's tilt from the nearest image axis, in [-pi/4, pi/4)."""
    return (angle + math.pi / 4) % (math.pi / 2) - math.pi / 4


def shelf_angle(shapes: list[Shape]) -> float:
    """How far the shelves are turned from the image's x axis (radians, y down): the median of the
    books' folded long-axis tilts, taken around their circular mean so the fold's edge cannot split them."""
    if not shapes:
        return 0.0
    tilts = fold(np.array([math.atan2(s.axis[1], s.axis[0]) for s in shapes]))
    centre = float(np.angle(np.exp(4j * tilts).mean())) / 4
    return float(fold(centre + np.median(fold(tilts - centre))))


def arrange(masks: list[np.ndarray] | np.ndarray) -> list[ShelvedBook]:
    """The books of one photo in reading order (rows top to bottom, each left to right); empty masks
    are left out."""
    shapes = {i: shape for i, mask in enumerate(masks) if (shape := mask_shape(mask)) is not None}
    if not shapes:
        return []
    layout = Layout(shapes, shelf_angle(list(shapes.values())))
    books = []
    for row_number, row in enumerate(layout.rows, 1):
        in_order = [i for place in row for i in sorted(place, key=lambda i: shapes[i].centre @ layout.v)]
        for position, i in enumerate(in_order, 1):
            standing = layout.standing[i]
            up = -layout.v if standing else layout.u  # a lying book turns a quarter left: its title reads bottom to top
            books.append(ShelvedBook(i, row_number, position, standing, (float(up[0]), float(up[1])), shapes[i]))
    return books


class Layout:
    """The books' places and rows in the shelf frame turned ``angle`` from the image's x axis: ``u``
    along the shelves, ``v`` down across them. A place is a standing book or a stack (a list of mask
    indices); ``rows`` lists each row's places left to right, rows top to bottom."""

    def __init__(self, shapes: dict[int, Shape], angle: float):
        self.u = np.array([math.cos(angle), math.sin(angle)])
        self.v = np.array([-math.sin(angle), math.cos(angle)])
        self.shapes = shapes
        self.u_span = {i: span(s.hull @ self.u) for i, s in shapes.items()}
        self.v_span = {i: pixel_edges(span(s.hull @ self.v)) for i, s in shapes.items()}
        self.standing = {i: abs(s.axis @ self.v) >= abs(s.axis @ self.u) for i, s in shapes.items()}
        lying = [i for i in shapes if not self.standing[i]]
        self.places = self.stacks(lying) + [[i] for i in shapes if self.standing[i]]
        self.rows = self.group_rows()

    def centre_u(self, place: list[int]) -> float:
        return float(np.average([self.shapes[i].centre @ self.u for i in place],
                                weights=[self.shapes[i].area for i in place]))

    def place_v(self, place: list[int]) -> tuple[float, float]:
        return min(self.v_span[i][0] for i in place), max(self.v_span[i][1] for i in place)

    def stacks(self, lying: list[int]) -> list[list[int]]:
        """Lying books grouped into stacks (union-find over touching pairs)."""
        parent = {i: i for i in lying}

        def root(i: int) -> int:
            while parent[i] != i:
                i = parent[i]
            return i

        for k, i in enumerate(lying):
            for j in lying[k + 1:]:
                gap = max(self.v_span[i][0], self.v_span[j][0]) - min(self.v_span[i][1], self.v_span[j][1])
                if (overlap(self.u_span[i], self.u_span[j]) > STACK_OVERLAP
                        and gap <= STACK_GAP * min(self.shapes[i].thickness, self.shapes[j].thickness)):
                    parent[root(i)] = root(j)
        groups: dict[int, list[int]] = {}
        for i in lying:
            groups.setdefault(root(i), []).append(i)
        return list(groups.values())

    def group_rows(self) -> list[list[list[int]]]:
        rows: list[list[list[int]]] = []
        for place in sorted(self.places, key=self.centre_u):
            reach = [self.place_v([i for p in row[-ROW_NEIGHBOURS:] for i in p]) for row in rows]
            shared = [overlap(stretch, self.place_v(place)) for stretch in reach]
            best = int(np.argmax(shared)) if shared else -1
            if best >= 0 and shared[best] > ROW_OVERLAP:
                rows[best].append(place)
            else:
                rows.append([place])
        return sorted(rows, key=lambda row: np.mean([self.place_v(p)[1] for p in row]))


def span(values: np.ndarray) -> tuple[float, float]:
    return float(values.min()), float(values.max())


def pixel_edges(stretch: tuple[float, float]) -> tuple[float, float]:
    """A stretch between pixel centres grown to their edges: books that touch then share an edge."""
    return stretch[0] - 0.5, stretch[1] + 0.5


def overlap(a: tuple[float, float], b: tuple[float, float]) -> float:
    """How much two stretches share, as a share of the shorter one."""
    shortest = max(min(a[1] - a[0], b[1] - b[0]), 1e-9)
    return max(0.0, min(a[1], b[1]) - max(a[0], b[0])) / shortest


def upright_crop(image: np.ndarray, mask: np.ndarray, book: ShelvedBook) -> np.ndarray:
    """The book cut out along its minimum-area rectangle and turned so its long side is vertical
    (``book.up`` at the top); what lies outside its mask is grey."""
    shape = book.shape
    up = np.array(book.up)
    axis = shape.axis if shape.axis @ up >= 0 else -shape.axis  # the long side, pointing up
    right = np.array([-axis[1], axis[0]])  # the crop's x axis in the photo (y down)
    width, height = max(1, math.ceil(shape.thickness)), max(1, math.ceil(shape.length))
    # the rectangle's centre, from the hull: the mean of the pixel centres is off-centre for a lopsided mask
    across, along = shape.hull @ right, shape.hull @ axis
    centre = right * (across.min() + across.max()) / 2 + axis * (along.min() + along.max()) / 2
    # greyed before turning, so the edge pixels blend the book with grey, not with what lies beside it
    x0, y0, x1, y1 = shape.box
    x0, y0 = max(x0 - 1, 0), max(y0 - 1, 0)
    source = image[y0:y1 + 1, x0:x1 + 1].copy()
    source[~mask[y0:y1 + 1, x0:x1 + 1].astype(bool)] = GREY
    # crop point (x, y) -> photo point centre + (x - w/2) right - (y - h/2) axis; OpenCV indexes pixel centres
    matrix = np.column_stack([right, -axis, centre - right * width / 2 + axis * height / 2 - (x0, y0)])
    matrix[:, 2] += matrix[:, :2] @ [0.5, 0.5] - 0.5
    return cv2.warpAffine(source, matrix, (width, height), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=(GREY,) * 3)
