"""Throughput benchmark: ``python -m booksegm.bench throughput [--steps 20 --processes 1 2 --batch-sizes 1 4 8]``.

Training: images/s of ``booksegm train`` as users run it, with 1 process and with 2 (``trainer=ddp
trainer.devices=2``: CPU processes and gloo without CUDA, GPUs with it), the default config (the
profile this machine picks, its synthetic set) plus any overrides given, one after the other (each
owns the cores). Each run trains ``--warmup-steps`` + ``--steps`` steps of one epoch without
validation; ``StepClock`` notes when process 0 ends each step, and the figure is every process's
images over the timed steps' wall time, data loading included.

Predict: photos/s of what ``booksegm predict`` runs per batch (booksegm.inference.predict_images:
the resize, the model's test-time views, the masks back at the photo's size) at each batch size, on
the first training run's photos, with that run's last checkpoint (or ``--ckpt``, a trained model:
its detections cost time too) at the threshold predict would use. Reading and writing files is not timed.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import pytorch_lightning as pl
import torch

from booksegm.bench.accuracy import run_recipe
from booksegm.data.images import load_rgb
from booksegm.errors import UserError
from booksegm.inference import predict_images, read_run_config
from booksegm.model.checkpoint_file import read_torch_file
from booksegm.photos import DetectorSettings, load_detector


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m booksegm.bench throughput", description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20, help="timed training steps of each run")
    parser.add_argument("--warmup-steps", type=int, default=3, help="untimed steps first (at least 1: the clock "
                                                                    "starts when one ends)")
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2], help="training runs: processes each")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 4, 8], help="predict: photos a forward pass")
    parser.add_argument("--photos", type=int, default=32, help="predict: photos timed at each batch size")
    parser.add_argument("--ckpt", type=Path, help="predict with this checkpoint (default: the first training run's "
                                                  "last.ckpt)")
    parser.add_argument("--device", default="auto", help="predict: auto | cpu | cuda")
    parser.add_argument("overrides", nargs="*", help="booksegm.train overrides added to every run (before the "
                                                      "options that take lists)")
    args = parser.parse_args(argv)
    if min(args.warmup_steps, args.steps, *args.processes, *args.batch_sizes, args.photos) < 1:
        parser.error("--warmup-steps, --steps, --processes, --batch-sizes and --photos must be at least 1")
    return args


class StepClock(pl.Callback):
    """When each training step ends on process 0, and its images, written as JSON when training ends:
    what this benchmark adds to a ``booksegm train`` run as ``+callbacks.step_clock``."""

    def __init__(self, path: str):
        self.path = Path(path)
        self.ends: list[float] = []
        self.images: list[int] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.is_global_zero:
            if pl_module.device.type == "cuda":
                torch.cuda.synchronize()
            self.ends.append(time.perf_counter())
            self.images.append(len(batch[0]))

    def on_train_end(self, trainer, pl_module):
        if trainer.is_global_zero:
            self.path.write_text(json.dumps({"processes": trainer.world_size, "ends": self.ends,
                                             "images": self.images}))


def train_overrides(processes: int, steps: int, clock: Path) -> list[str]:
    ddp = ["trainer=ddp", f"trainer.devices={processes}"] if processes > 1 else []
    return [*ddp, "trainer.max_epochs=1", f"trainer.limit_train_batches={steps}", "trainer.limit_val_batches=0",
            f"+callbacks.step_clock._target_={StepClock.__module__}.{StepClock.__qualname__}",
            f"+callbacks.step_clock.path={clock}"]


def train_throughput(processes: int, args: argparse.Namespace, run_dir: Path) -> dict:
    """One training run of ``processes`` processes; its images/s over the timed steps."""
    clock = run_dir.parent / f"{run_dir.name}_clock.json"
    total = args.warmup_steps + args.steps
    result = run_recipe(processes_name(processes),
                        [*args.overrides, *train_overrides(processes, total, clock)], run_dir)
    if "error" in result or not clock.is_file():
        raise UserError(f"the {processes}-process training run failed ({result.get('error', 'no step times')}): "
                        f"its output is above")
    noted = json.loads(clock.read_text())
    if len(noted["ends"]) < total:
        raise UserError(f"an epoch of {processes_name(processes)} has {len(noted['ends'])} steps, fewer than the "
                        f"{total} asked for: fewer --steps, or more data.synthetic.num_images")
    seconds = noted["ends"][total - 1] - noted["ends"][args.warmup_steps - 1]
    images = noted["processes"] * sum(noted["images"][args.warmup_steps:total])
    return {"processes": noted["processes"], "batch": noted["images"][-1], "images": images, "seconds": seconds}


def training_photos(ckpt: Path, count: int) -> list[Path]:
    """The first ``count`` photos of the data the run of ``ckpt`` (a benchmark run's) trained on."""
    data = read_run_config(ckpt, read_torch_file(ckpt)).data
    folder = Path(data.root) / data.images
    photos = sorted(p for p in folder.iterdir() if p.suffix.lower() in {".jpg", ".jpeg", ".png"})
    if len(photos) < count:
        raise UserError(f"{folder}: {len(photos)} photos, fewer than --photos {count}")
    return photos[:count]


def predict_throughput(ckpt: Path, photos: list[Path], args: argparse.Namespace) -> list[dict]:
    """Photos/s of predict's per-batch work at each of ``args.batch_sizes``."""
    loaded, resize = load_detector(DetectorSettings(ckpt_path=str(ckpt), device=args.device))
    images = [load_rgb(path) for path in photos]
    cuda = next(loaded.model.parameters()).device.type == "cuda"
    predict_images(loaded, images[:1], resize)  # warm-up: allocator, lazy initialisation
    rows = []
    for batch_size in args.batch_sizes:
        detections, start = 0, time.perf_counter()
        for i in range(0, len(images), batch_size):
            detections += sum(map(len, predict_images(loaded, images[i:i + batch_size], resize)))
        if cuda:
            torch.cuda.synchronize()
        rows.append({"batch": batch_size, "photos": len(images), "seconds": time.perf_counter() - start,
                     "detections": detections, "size": images[0].shape[:2]})
    return rows


def processes_name(count: int) -> str:
    return f"{count} process" + ("es" if count > 1 else "")


def main(argv=None) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="booksegm-throughput-") as tmp:
        trained = [train_throughput(n, args, Path(tmp) / f"train_{i}") for i, n in enumerate(args.processes)]
        first_ckpt = Path(tmp) / "train_0" / "checkpoints" / "last.ckpt"
        predicted = predict_throughput(args.ckpt or first_ckpt, training_photos(first_ckpt, args.photos), args)

    print(f"\nbooksegm bench throughput: torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"train overrides: {' '.join(args.overrides) or '(none)'}")
    for row in trained:
        print(f"train    {processes_name(row['processes']):<12} {row['images'] / row['seconds']:8.2f} images/s  "
              f"({row['images']} images in {row['seconds']:.1f} s, batch {row['batch']} a process, timed steps: "
              f"{args.steps} after {args.warmup_steps} warm-up)")
    for row in predicted:
        height, width = row["size"]
        print(f"predict  batch {row['batch']:<6} {row['photos'] / row['seconds']:8.2f} photos/s  "
              f"({row['photos']} photos of {width}x{height} in {row['seconds']:.1f} s, "
              f"{row['detections'] / row['photos']:.1f} detections a photo)")
    first_run = f"the first training run's last.ckpt ({processes_name(args.processes[0])})"
    print(f"predict's model: {args.ckpt or first_run}")
    return 0
