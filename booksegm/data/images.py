"""Reading photos as the annotator saw them: EXIF orientation applied, 8-bit RGB."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from booksegm.data.records import AnnotationError


class ImageReadError(AnnotationError):
    """An image file that is missing or cannot be decoded; the message names the path."""


# EXIF orientation -> the transpose that displays the image upright (the table of
# PIL.ImageOps.exif_transpose). VIA draws images through the browser, and browsers honour EXIF
# orientation for <img> and canvas drawImage since 2020 (CSS `image-orientation: from-image` is
# the default), so polygons drawn in VIA are in the upright frame: we load images in that frame.
ORIENTATION_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
EXIF_ORIENTATION_TAG = 0x0112


def load_rgb(path: str | Path) -> np.ndarray:
    """The image at ``path`` as an (H, W, 3) uint8 array, upright per its EXIF orientation."""
    path = Path(path)
    try:
        with Image.open(path) as image:
            transpose = ORIENTATION_TRANSPOSE.get(exif_orientation(image))
            if transpose is not None:
                image = image.transpose(transpose)
            return to_rgb(image)
    except FileNotFoundError:
        raise ImageReadError(f"{path}: not found") from None
    except Exception as err:  # PIL's decoders raise OSError, SyntaxError, ValueError, struct.error, ...
        raise ImageReadError(f"{path}: cannot decode: {err}") from err


def image_size(path: str | Path) -> tuple[int, int]:
    """(width, height) of the upright image, from the file header only (no pixels decoded)."""
    path = Path(path)
    try:
        with Image.open(path) as image:
            width, height = image.size
            if exif_orientation(image) in (5, 6, 7, 8):  # the transposes that swap the axes
                width, height = height, width
            return width, height
    except FileNotFoundError:
        raise ImageReadError(f"{path}: not found") from None
    except Exception as err:
        raise ImageReadError(f"{path}: cannot decode: {err}") from err


def verify_image(path: str | Path) -> None:
    """Decode the whole file, raising ImageReadError when it is missing, truncated or corrupt.

    JPEGs are decoded at 1/8 scale (``draft``), which still reads every byte, so a dataset check
    stays fast on large photos.
    """
    path = Path(path)
    try:
        with Image.open(path) as image:
            image.draft("RGB", (max(1, image.width // 8), max(1, image.height // 8)))
            image.load()
    except FileNotFoundError:
        raise ImageReadError(f"{path}: not found") from None
    except Exception as err:
        raise ImageReadError(f"{path}: cannot decode: {err}") from err


def exif_orientation(image: Image.Image) -> int:
    """The EXIF orientation (1-8) found in the header; 1 when there is none.

    PNG keeps EXIF in an eXIf chunk that Pillow sees at open time when it precedes the pixel data
    (where writers put it); ``getexif()`` would otherwise decode the whole PNG to look further, so
    for PNG only the header is read. Both load_rgb and image_size use this, so they always agree.
    """
    if image.format == "PNG" and "exif" not in image.info:
        return 1
    orientation = image.getexif().get(EXIF_ORIENTATION_TAG, 1)
    return orientation if orientation in ORIENTATION_TRANSPOSE else 1


def to_rgb(image: Image.Image) -> np.ndarray:
    """Any PIL mode -> (H, W, 3) uint8.

    16-bit grayscale (``I;16*``, and ``I``, how Pillow opens 16-bit PNG/TIFF) is scaled from the
    full 16-bit range; PIL's own conversion would clip every value above 255 to white. Alpha is
    dropped, not composited: the colour under a transparent pixel is what the camera recorded, and
    VIA showed it over a page background that no fixed colour here would reproduce.
    """
    if image.mode.startswith("I"):
        gray = np.clip(np.asarray(image, dtype=np.float32) / 257.0 + 0.5, 0, 255).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if image.mode == "P":  # palette transparency survives only through RGBA (direct RGB warns)
        image = image.convert("RGBA")
    return np.array(image.convert("RGB"))  # a writable copy: torch.from_numpy warns on read-only arrays
