"""Data tools: ``python -m booksegm.data SUBCOMMAND ...``.

    python -m booksegm.data synth OUT_DIR --num-images 300 --seed 0 [--width 320 --height 240 --style plain]
    python -m booksegm.data check ANNOTATIONS [--images DIR] [--json]   # exit 0 usable, 1 not, 2 bad file or regions
    python -m booksegm.data convert SRC DST --to via|coco [--from via|coco|yolo]

Each subcommand is one small function taking the parsed arguments; ``main`` wires them up.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from booksegm.data.formats.options import add_reader_arguments, reader_options
from booksegm.data.synthetic import STYLES
from booksegm.errors import cli_errors


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
    return parser


@cli_errors(exit_code=2)  # an annotation file or value that cannot be used: one line, exit 2 (as argparse's)
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    raise SystemExit(main())
