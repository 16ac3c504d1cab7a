"""Data tools: ``python -m booksegm.data SUBCOMMAND ...``.

    python -m booksegm.data synth OUT_DIR --num-images 300 --seed 0 [--width 320 --height 240 --style plain]
    python -m booksegm.data check ANNOTATIONS [--images DIR] [--json]   # exit 0 usable, 1 not, 2 bad file or regions
    python -m booksegm.data convert SRC DST --to via|coco [--from via|coco|yolo]
    python -m booksegm.data suggest UNLABELLED_DIR [--ckpt PATH] [-k 20] [--out suggested_via.json]

Each subcommand is one small function taking the parsed arguments; ``main`` wires them up.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from booksegm.config import ConfigError
from booksegm.data.formats.options import add_reader_arguments, reader_options
from booksegm.data.synthetic import STYLES
from booksegm.errors import cli_errors

if TYPE_CHECKING:  # imported where used: synth, check and convert start without torch
    from booksegm.evaluation.uncertainty import CriterionWeights, PhotoUncertainty

log = logging.getLogger(__name__)


def synth(args: argparse.Namespace) -> int:
    from booksegm.data.synthetic import generate_dataset

    start = time.perf_counter()
    json_path = generate_dataset(
        args.out_dir, args.num_images, seed=args.seed, width=args.width, height=args.height, style=args.style
    )
    seconds = time.perf_counter() - start
    print(json_path)
    print(f"{args.num_images} images in {seconds:.1f} s ({args.num_images / max(seconds, 1e-9):.1f} images/s)")
    return 0


def check(args: argparse.Namespace) -> int:
    from booksegm.data.check import exit_status, format_report, summarize
    from booksegm.data.formats import load_annotations

    # a file that cannot be read at all raises: one error line, exit 2
    annotations = load_annotations(args.annotations, args.format, reader_options(args, collect_errors=True))
    report = summarize(annotations, progress=sys.stderr.isatty())
    print(json.dumps(report, ensure_ascii=False, indent=2) if args.json else format_report(report))
    return exit_status(report)


def convert(args: argparse.Namespace) -> int:
    from booksegm.data.formats import load_annotations, save_annotations

    annotations = load_annotations(args.src, args.from_format, reader_options(args))
    save_annotations(annotations, args.dst, args.to)
    print(f"{args.dst}: {len(annotations.records)} images, {annotations.num_instances} instances ({args.to})")
    for reason, n in annotations.skipped.most_common():
        print(f"  skipped {n}: {reason}")
    for assumption, n in annotations.assumed.most_common():
        print(f"  {assumption}: {n}")
    return 0


def suggest(args: argparse.Namespace) -> int:
    """Rank the photos by the model's uncertainty (booksegm.evaluation.uncertainty), pick k of them
    (``--pick``), and write those, the model's books drawn on them, as a VIA 2 project, most unsure first."""
    import numpy as np
    from tqdm import tqdm

    from booksegm.data.formats.via import write_via
    from booksegm.data.images import ImageReadError, load_rgb
    from booksegm.data.records import AnnotationSet
    from booksegm.evaluation.uncertainty import diverse_pick, photo_uncertainty, rank
    from booksegm.inference import load_model, predict_views, select_device
    from booksegm.photos import DetectorSettings, closing_lines, via_record

    weights = suggest_weights(args)
    photos = unlabelled_photos(args.unlabelled_dir)
    loaded = load_model(args.ckpt, select_device(args.device))
    if loaded.resize is None:
        raise ConfigError(f"{loaded.source}: the checkpoint does not say how images were resized (no run config in "
                          "or beside it); use the run's own checkpoint or an exported model")
    threshold = loaded.display_threshold(args.score_threshold)
    records, uncertainties, features, skipped = [], [], [], []
    for path in tqdm(photos, desc="suggest", unit="img"):
        try:
            image = load_rgb(path)
        except ImageReadError as err:
            log.warning("skipping %s", err)
            skipped.append(str(err))
            continue
        seen = predict_views(loaded, image, loaded.resize, shown_from=threshold)
        uncertainties.append(photo_uncertainty(seen.merged["scores"], seen.merged["masks"],
                                               [(view["scores"], view["masks"]) for view in seen.views], threshold,
                                               args.aggregate))
        records.append(via_record(path, path.relative_to(args.unlabelled_dir), seen.detections,
                                  DetectorSettings.polygon_tolerance))
        features.append(seen.features)
    if not records:
        raise ConfigError(f"{args.unlabelled_dir}: none of its {len(photos)} photos could be read")
    totals = [u.total(weights) for u in uncertainties]
    if args.pick == "uncertain":
        top = rank(totals)[:args.k]
    else:
        top = diverse_pick(np.stack(features), totals if args.pick == "diverse" else [1.0] * len(totals), args.k)
    picked = AnnotationSet(source=args.out, flavour="via2_project", records=[records[i] for i in top],
                           class_names=tuple(loaded.class_names))
    write_via(picked, args.out, image_root=args.unlabelled_dir, project=True)
    chosen = {"uncertain": "the {} most unsure", "diverse": "{} of different kinds, leaning to the unsure",
              "typical": "{} of different kinds"}[args.pick].format(len(top))
    print(f"{len(records)} photos ranked by {loaded.source} (books shown from score {threshold:.3f}); "
          f"{chosen}, with the model's {picked.num_instances} books drawn:")
    print(suggestion_table([(records[i].file_name, uncertainties[i], len(records[i].instances)) for i in top],
                           weights))
    print("\n".join(closing_lines(skipped, [], args.out)))
    return 0


