"""Anchor suggestion: ``python -m booksegm.anchors ANNOTATIONS [--mode square --min-dim 800 --max-dim 1024]``.

Measures the ground-truth boxes at the size training sees them (after ``data.resize``) and
scores anchor sets by the share of boxes whose best anchor overlaps them at IoU >= 0.5: the
current anchors (``--sizes``/``--ratios``), the seed's three scale sets and the best sets of a
search over the smallest size (one per FPN level, doubling from P2 to P6) and the ratios (the
current ones, matterport's, and the quantiles of the data's width/height). Sizes and ratios are
printed in matterport's terms (RPN_ANCHOR_SCALES; RPN_ANCHOR_RATIOS as width/height) and as the
config override to paste.

The IoU is between shapes with a common centre: it ignores where the anchor grid (stride 4 at P2
to 64 at P6) puts anchor centres, so it is an upper bound on what the RPN gets to match.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass

import numpy as np

from booksegm.data.images import ImageReadError, image_size
from booksegm.data.records import AnnotationError, AnnotationSet
from booksegm.data.resize import RESIZE_MODES, ResizeConfig, resize_scale
from booksegm.errors import cli_errors
from booksegm.model.build import FPN_LEVELS, AnchorConfig

SEED_SCALES = {  # the scale sets the seed's user compared (conf/experiment/anchors_*)
    "anchors_8_128": (8, 16, 32, 64, 128),
    "anchors_16_256": (16, 32, 64, 128, 256),
    "anchors_32_512": (32, 64, 128, 256, 512),
}
SMALLEST_SIZES = (4, 6, 8, 12, 16, 24, 32, 48, 64)  # P2 anchor sizes searched; P3..P6 double it
MATTERPORT_RATIOS = (0.5, 1.0, 2.0)


@dataclass
class AnchorSet:
    name: str
    sizes: tuple[int, ...]  # one per FPN level, P2..P6
    ratios: tuple[float, ...]  # width / height (matterport)

    def shapes(self) -> np.ndarray:
        """(levels * ratios, 2) anchor widths and heights, as matterport's generate_anchors."""
        sizes, ratios = np.meshgrid(np.array(self.sizes, float), np.array(self.ratios, float), indexing="ij")
        return np.stack([sizes * np.sqrt(ratios), sizes / np.sqrt(ratios)], axis=-1).reshape(-1, 2)

    def override(self) -> str:
        return (f"model.anchors.sizes=[{','.join(map(str, self.sizes))}] "
                f"model.anchors.ratios=[{','.join(f'{r:g}' for r in self.ratios)}]")


@dataclass
class Score:
    anchors: AnchorSet
    coverage: float  # share of GT boxes with best IoU >= threshold
    mean_iou: float  # mean over GT boxes of the best IoU
    level_share: np.ndarray  # share of GT boxes whose best anchor is on each FPN level

    @property
    def rank_key(self) -> tuple[float, float, float]:
        # Scaled copies of a set often tie (the boxes only meet the sizes they share); of those,
        # prefer the one whose boxes sit mid-pyramid (mean level nearest P4), leaving room both ways.
        levels = np.arange(len(self.level_share))
        off_centre = abs(float((self.level_share * levels).sum()) - levels.mean())
        return round(self.coverage, 4), round(self.mean_iou, 3), -off_centre


def box_shapes(annotations: AnnotationSet, resize: ResizeConfig) -> tuple[np.ndarray, int]:
    """(N, 2) GT box widths and heights in pixels after ``resize``; and the images skipped for
    lack of a size (no readable file and no size in the annotation)."""
    shapes, skipped = [], 0
    for record in annotations.records:
        if not record.instances:
            continue
        try:
            width, height = image_size(record.path)
        except ImageReadError:
            if not (record.width and record.height):
                skipped += 1
                continue
            width, height = record.width, record.height
        scale = resize_scale(height, width, resize)
        for instance in record.instances:
            points = np.concatenate(instance.polygons)
            shapes.append((points.max(axis=0) - points.min(axis=0)) * scale)
    return np.array(shapes, dtype=np.float64).reshape(-1, 2), skipped


