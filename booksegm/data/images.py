"""Reading photos as the annotator saw them: EXIF orientation applied, 8-bit RGB."""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

import numpy as np
from PIL import Image

from booksegm.data.records import AnnotationError

log = logging.getLogger(__name__)


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


class ImageChecks:
    """:func:`verify_image` with a memory, for checking a whole dataset at every start-up.

    A file that decoded is not decoded again while its size and modification time stay the same,
    across runs through ``cache_file`` (JSON, ``{absolute path: [bytes, mtime_ns]}``), and within
    one setup for failures too. A cache file that is missing, corrupt or unwritable only costs the
    decoding it would have saved. ``decoded`` and ``seconds`` say what this object decoded.
    """

    def __init__(self, cache_file: str | Path | None = None):
        self.cache_file = Path(cache_file).expanduser() if cache_file else None
        self.known = self._read()
        self.failed: dict[str, ImageReadError] = {}
        self.decoded, self.seconds, self.changed = 0, 0.0, False

    def verify(self, path: str | Path) -> None:
        path = Path(path)
        key = str(path.absolute())
        if key in self.failed:
            raise self.failed[key]
        try:
            stat = path.stat()
            stamp = [stat.st_size, stat.st_mtime_ns]
        except OSError:
            stamp = None  # missing or inaccessible: verify_image raises the error that says which
        if stamp is not None and self.known.get(key) == stamp:
            return
        started = time.perf_counter()
        try:
            verify_image(path)
        except ImageReadError as err:
            self.failed[key] = err
            raise
        finally:
            self.decoded += stamp is not None
            self.seconds += time.perf_counter() - started
        self.known[key], self.changed = stamp, True

    def save(self) -> None:
        if self.cache_file is None or not self.changed:
            return
        temporary = self.cache_file.with_name(f"{self.cache_file.name}.{os.getpid()}.tmp")
        try:
            self.cache_file.parent.mkdir(parents=True, exist_ok=True)
            temporary.write_text(json.dumps(self.known))
            os.replace(temporary, self.cache_file)  # whole or not at all, for runs reading it meanwhile
        except OSError as err:
            log.warning("%s: image check cache not saved (%s); the next run decodes the images again",
                        self.cache_file, err)

    def _read(self) -> dict:
        if self.cache_file is None or not self.cache_file.is_file():
            return {}
        try:
            known = json.loads(self.cache_file.read_text())
            if not isinstance(known, dict):
                raise ValueError("not a JSON object")
            return known
        except (OSError, ValueError) as err:  # ValueError: bad JSON, bad UTF-8
            log.warning("%s: image check cache unreadable (%s); the images are decoded again", self.cache_file, err)
            return {}


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