def suggest_weights(args: argparse.Namespace) -> CriterionWeights:
    """Check the options before anything slow; the criteria's weights."""
    from booksegm.evaluation.uncertainty import CriterionWeights

    if args.k < 1:
        raise ConfigError(f"-k must be >= 1 (photos to suggest), got {args.k}")
    if args.score_threshold is not None and not 0.0 <= args.score_threshold <= 1.0:
        raise ConfigError(f"--score-threshold must lie in [0, 1], got {args.score_threshold}")
    values = [args.weight_near, args.weight_views, args.weight_masks]
    if min(values) < 0 or sum(values) <= 0:
        raise ConfigError(f"--weight-near, --weight-views and --weight-masks must be >= 0 and not all 0, got {values}")
    if args.out.is_dir():
        raise ConfigError(f"--out {args.out}: a folder; give the project's file name")
    if args.out.exists() and not args.overwrite:
        raise ConfigError(f"--out {args.out} exists (it may hold corrections): give a new name, or --overwrite")
    return CriterionWeights(*values)


def unlabelled_photos(folder: Path) -> list[Path]:
    from booksegm.photos import IMAGE_SUFFIXES

    if not folder.is_dir():
        raise ConfigError(f"{folder}: no such folder")
    photos = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not photos:
        raise ConfigError(f"{folder}: no photos ({', '.join(sorted(IMAGE_SUFFIXES))}) in this folder or below it")
    return photos


def suggestion_table(rows: list[tuple[str, PhotoUncertainty, int]], weights: CriterionWeights) -> str:
    """One line a photo, most unsure first: its uncertainty, each criterion, the books drawn on it."""
    lines = [f"{'rank':>4}  {'uncertainty':>11}  {'near':>5}  {'views':>5}  {'masks':>5}  {'books':>5}  photo"]
    for n, (name, u, books) in enumerate(rows, 1):
        lines.append(f"{n:>4}  {u.total(weights):>11.3f}  {u.near_threshold:>5.3f}  {u.view_disagreement:>5.3f}  "
                     f"{u.poor_masks:>5.3f}  {books:>5}  {name}")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m booksegm.data", description="booksegm data tools")
    commands = parser.add_subparsers(dest="command", required=True)

    p = commands.add_parser("synth", help="render the synthetic book set (JPEG images + VIA 2 JSON)")
    p.add_argument("out_dir", help="writes OUT_DIR/images/*.jpg and OUT_DIR/via_region_data.json")
    p.add_argument("--num-images", type=int, default=300)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--width", type=int, default=320)
    p.add_argument("--height", type=int, default=240)
    p.add_argument("--style", choices=STYLES, default="photo",
                   help="plain: the same scenes without light, shadows, blur, noise or vases and mugs")
    p.set_defaults(run=synth)

    p = commands.add_parser("check", help="report what an annotation file holds and what is missing or skipped")
    p.add_argument("annotations", help="a VIA or COCO JSON file, or a YOLO-seg folder with images/ and labels/")
    p.add_argument("--format", choices=("auto", "via", "coco", "yolo"), default="auto")
    p.add_argument("--json", action="store_true", help="print the report as one JSON object")
    add_reader_arguments(p, on_unknown_class="skip")
    p.set_defaults(run=check)

    p = commands.add_parser("convert", help="convert annotations to VIA 2 or COCO (polygons kept exactly)")
    p.add_argument("src", help="a VIA or COCO JSON file, or a YOLO-seg folder")
    p.add_argument("dst", help="the JSON file to write")
    p.add_argument("--to", choices=("via", "coco"), required=True)
    p.add_argument("--from", dest="from_format", choices=("auto", "via", "coco", "yolo"), default="auto")
    add_reader_arguments(p, on_unknown_class="error")
    p.set_defaults(run=convert)

    p = commands.add_parser("suggest", help="rank unlabelled photos by how unsure the model is about them and write "
                                            "the top k as a VIA 2 project with the model's books drawn, to correct")
    p.add_argument("unlabelled_dir", type=Path, help="a folder of photos (searched recursively)")
    p.add_argument("--ckpt", help="checkpoint, exported .pth or bundled model name (default: the books model)")
    p.add_argument("-k", type=int, default=20, help="how many photos to suggest (>= 1)")
    p.add_argument("--out", type=Path, default=Path("suggested_via.json"), help="the VIA 2 project to write")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists (else refused)")
    p.add_argument("--score-threshold", type=float,
                   help="the score books are shown from (default: the model's calibrated one, else 0.7)")
    # a photo's uncertainty is the weighted mean of three criteria (booksegm/evaluation/uncertainty.py)
    p.add_argument("--weight-near", type=float, default=1.0,
                   help="weight of detections scoring near the threshold (default 1)")
    p.add_argument("--weight-views", type=float, default=1.0,
                   help="weight of the disagreement between the test-time views: as given, mirrored, enlarged "
                        "(default 1)")
    p.add_argument("--weight-masks", type=float, default=1.0,
                   help="weight of masks whose pixels the model is unsure of, low maskness (default 1)")
    p.add_argument("--aggregate", choices=("mean", "sum"), default="mean",
                   help="how a photo's detections add up in each criterion: mean (the share of doubt in the photo) "
                        "or sum (how many doubtful books it holds)")
    p.add_argument("--pick", choices=("diverse", "typical", "uncertain"), default="diverse",
                   help="diverse: from each of k clusters of alike photos the most typical, the clusters drawn to "
                        "the unsure photos; typical: the same, every photo weighing alike; uncertain: the k most "
                        "unsure photos")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.set_defaults(run=suggest)
    return parser


@cli_errors(exit_code=2)  # an annotation file or value that cannot be used: one line, exit 2 (as argparse's)
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    raise SystemExit(main())
