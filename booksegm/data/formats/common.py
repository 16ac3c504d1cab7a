"""What every annotation reader shares: JSON loading, finding image files, class lookup, skips."""

from __future__ import annotations

import json
import os
import re
import unicodedata
from collections.abc import Callable
from pathlib import Path, PurePosixPath

import numpy as np

from booksegm.data.formats.geometry import clean_polygons
from booksegm.data.images import ImageReadError, image_size
from booksegm.data.records import (
    AnnotationError,
    AnnotationSet,
    BadRegion,
    ClassMap,
    ImageRecord,
    Instance,
    SkipRegion,
)

UNKNOWN_CLASS_POLICIES = ("error", "skip")
MAX_COORDINATE = 1e7  # pixels: beyond any photo; float32 keeps 0.5 px there
DECIMAL = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?", re.ASCII)


def read_json(path: Path) -> object:
    try:
        with open(path, encoding="utf-8-sig") as f:  # -sig: Windows editors prepend a BOM
            return json.load(f)
    except FileNotFoundError:
        raise AnnotationError(f"{path}: not found") from None
    except IsADirectoryError:
        raise AnnotationError(f"{path}: is a folder, expected an annotation JSON file") from None
    except UnicodeDecodeError as err:
        raise AnnotationError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from None
    except json.JSONDecodeError as err:
        raise AnnotationError(f"{path}: invalid JSON at line {err.lineno} column {err.colno}: {err.msg}") from None
    except (OSError, RecursionError) as err:
        raise AnnotationError(f"{path}: cannot read: {err}") from None


def add_region(
    annotations: AnnotationSet,
    record: ImageRecord,
    shape: str,
    where: str,
    read: Callable[[], tuple[list[np.ndarray], int, str | None]],
    size: tuple[int, int] | None,
) -> None:
    """Counts one region of ``shape``; adds it to ``record`` as an Instance or counts why not.

    ``read`` returns the region's outlines, class id and what was assumed to get it (see
    class_label), raising SkipRegion (counted) or BadRegion (noted in ``annotations.errors``,
    naming ``where``). Outlines are clipped to ``size`` (width, height) when known and repaired
    when self-intersecting; what was fixed or assumed is counted for the regions kept.
    """
    annotations.shapes[shape] += 1
    try:
        outlines, label, assumed = read()
        polygons, fixes = clean_polygons(outlines, size)
    except SkipRegion as skip:
        annotations.skipped[skip.reason] += 1
        return
    except BadRegion as err:
        annotations.errors.append(f"{where}: {err}")
        return
    annotations.repaired.update(fixes)
    if assumed:
        annotations.assumed[assumed] += 1
    record.instances.append(Instance(tuple(polygons), label, shape))


def class_label(class_map: ClassMap, name: str, on_unknown_class: str) -> tuple[int, str | None]:
    """The class id for ``name`` and what was assumed to get it; an unknown name raises SkipRegion or
    BadRegion, by policy. No name in a one-class set is that class, counted: a forgotten attribute
    should show in the report, not pass as a book."""
    label = class_map.lookup(name)
    if label is not None:
        return label, (None if name.strip() else f"no class, taken as {class_map.classes[0]}")
    if on_unknown_class == "skip":
        raise SkipRegion(f"class {name!r} not in data.classes" if name else "no class name (several classes)")
    if not name:
        raise BadRegion(
            f"no class name, and data.classes {list(class_map.classes)} has several: name the class in every "
            "region, or set data.on_unknown_class=skip"
        )
    raise BadRegion(
        f"class {name!r} is not in data.classes {list(class_map.classes)}: add it to data.classes or "
        "data.class_aliases, or set data.on_unknown_class=skip"
    )


def coordinate(value: object, what: str) -> float:
    """A coordinate from JSON: a number within any photo. Numbers written as strings (even "10"),
    booleans and null are refused rather than guessed at: the tool that wrote them is wrong."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise BadRegion(f"{what} must be a number, got {value!r}")
    if not abs(value) <= MAX_COORDINATE:  # also refuses nan and inf
        raise BadRegion(f"{what} must be a finite pixel coordinate, got {value!r}")
    return float(value)


def decimal(token: str) -> float:
    """A number written as text (YOLO labels) in plain decimal notation, else ValueError: float()
    would also read 'nan', '1_0' and non-ASCII digits, which no labelling tool writes."""
    if not DECIMAL.fullmatch(token):
        raise ValueError(f"not a decimal number: {token!r}")
    return float(token)


def header_size(path: Path) -> tuple[int, int] | None:
    """(width, height) when the image exists and its header reads, else None (reported elsewhere)."""
    if not path.is_file():
        return None
    try:
        return image_size(path)
    except ImageReadError:
        return None


def file_name_from(image: Path, folder: Path) -> str:
    """How a written annotation file in ``folder`` names ``image``: relative to it, with / separators."""
    try:
        return Path(os.path.relpath(image, folder)).as_posix()
    except ValueError:  # another drive on Windows
        return Path(image).resolve().as_posix()


def write_json(data: object, path: Path) -> None:
    """Writes ``data`` to ``path`` whole or not at all: a reader never finds half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    with open(partial, "w", encoding="utf-8") as f:
        json.dump(data, f, ensure_ascii=False)
    os.replace(partial, path)


def json_number(value: float) -> int | float:
    """A coordinate for JSON: whole numbers as ints, others as the shortest text that reads back to
    the same float32 (polygons are float32 in memory, so writing and reading again is lossless)."""
    value = np.float32(value)
    if value.is_integer():
        return int(value)
    return float(np.format_float_positional(value, unique=True))


def name_key(name: str) -> str:
    # NFC: macOS stores decomposed accents (NFD) while VIA writes what the browser gave it (NFC)
    return unicodedata.normalize("NFC", name).casefold()


class ImageLocator:
    """Finds the file an annotation names, as users' folders really are.

    Tries, in order: the name under ``root`` as written (``./images/x.jpg``, sub-folders, spaces,
    ``#`` and non-ASCII are all literal file-name characters); the same path matched without
    regard to case or Unicode normalisation (folder listings are read once each); the bare file
    name in ``root`` (exports whose images were flattened into one folder). When nothing matches,
    it returns the path as written under ``root``, which does not exist: callers report it.
    """

    def __init__(self, root: Path):
        self.root = root
        self._listings: dict[Path, dict[str, str]] = {}

    def resolve(self, file_name: str) -> Path:
        written = PurePosixPath(file_name.replace("\\", "/"))  # Windows separators in hand-made files
        if written.is_absolute():
            if Path(written).is_file():
                return Path(written)
            parts = [written.name]
        else:
            parts = list(written.parts)  # PurePosixPath drops "./": "./images/a.jpg" -> images, a.jpg
        for candidate in (parts, parts[-1:]):
            found = self._match(candidate)
            if found is not None:
                return found
        return self.root.joinpath(*parts)

    def _match(self, parts: list[str]) -> Path | None:
        exact = self.root.joinpath(*parts)
        if exact.is_file():
            return exact
        folder = self.root
        for part in parts:
            actual = self._listing(folder).get(name_key(part))
            if actual is None:
                return None
            folder = folder / actual
        return folder if folder.is_file() else None

    def _listing(self, folder: Path) -> dict[str, str]:
        if folder not in self._listings:
            try:
                self._listings[folder] = {name_key(n): n for n in sorted(os.listdir(folder))}
            except OSError:  # not a folder, or unreadable: nothing can match inside it
                self._listings[folder] = {}
        return self._listings[folder]