def best_iou(boxes: np.ndarray, anchors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each box (w, h), the best IoU with any anchor (w, h) sharing its centre, and which."""
    inter = np.minimum(boxes[:, None, 0], anchors[None, :, 0]) * np.minimum(boxes[:, None, 1], anchors[None, :, 1])
    union = boxes.prod(axis=1)[:, None] + anchors.prod(axis=1)[None, :] - inter
    iou = inter / np.maximum(union, 1e-9)
    return iou.max(axis=1), iou.argmax(axis=1)


def score(boxes: np.ndarray, anchors: AnchorSet, threshold: float) -> Score:
    iou, which = best_iou(boxes, anchors.shapes())
    levels = which // len(anchors.ratios)
    level_share = np.bincount(levels, minlength=len(anchors.sizes)) / max(len(boxes), 1)
    return Score(anchors, float((iou >= threshold).mean()), float(iou.mean()), level_share)


def quantile_ratios(boxes: np.ndarray, count: int) -> tuple[float, ...]:
    """``count`` width/height ratios at evenly spaced quantiles of the boxes' ratios (log scale)."""
    log_ratios = np.log(boxes[:, 0] / np.maximum(boxes[:, 1], 1e-9))
    quantiles = np.quantile(log_ratios, (np.arange(count) + 0.5) / count)
    return tuple(float(f"{np.exp(q):.2g}") for q in quantiles)


def candidates(boxes: np.ndarray, current: AnchorSet) -> list[AnchorSet]:
    ratio_sets = {tuple(current.ratios), MATTERPORT_RATIOS, quantile_ratios(boxes, len(current.ratios))}
    return [
        AnchorSet(f"P2={smallest}", tuple(smallest * 2**level for level in range(FPN_LEVELS)), ratios)
        for smallest in SMALLEST_SIZES
        for ratios in sorted(ratio_sets)
    ]


def suggest(boxes: np.ndarray, current: AnchorSet, threshold: float = 0.5, top: int = 3) -> list[Score]:
    """The current set, the seed's sets and the ``top`` best searched sets, best first."""
    searched = sorted((score(boxes, c, threshold) for c in candidates(boxes, current)),
                      key=lambda s: s.rank_key, reverse=True)
    for i, s in enumerate(searched[:top], 1):
        s.anchors.name = f"suggested {i}"
    reference = [current] + [AnchorSet(name, sizes, tuple(current.ratios)) for name, sizes in SEED_SCALES.items()]
    return searched[:top] + [score(boxes, a, threshold) for a in reference]


def percentiles(values: np.ndarray) -> str:
    return " / ".join(f"{v:.0f}" if v >= 10 else f"{v:.2g}" for v in np.percentile(values, (5, 50, 95)))


def format_report(boxes: np.ndarray, scores: list[Score], resize: ResizeConfig, threshold: float) -> str:
    lines = [
        (f"{len(boxes)} GT boxes after resize {resize.mode} (min_dim {resize.min_dim}, max_dim {resize.max_dim}, "
         f"min_scale {resize.min_scale:g}); percentiles p5 / p50 / p95:"),
        f"  sqrt(area)   {percentiles(np.sqrt(boxes.prod(axis=1)))} px",
        f"  width        {percentiles(boxes[:, 0])} px",
        f"  height       {percentiles(boxes[:, 1])} px",
        f"  w / h        {percentiles(boxes[:, 0] / np.maximum(boxes[:, 1], 1e-9))}",
        "",
        (f"{'anchor set':16s} {'sizes P2..P6 (RPN_ANCHOR_SCALES)':34s} {'ratios w/h':18s} "
         f"{f'IoU>={threshold:g}':>9s} {'mean IoU':>9s}"),
    ]
    for s in scores:
        lines.append(
            f"{s.anchors.name:16s} {', '.join(map(str, s.anchors.sizes)):34s} "
            f"{', '.join(f'{r:g}' for r in s.anchors.ratios):18s} {s.coverage:9.1%} {s.mean_iou:9.3f}"
        )
    best = scores[0]
    levels = ", ".join(f"P{level + 2} {size}px {share:.0%}" for level, (size, share) in
                       enumerate(zip(best.anchors.sizes, best.level_share)))
    lines += [
        "",
        f"best anchor of each GT box, per FPN level ({best.anchors.name}): {levels}",
        f"to use it: {best.anchors.override()}",
        "(IoU of shapes sharing a centre: an upper bound that ignores the anchor grid's stride)",
    ]
    return "\n".join(lines)


@cli_errors(exit_code=2)  # a bad value or annotation file: one line, exit 2 (as argparse's)
def main(argv: list[str] | None = None) -> int:
    from booksegm.data.formats import load_annotations
    from booksegm.data.formats.options import add_reader_arguments, reader_options

    default_resize, default_anchors = ResizeConfig(), AnchorConfig()
    parser = argparse.ArgumentParser(prog="python -m booksegm.anchors", description=__doc__.splitlines()[0])
    parser.add_argument("annotations", help="a VIA or COCO JSON file, or a YOLO-seg folder")
    parser.add_argument("--format", choices=("auto", "via", "coco", "yolo"), default="auto")
    add_reader_arguments(parser, on_unknown_class="skip")
    parser.add_argument("--mode", choices=RESIZE_MODES, default=default_resize.mode, help="data.resize.mode")
    parser.add_argument("--min-dim", type=int, default=default_resize.min_dim, help="data.resize.min_dim")
    parser.add_argument("--max-dim", type=int, default=default_resize.max_dim, help="data.resize.max_dim")
    parser.add_argument("--min-scale", type=float, default=default_resize.min_scale, help="data.resize.min_scale")
    parser.add_argument("--sizes", type=int, nargs=FPN_LEVELS, default=default_anchors.sizes,
                        help="current model.anchors.sizes (default: matterport's 32 64 128 256 512)")
    parser.add_argument("--ratios", type=float, nargs="+", default=default_anchors.ratios,
                        help="current model.anchors.ratios, width/height (default: 0.5 1 2)")
    parser.add_argument("--iou", type=float, default=0.5, help="IoU a box needs with its best anchor (default 0.5)")
    parser.add_argument("--top", type=int, default=3, help="suggested sets to list (default 3)")
    args = parser.parse_args(argv)

    resize = ResizeConfig(args.mode, args.min_dim, args.max_dim, args.min_scale)
    current = AnchorConfig(list(args.sizes), list(args.ratios))
    resize.validate(training=True)
    current.validate()
    annotations = load_annotations(args.annotations, args.format, reader_options(args))
    boxes, skipped = box_shapes(annotations, resize)
    if skipped:
        print(f"warning: {skipped} images skipped: no readable file and no size in the annotation", file=sys.stderr)
    if not len(boxes):
        reasons = "; ".join(f"{reason}: {n}" for reason, n in annotations.skipped.most_common())
        raise AnnotationError(f"{args.annotations}: no GT boxes to measure"
                              + (f" (regions skipped, by reason: {reasons})" if reasons else ""))
    scores = suggest(boxes, AnchorSet("current", tuple(current.sizes), tuple(current.ratios)), args.iou, args.top)
    print(format_report(boxes, scores, resize, args.iou))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
