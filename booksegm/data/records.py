"""The in-memory form every annotation reader produces and the datamodule consumes.

Readers (VIA, COCO, YOLO-seg) turn a file into an :class:`AnnotationSet`: one
:class:`ImageRecord` per listed image, each holding :class:`Instance` polygons in pixel
coordinates of the image as stored on disk (x right, y down, origin at the top-left corner
of the top-left pixel). Masks are only rasterised later, at the training resolution.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from booksegm.errors import UserError

log = logging.getLogger(__name__)


class AnnotationError(UserError, ValueError):
    """An annotation file that cannot be used; the message names the file and the problem."""


class SkipRegion(Exception):
    """Raised by a reader for one region it cannot use; the reader counts ``reason`` and goes on."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class BadRegion(Exception):
    """Raised by a reader for a malformed region; re-raised as AnnotationError naming where it is."""


@dataclass(frozen=True)
class Instance:
    """One object: one or more outline polygons (COCO allows several parts) and a class id.

    A prediction may carry its exact mask as ``rle`` and the detector's ``box``: the COCO writer
    writes those rather than the polygons and their bounds (polygons lose holes).
    """

    polygons: tuple[np.ndarray, ...]  # each (N, 2) float32, N >= 3, pixel coordinates; may be empty with rle
    label: int  # 1-based class id; 0 is background
    shape: str = "polygon"  # the shape it was drawn as (polygon, rect, circle, ...)
    score: float | None = None  # a prediction's confidence; the VIA writer writes it as region attribute score
    rle: dict | None = None  # a prediction's mask (with its box), COCO RLE {"size": [h, w], "counts": ...}
    box: tuple[float, float, float, float] | None = None  # a prediction's box, x0, y0, x1, y1 in pixels


@dataclass
class ImageRecord:
    file_name: str  # as written in the annotation file
    path: Path  # resolved on disk (may not exist: the datamodule reports missing files)
    instances: list[Instance] = field(default_factory=list)
    width: int | None = None  # from the annotation, when it says
    height: int | None = None
    num_regions: int | None = None  # regions the file lists for this image, used or skipped (readers set it)


@dataclass
class AnnotationSet:
    """What a reader returns: the images, the class names, and everything it skipped, counted."""

    source: Path
    flavour: str  # via1 | via2 | via2_project | via3 | coco | yolo | synthetic
    records: list[ImageRecord]
    class_names: tuple[str, ...]  # index i holds the name of label i + 1
    skipped: Counter = field(default_factory=Counter)  # reason -> regions skipped
    shapes: Counter = field(default_factory=Counter)  # shape name -> regions seen
    repaired: Counter = field(default_factory=Counter)  # fix (clipped, self-intersection) -> regions kept
    assumed: Counter = field(default_factory=Counter)  # what was assumed (no class, taken as book) -> regions kept
    errors: list[str] = field(default_factory=list)  # malformed images and regions, "where: what", in reading order

    @property
    def num_instances(self) -> int:
        return sum(len(r.instances) for r in self.records)

    @contextmanager
    def collecting(self) -> Iterator[None]:
        """Notes an AnnotationError raised in the block in ``errors``; reading goes on after the block."""
        try:
            yield
        except AnnotationError as err:
            self.errors.append(str(err))

    def raise_errors(self) -> None:
        """The first of ``errors`` as an AnnotationError, saying how many more there are."""
        if not self.errors:
            return
        more = len(self.errors) - 1
        hint = f" (and {more} more: `python -m booksegm.data check {self.source}` lists them all)"
        raise AnnotationError(self.errors[0] + (hint if more else ""))


class ClassMap:
    """Maps the class names found in annotations to contiguous ids, with aliases.

    ``classes`` lists the model's classes in id order (id 1 is the first). ``aliases`` maps
    other spellings to one of them (``book-s-spine`` -> ``book``). An empty or missing name
    means the only class when there is exactly one; otherwise it is unknown.
    """

    def __init__(self, classes: list[str] | tuple[str, ...], aliases: dict[str, str] | None = None):
        if not classes:
            raise AnnotationError("data.classes must list at least one class name")
        self.classes = tuple(classes)
        self.aliases = {k.casefold(): v for k, v in (aliases or {}).items()}
        for target in self.aliases.values():
            if target not in self.classes:
                raise AnnotationError(
                    f"data.class_aliases points to {target!r}, which is not in data.classes {list(self.classes)}"
                )

    def lookup(self, name: str | None) -> int | None:
        """The 1-based id for ``name``, or None when the name is unknown."""
        if name is None or str(name).strip() == "":
            return 1 if len(self.classes) == 1 else None
        key = str(name).strip()
        key = self.aliases.get(key.casefold(), key)
        for i, cls in enumerate(self.classes):
            if cls.casefold() == key.casefold():
                return i + 1
        return None


BOOK = ClassMap(["book"])  # the default class list: one class, book


def cap_instances(record: ImageRecord, max_instances: int) -> ImageRecord:
    """MAX_GT_INSTANCES: keep the first ``max_instances`` instances of an image, logging a cut."""
    if len(record.instances) <= max_instances:
        return record
    log.warning(
        "%s: %d instances, keeping the first %d (data.max_gt_instances)",
        record.file_name, len(record.instances), max_instances,
    )
    return replace(record, instances=record.instances[:max_instances])
