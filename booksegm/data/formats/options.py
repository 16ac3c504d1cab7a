"""How annotations are read: :class:`ReaderOptions`, and the command-line options that set them."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

from booksegm.data.formats.common import UNKNOWN_CLASS_POLICIES
from booksegm.data.records import BOOK, AnnotationError, ClassMap


@dataclass(frozen=True)
class ReaderOptions:
    """What every reader takes besides the path (VIA alone reads class_attribute and polyline_as_outline)."""

    image_root: str | Path | None = None  # where images are looked up; None: the file's folder (YOLO: images/)
    class_map: ClassMap = BOOK
    class_attribute: str | None = None  # VIA region attribute holding the class; None: auto-detect
    polyline_as_outline: bool = False  # VIA: close open polylines into outlines instead of skipping them
    on_unknown_class: str = "error"  # class names not in class_map: error | skip (counted)
    collect_errors: bool = False  # list malformed images and regions in ``errors`` instead of raising the first

    def __post_init__(self) -> None:
        if self.on_unknown_class not in UNKNOWN_CLASS_POLICIES:
            raise AnnotationError(
                f"data.on_unknown_class={self.on_unknown_class!r} is unknown; "
                f"choose one of {list(UNKNOWN_CLASS_POLICIES)}"
            )

    def image_folder(self, default: Path) -> Path:
        return Path(self.image_root) if self.image_root is not None else default


def alias(text: str) -> tuple[str, str]:
    name, equals, target = text.partition("=")
    if not (name and equals and target):
        raise argparse.ArgumentTypeError(f"expected NAME=CLASS, got {text!r}")
    return name, target


def add_reader_arguments(p: argparse.ArgumentParser, on_unknown_class: str) -> None:
    """The data.* settings that decide how annotations are read, as options (see reader_options)."""
    p.add_argument("--images", help="image folder (default: the annotation file's folder; YOLO: images/)")
    p.add_argument("--classes", default="book", help="data.classes, comma-separated (default: book)")
    p.add_argument("--alias", action="append", default=[], type=alias, metavar="NAME=CLASS",
                   help="data.class_aliases entry, repeatable: --alias book-s-spine=book")
    p.add_argument("--class-attribute", help="VIA region attribute holding the class (default: auto-detect)")
    p.add_argument("--polyline-as-outline", action="store_true", help="VIA: use open polylines as outlines")
    p.add_argument("--on-unknown-class", choices=UNKNOWN_CLASS_POLICIES, default=on_unknown_class,
                   help=f"class names not in --classes (default: {on_unknown_class})")


def reader_options(args: argparse.Namespace, collect_errors: bool = False) -> ReaderOptions:
    """The ReaderOptions that add_reader_arguments' options ask for."""
    return ReaderOptions(
        image_root=args.images,
        class_map=ClassMap(args.classes.split(","), dict(args.alias)),
        class_attribute=args.class_attribute,
        polyline_as_outline=args.polyline_as_outline,
        on_unknown_class=args.on_unknown_class,
        collect_errors=collect_errors,
    )
