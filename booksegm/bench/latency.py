"""Seconds a photo: ``python -m booksegm.bench latency PHOTOS [--ckpt books] [--size 640] [--photos 20]``.

What ``booksegm predict`` spends on each photo (booksegm.inference.predict_images, one photo a
batch: the resize, the model's views, the masks back at the photo's size; reading and writing files
not timed), on photos first scaled so that their longer side is ``--size`` px, and beside it
Ultralytics YOLOv8n-seg's ``predict`` on the same arrays (``imgsz=--size``, its default thresholds)
when the ``ultralytics`` package is installed (it is not a booksegm dependency). Nothing is
downloaded: YOLOv8n-seg is built from its architecture file with untrained weights, the same
arithmetic as trained ones but for the few masks of books it would find.

Each photo runs ``--repeats`` times after one warm-up photo; a photo's time is its fastest run (the
least disturbed by other work on the machine). Prints the median and mean over the photos and
photos/s from the mean. Asserts nothing.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import torch

from booksegm.data.images import load_rgb
from booksegm.inference import predict_images
from booksegm.photos import DetectorSettings, find_inputs, load_detector

PEER = "yolov8n-seg"  # the smallest Ultralytics segmentation model, the usual CPU baseline


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m booksegm.bench latency", description=__doc__.splitlines()[0])
    parser.add_argument("photos", type=Path, help="a folder of photos (the first --photos, sorted by path)")
    parser.add_argument("--ckpt", default=None, help="checkpoint, exported .pth or bundled name (default: books)")
    parser.add_argument("--size", type=int, default=640, help="longer side the photos are scaled to first, px")
    parser.add_argument("--photos", dest="count", type=int, default=20, help="photos timed")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each photo; its fastest counts")
    parser.add_argument("--no-peer", action="store_true", help=f"time booksegm alone, not {PEER}")
    args = parser.parse_args(argv)
    if min(args.size, args.count, args.repeats) < 1:
        parser.error("--size, --photos and --repeats must be at least 1")
    return args


def scaled_photos(folder: Path, count: int, size: int) -> list[np.ndarray]:
    """The first ``count`` photos under ``folder`` (RGB, as predict finds them), scaled so that the
    longer side is ``size`` px."""
    photos = []
    for path in find_inputs(folder)[1][:count]:
        image = load_rgb(path)
        scale = size / max(image.shape[:2])
        shape = (max(round(image.shape[1] * scale), 1), max(round(image.shape[0] * scale), 1))
        photos.append(cv2.resize(image, shape, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR))
    return photos


def seconds_each(run: Callable[[np.ndarray], object], photos: list[np.ndarray], repeats: int) -> list[float]:
    """Each photo's fastest of ``repeats`` runs, after one untimed run (allocator, lazy set-up)."""
    run(photos[0])
    times = []
    for photo in photos:
        runs = []
        for _ in range(repeats):
            start = time.perf_counter()
            run(photo)
            runs.append(time.perf_counter() - start)
        times.append(min(runs))
    return times


def booksegm_runner(ckpt: str | None) -> tuple[str, Callable[[np.ndarray], object]]:
    """predict's model as predict loads it (its score threshold and detection limits), on the CPU."""
    loaded, resize = load_detector(DetectorSettings(ckpt_path=ckpt, device="cpu"))
    views = len(getattr(loaded.model, "views", [None]))
    name = f"booksegm {loaded.source.name} ({resize.mode} {resize.max_dim} px, {views} view{'s' * (views > 1)})"
    return name, lambda photo: predict_images(loaded, [photo], resize)


def peer_runner(size: int) -> tuple[str, Callable[[np.ndarray], object]] | str:
    """YOLOv8n-seg's predict, or why it cannot run."""
    try:
        from ultralytics import YOLO
    except ImportError:
        return f"{PEER}: not measured (pip install ultralytics to time it beside booksegm)"
    model = YOLO(f"{PEER}.yaml", task="segment")  # the architecture alone: no download
    return (f"{PEER} (Ultralytics, untrained, imgsz {size})",
            lambda photo: model.predict(photo[..., ::-1], imgsz=size, device="cpu", verbose=False))  # it takes BGR


def main(argv=None) -> int:
    args = parse_args(argv)
    photos = scaled_photos(args.photos, args.count, args.size)
    runners = [booksegm_runner(args.ckpt)]
    notes = []
    if not args.no_peer:
        peer = peer_runner(args.size)
        (notes if isinstance(peer, str) else runners).append(peer)
    height, width = photos[0].shape[:2]
    print(f"\nbooksegm bench latency: {len(photos)} photos of {args.photos} (the first {width}x{height}), longer "
          f"side {args.size} px, torch {torch.__version__}, {torch.get_num_threads()} threads, fastest of "
          f"{args.repeats} runs a photo")
    for name, run in runners:
        times = seconds_each(run, photos, args.repeats)
        mean = statistics.mean(times)
        print(f"{name:<52} median {statistics.median(times):6.3f} s a photo, mean {mean:6.3f} s, "
              f"{1 / mean:5.2f} photos/s")
    for note in notes:
        print(note)
    return 0
