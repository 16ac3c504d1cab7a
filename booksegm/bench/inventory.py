"""Shelf inventory accuracy: ``python -m booksegm.bench inventory [--ckpt PATH|NAME] [--photos 50] ...``.

Renders shelf photos whose rows and order the generator knows (``booksegm.data.synthetic``, from
seeds ``[seed, k]``: the training set's own seed is 0), runs the model on them as ``booksegm
inventory`` does, puts the predicted books in rows (``booksegm.shelves``), matches each labelled book
to a prediction (mask IoU >= 0.5, best score first, as VOC AP does) and prints the share of labelled
books that are:

  found        matched by a prediction
  right row    found and put in their row
  right place  found and given their row and position: the inventory's accuracy
  in order     (of the books found) given their row and position among the books found, when the
               predictions matched to them are arranged alone: the arrangement on predicted masks,
               without the model's misses and extra detections
  from labels  given their row and position when the labels themselves are arranged (no model)

A book the model misses, or a detection that is no labelled book, moves every later book of its
row one position: ``right place`` counts that as wrong, as a reader of the inventory would.
"""

from __future__ import annotations

import argparse
from collections import Counter

import numpy as np
from tqdm import tqdm

from booksegm.data.resize import ResizeConfig
from booksegm.data.synthetic import STYLES, ShelfPlace, render_books, shelf_order
from booksegm.data.transforms import rasterize
from booksegm.evaluation.voc import match_instances
from booksegm.inference import LoadedModel, predict_images
from booksegm.photos import PhotoSettings, load_detector
from booksegm.shelves import ShelvedBook, arrange

IOU = 0.5  # a prediction is a labelled book's when their masks overlap this much
# figure: (name, what it is a share of)
FIGURES = {"found": ("found", "books"), "row": ("right row", "books"), "place": ("right place", "books"),
           "in_order": ("in order", "found"), "labels": ("from labels", "books")}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m booksegm.bench inventory", description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", help="checkpoint, exported .pth or bundled model name (default: the books model)")
    parser.add_argument("--photos", type=int, default=50, help="shelf photos to render")
    parser.add_argument("--seed", type=int, default=2027, help="render seeds [seed, k]")
    parser.add_argument("--width", type=int, default=320, help="photo width, px (the synthetic set's 320)")
    parser.add_argument("--height", type=int, default=240, help="photo height, px")
    parser.add_argument("--style", choices=STYLES, default="photo", help="photo: light, blur, noise; plain: without")
    parser.add_argument("--score-threshold", type=float, help="default: the model's calibrated score, else 0.7")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda")
    return parser.parse_args(argv)


def score_photo(loaded: LoadedModel, resize: ResizeConfig, photo: np.ndarray,
                books: list[tuple[np.ndarray, ShelfPlace]]) -> Counter:
    """The counts of one rendered photo of books standing in rows, (polygon, place) each: its books,
    and each figure's hits."""
    height, width = photo.shape[:2]
    places = [place for _, place in books]
    labels = np.array([rasterize([p], height, width).astype(bool) for p, _ in books]).reshape(-1, height, width)
    (detections,) = predict_images(loaded, [photo], resize)
    matches = match_instances(detections.masks, labels, detections.scores, IOU)
    found = np.flatnonzero(matches.gt_match >= 0)
    truth, truth_among_found = shelf_order(places), shelf_order([places[j] for j in found])
    predicted = ranks(arrange(detections.masks))
    alone = ranks(arrange(detections.masks[matches.gt_match[found]]))
    from_labels = ranks(arrange(labels))
    counts = Counter(books=len(books), found=len(found), in_order=sum(alone.get(k) == truth_among_found[k]
                                                                      for k in range(len(found))))
    for j, want in enumerate(truth):
        got = predicted.get(int(matches.gt_match[j]))  # -1 (missed) is no prediction's index
        counts.update(row=int(got is not None and got[0] == want[0]), place=int(got == want),
                      labels=int(from_labels.get(j) == want))
    return counts


def ranks(books: list[ShelvedBook]) -> dict[int, tuple[int, int]]:
    """(row, position) by mask index."""
    return {book.index: (book.row, book.position) for book in books}


def main(argv=None) -> int:
    args = parse_args(argv)
    settings = PhotoSettings(input="", output_dir="", ckpt_path=args.ckpt, score_threshold=args.score_threshold,
                             device=args.device)
    settings.validate()
    loaded, resize = load_detector(settings)
    counts = Counter()
    for k in tqdm(range(args.photos), desc="inventory bench", unit="img"):
        photo, books = render_books(np.random.default_rng([args.seed, k]), args.width, args.height, kind="shelf",
                                    style=args.style)
        counts += score_photo(loaded, resize, photo, books)
    print(f"inventory bench: {loaded.source}, {args.photos} {args.style} shelf photos {args.width}x{args.height} "
          f"(seeds [{args.seed}, k]), {counts['books']} books standing in rows")
    for key, (name, whole) in FIGURES.items():
        share = counts[key] / counts[whole] if counts[whole] else float("nan")
        print(f"  {name:<12} {counts[key]:>5} / {counts[whole]:<5} {share:.1%}")
    return 0
