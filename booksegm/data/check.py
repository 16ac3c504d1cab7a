"""The dataset check: what an annotation file holds, what is missing or skipped, and box statistics.

``python -m booksegm.data check ANNOTATIONS [--images DIR] [--json]`` prints :func:`format_report`
of :func:`summarize`; training logs the same summary when it loads its data.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

import numpy as np
from tqdm import tqdm

from booksegm.data.images import ImageReadError, image_size, verify_image
from booksegm.data.records import AnnotationSet

FLAVOUR_NAMES = {
    "via1": "VIA 1.x export", "via2": "VIA 2.x export", "via2_project": "VIA 2 project",
    "via3": "VIA 3 project", "coco": "COCO instances JSON", "yolo": "YOLO-seg folder", "synthetic": "synthetic",
}
PERCENTILES = (5, 50, 95)
LISTED = 10  # missing / unreadable files named in the report


def summarize(
    annotations: AnnotationSet, decode: bool = True, progress: bool = False,
    verify: Callable[..., None] = verify_image,
) -> dict:
    """The check report as a JSON-ready dict.

    Images are ``found`` when the file exists and ``unreadable`` when it exists but does not
    decode with ``verify`` (``decode=False`` reads headers only; training passes ImageChecks.verify,
    which remembers the files it decoded in earlier runs). ``usable``: some
    found, readable image has at least one instance to train on. Box statistics are over the
    instances used, in pixels of the images as stored; ``aspect`` is width / height (matterport's
    RPN_ANCHOR_RATIOS convention; torchvision's ``aspect_ratios`` is height / width). ``errors``
    lists every malformed image and region (read with ``collect_errors``), all of them.
    """
    missing, unreadable = [], []
    usable = False
    read = verify if decode else image_size
    for record in tqdm(annotations.records, desc="checking images", unit="image", disable=not progress):
        if not record.path.is_file():
            missing.append(record.file_name)
            continue
        try:
            read(record.path)
        except ImageReadError as err:
            unreadable.append(str(err))
            continue
        usable = usable or bool(record.instances)
    boxes = np.array([instance_box(inst.polygons) for r in annotations.records for inst in r.instances]).reshape(-1, 2)
    widths, heights = boxes[:, 0], boxes[:, 1]
    classes = Counter(annotations.class_names[inst.label - 1] for r in annotations.records for inst in r.instances)
    return {
        "source": str(annotations.source),
        "flavour": annotations.flavour,
        "images": {
            "listed": len(annotations.records),
            "found": len(annotations.records) - len(missing),
            "missing": len(missing),
            "unreadable": len(unreadable),
            "without_regions": sum(1 for r in annotations.records if not (r.num_regions or r.instances)),
        },
        "regions": {
            "total": sum(annotations.shapes.values()),
            "by_shape": dict(annotations.shapes.most_common()),
            "used": annotations.num_instances,
            "skipped": dict(annotations.skipped.most_common()),
            "repaired": dict(annotations.repaired.most_common()),
            "assumed": dict(annotations.assumed.most_common()),
        },
        "classes": {name: classes[name] for name in annotations.class_names},
        "boxes": {
            "count": len(boxes),
            "width": percentiles(widths),
            "height": percentiles(heights),
            "size": percentiles(np.sqrt(widths * heights)),  # sqrt(area): what anchor sizes compare with
            "aspect": percentiles(widths / np.maximum(heights, 1e-6)),
        },
        "missing_files": missing[:LISTED],
        "unreadable_files": unreadable[:LISTED],
        "errors": list(annotations.errors),
        "usable": usable,
    }


def instance_box(polygons: tuple[np.ndarray, ...]) -> tuple[float, float]:
    points = np.concatenate(polygons)
    return tuple(points.max(axis=0) - points.min(axis=0))


def percentiles(values: np.ndarray) -> dict[str, float | None]:
    if not len(values):
        return {f"p{q}": None for q in PERCENTILES}
    return {f"p{q}": round(float(v), 2) for q, v in zip(PERCENTILES, np.percentile(values, PERCENTILES))}


def exit_status(report: dict) -> int:
    """0 when there is something to train on, 1 when nothing is usable, 2 when the file has errors
    (training would stop at the first)."""
    if report["errors"]:
        return 2
    return 0 if report["usable"] else 1


def format_report(report: dict) -> str:
    images, regions, boxes = report["images"], report["regions"], report["boxes"]
    lines = [
        f"{report['source']}: {FLAVOUR_NAMES.get(report['flavour'], report['flavour'])} ({report['flavour']})",
        (f"  images   {images['listed']} listed, {images['found']} found, {images['missing']} missing, "
         f"{images['unreadable']} unreadable, {images['without_regions']} without regions"),
        f"  regions  {regions['total']}" + counts_in_brackets(regions["by_shape"]),
        f"  used     {regions['used']}",
        *(f"    {n:6d}  {assumption}" for assumption, n in regions["assumed"].items()),
        f"  skipped  {sum(regions['skipped'].values())}",
        *(f"    {n:6d}  {reason}" for reason, n in regions["skipped"].items()),
    ]
    if regions["repaired"]:
        lines += [f"  repaired {sum(regions['repaired'].values())}" + counts_in_brackets(regions["repaired"])]
    lines += ["  classes  " + (", ".join(f"{name} {n}" for name, n in report["classes"].items()) or "none")]
    if boxes["count"]:
        lines += [f"  boxes    {boxes['count']} instances, percentiles p5 / p50 / p95 (pixels of the stored images):"]
        for key, label in (("width", "width"), ("height", "height"), ("size", "sqrt(area)"), ("aspect", "w / h")):
            lines += [f"    {label:10s} " + " / ".join(f"{boxes[key][f'p{q}']:g}" for q in PERCENTILES)]
    for title, names, total in (("missing", report["missing_files"], images["missing"]),
                                ("unreadable", report["unreadable_files"], images["unreadable"])):
        if names:
            more = f" (first {len(names)} of {total})" if total > len(names) else ""
            lines += [f"  {title}{more}:", *(f"    {name}" for name in names)]
    if report["errors"]:
        lines += [f"  errors   {len(report['errors'])}", *(f"    {error}" for error in report["errors"])]
        verdict = f"{len(report['errors'])} ERRORS: fix the problems listed above (training stops at the first)"
    elif report["usable"]:
        verdict = "usable"
    elif images["found"] == images["unreadable"]:
        verdict = "NOTHING USABLE: no listed image was found and readable (is --images the image folder?)"
    else:
        verdict = "NOTHING USABLE: no readable image has an instance to train on (see the skips above)"
    return "\n".join(lines + [f"  verdict  {verdict}"])


def counts_in_brackets(counts: dict[str, int]) -> str:
    return f" ({', '.join(f'{key} {n}' for key, n in counts.items())})" if counts else ""
