"""The photo of a scene (tilt, light, blur, noise) and the visible books labelled in it."""

from __future__ import annotations

from typing import TYPE_CHECKING

import cv2
import numpy as np

from booksegm.config import ConfigError
from booksegm.data.synthetic.geometry import clip_to_rect, map_points, signed_area
from booksegm.data.synthetic.scenes import (
    SCENE_KINDS,
    SCENE_WEIGHTS,
    Scene,
    ShelfPlace,
    build_shelves,
    build_table,
    new_scene,
    visible_outline,
)

if TYPE_CHECKING:
    from booksegm.data.synthetic.spine_photos import SpineCutouts

STYLES = ("photo", "plain")  # plain: the same scenes without light, shadows, blur, noise or vases and mugs
MIN_LABEL_AREA = 0.0006  # share of the photo below which a visible book is not labelled
MIN_LABEL_WIDTH = 2.5  # pixels (2 * area / perimeter): thinner visible parts are not labelled


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
    rng: np.random.Generator, width: int, height: int, kind: str | None = None, style: str = "photo",
    spines: SpineCutouts | None = None, packed_share: float = 0.0, flat_share: float = 0.0,
) -> tuple[np.ndarray, list[np.ndarray]]:
    """RGB uint8 HxWx3 image and one (N,2) float32 polygon (x, y pixel coords) per visible book.

    `kind` forces one of SCENE_KINDS; by default it is drawn with SCENE_WEIGHTS. `spines`: real
    spines that many of the books are painted with (booksegm.data.synthetic.spine_photos);
    `packed_share`: the share of bookcases seen close up with their rows packed full of thin spines;
    `flat_share`: the share of places in every row given to a stack of books lying flat.
    Coordinates are rounded to 0.1 px, as the VIA file stores them.
    """
    photo, books = render_books(rng, width, height, kind, style, spines, packed_share, flat_share)
    return photo, [polygon for polygon, _ in books]


def render_books(
    rng: np.random.Generator, width: int, height: int, kind: str | None = None, style: str = "photo",
    spines: SpineCutouts | None = None, packed_share: float = 0.0, flat_share: float = 0.0,
) -> tuple[np.ndarray, list[tuple[np.ndarray, ShelfPlace | None]]]:
    """render_scene's photo, and its books as (polygon, where the book was put in its row)."""
    if kind is None:
        kind = SCENE_KINDS[rng.choice(len(SCENE_KINDS), p=SCENE_WEIGHTS)]
    if kind not in SCENE_KINDS:
        raise ConfigError(f"scene kind {kind!r} is not one of {SCENE_KINDS}")
    margin = round(0.1 * max(width, height))  # room for the camera tilt
    if style not in STYLES:
        raise ConfigError(f"style {style!r} is not one of {STYLES}")
    scene = new_scene(rng, height + 2 * margin, width + 2 * margin, plain=style == "plain", spines=spines,
                      packed_share=packed_share, flat_share=flat_share)
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
