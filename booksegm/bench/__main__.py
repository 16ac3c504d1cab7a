"""Benchmarks: ``python -m booksegm.bench [speed] [--steps 20 --image-size 256 ...]``,
``python -m booksegm.bench accuracy|curves`` (booksegm.bench.accuracy: recipes trained side by side) and
``python -m booksegm.bench inventory`` (booksegm.bench.inventory: shelf rows and order on rendered shelves).

Prints figures, asserts nothing. The speed benchmark, in one process, on the same synthetic data,
model layout and hyperparameters, times:

  synth     rendering the synthetic set (images/s)
  data      the training DataLoader with augmentation and rasterisation (images/s)
  train     booksegm's Lightning training step vs a plain torchvision loop (s/step, images/s,
            peak memory, mean loss over the last steps)
  predict   eval-mode forward passes of both models (images/s)

The plain loop is what a user would write from torchvision's references: ``MaskRCNN`` on
``resnet_fpn_backbone`` as ``maskrcnn_resnet50_fpn`` builds it from scratch (its own resize
transform set to the same size), SGD with the same LR, momentum, weight decay and gradient
clipping, no Lightning.

``python -m booksegm.bench throughput`` (booksegm.bench.throughput): images/s of ``booksegm train``
with 1 and 2 processes, photos/s of predict at batch 1, 4 and 8.

``python -m booksegm.bench suggest`` (booksegm.bench.suggest): a weak model fine-tuned on the k
photos ``booksegm data suggest`` picks against k picked at random, validation mask AP of each.

``python -m booksegm.bench latency PHOTOS`` (booksegm.bench.latency): seconds a photo of predict,
beside YOLOv8n-seg's when Ultralytics is installed.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import pytorch_lightning as pl
import torch
from torch import nn
from torch.utils.data import DataLoader
from torchvision.models.detection import MaskRCNN
from torchvision.models.detection.backbone_utils import resnet_fpn_backbone

from booksegm.config import ConfigError
from booksegm.data.datamodule import BookDataModule, DataConfig, SyntheticConfig
from booksegm.data.resize import ResizeConfig
from booksegm.data.synthetic import generate_dataset
from booksegm.errors import cli_errors
from booksegm.inference import select_device
from booksegm.model.build import ModelConfig
from booksegm.training.module import BookSegmModule, OptimConfig


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m booksegm.bench", description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20, help="timed training steps per trainer")
    parser.add_argument("--warmup-steps", type=int, default=3, help="untimed steps first (allocator, caches)")
    parser.add_argument("--num-images", type=int, default=40, help="synthetic images to render")
    parser.add_argument("--image-size", type=int, default=256, help="square training size (data.resize)")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--backbone", default="resnet50")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda")
    parser.add_argument("--amp", action="store_true", help="mixed precision (CUDA only)")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def bench_synth(out_dir: Path, args) -> Path:
    start = time.perf_counter()
    json_path = generate_dataset(out_dir, args.num_images, seed=args.seed, progress=False)
    seconds = time.perf_counter() - start
    print(f"synth    {args.num_images} images 320x240 in {seconds:.2f} s: {args.num_images / seconds:.1f} images/s")
    return json_path


def make_datamodule(root: Path, args) -> BookDataModule:
    size = args.image_size
    cfg = DataConfig(
        format="synthetic", root=str(root), annotations="via_region_data.json", images="images",
        val_fraction=0.0, batch_size=args.batch_size, num_workers=0,
        resize=ResizeConfig("square", size, size), synthetic=SyntheticConfig(num_images=args.num_images),
    )
    datamodule = BookDataModule(cfg)
    datamodule.setup("fit")
    return datamodule


def bench_data(loader: DataLoader, batch_size: int) -> None:
    start = time.perf_counter()
    batches = sum(1 for _ in loader)
    seconds = time.perf_counter() - start
    images = batches * batch_size
    print(f"data     {images} images through augmentation + rasterisation: {images / seconds:.1f} images/s (1 process)")


def model_settings(args) -> tuple[ModelConfig, OptimConfig]:
    model = ModelConfig(
        backbone=args.backbone, rpn_pre_nms_top_n_train=600, rpn_post_nms_top_n_train=300,
        rpn_pre_nms_top_n_test=300, rpn_post_nms_top_n_test=150, box_batch_size_per_image=128,
    )
    # SGD, because the plain loop below is torchvision's reference recipe (not booksegm's AdamW default)
    optim = OptimConfig(optimizer="sgd", lr=0.01, weight_decay=1e-4, warmup_steps=0, schedule="constant")
    return model, optim


class StepTimer(pl.Callback):
    """Wall time and loss of every training step, measured around Lightning's whole step."""

    def __init__(self):
        self.times: list[float] = []
        self.losses: list[float] = []
        self._start = 0.0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self._sync(pl_module.device)
        self._start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self._sync(pl_module.device)
        self.times.append(time.perf_counter() - self._start)
        self.losses.append(float(outputs["loss"]))

    @staticmethod
    def _sync(device: torch.device) -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()


def bench_booksegm(datamodule: BookDataModule, device: str, args) -> tuple[list[float], list[float], torch.nn.Module]:
    model_cfg, optim_cfg = model_settings(args)
    torch.manual_seed(args.seed)
    module = BookSegmModule(model=asdict(model_cfg), optim=asdict(optim_cfg), class_names=["book"])
    timer = StepTimer()
    trainer = pl.Trainer(
        accelerator=device, devices=1, max_steps=args.warmup_steps + args.steps,
        precision="16-mixed" if args.amp else "32-true", gradient_clip_val=5.0, gradient_clip_algorithm="norm",
        logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        limit_val_batches=0, callbacks=[timer],
    )
    trainer.fit(module, train_dataloaders=datamodule.train_dataloader())
    return timer.times[args.warmup_steps:], timer.losses[args.warmup_steps:], module.model


def bench_plain(loader: DataLoader, device: torch.device, args) -> tuple[list[float], list[float], torch.nn.Module]:
    """A plain torchvision training loop on the same data and hyperparameters."""
    model_cfg, optim_cfg = model_settings(args)
    torch.manual_seed(args.seed)
    backbone = resnet_fpn_backbone(
        backbone_name=args.backbone, weights=None, norm_layer=nn.BatchNorm2d, trainable_layers=5
    )
    model = MaskRCNN(
        backbone, num_classes=2, min_size=args.image_size, max_size=args.image_size,
        rpn_pre_nms_top_n_train=model_cfg.rpn_pre_nms_top_n_train,
        rpn_post_nms_top_n_train=model_cfg.rpn_post_nms_top_n_train,
        rpn_pre_nms_top_n_test=model_cfg.rpn_pre_nms_top_n_test,
        rpn_post_nms_top_n_test=model_cfg.rpn_post_nms_top_n_test,
        box_batch_size_per_image=model_cfg.box_batch_size_per_image,
    ).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=optim_cfg.lr, momentum=optim_cfg.momentum,
                                weight_decay=optim_cfg.weight_decay)
    scaler = torch.amp.GradScaler(enabled=args.amp)
    model.train()
    times, losses = [], []
    batches = iter(cycle(loader))
    for _ in range(args.warmup_steps + args.steps):
        images, targets = next(batches)
        start = time.perf_counter()
        images = [i.to(device) for i in images]
        targets = [{k: v.to(device) if torch.is_tensor(v) else v for k, v in t.items()} for t in targets]
        with torch.autocast(device.type, enabled=args.amp):
            loss = sum(model(images, targets).values())
        optimizer.zero_grad()
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        scaler.step(optimizer)
        scaler.update()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
        losses.append(loss.item())
    return times[args.warmup_steps:], losses[args.warmup_steps:], model


def bench_predict(model: torch.nn.Module, loader: DataLoader, device: torch.device, batches: int = 3) -> float:
    model.eval()
    seen, start = 0, time.perf_counter()
    with torch.inference_mode():
        for i, (images, _) in enumerate(loader):
            if i == batches:
                break
            model([im.to(device) for im in images])
            seen += len(images)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return seen / (time.perf_counter() - start)


def cycle(loader: DataLoader):
    while True:
        yield from loader


def report_train(name: str, times: list[float], losses: list[float], batch_size: int, device: torch.device) -> None:
    median = statistics.median(times)
    memory = (f"peak CUDA {torch.cuda.max_memory_allocated() / 2**20:.0f} MiB" if device.type == "cuda"
              else f"peak RSS {peak_rss_mib():.0f} MiB (process so far)")
    tail = losses[-5:]
    print(f"train    {name:<22} {median:.3f} s/step (median of {len(times)}), {batch_size / median:.2f} images/s, "
          f"{memory}, mean loss last {len(tail)} steps {statistics.mean(tail):.3f}")


@cli_errors()
def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] in (["accuracy"], ["curves"]):
        from booksegm.bench import accuracy

        return (accuracy.main if argv[0] == "accuracy" else accuracy.curves_main)(argv[1:])
    if argv[:1] == ["inventory"]:
        from booksegm.bench import inventory

        return inventory.main(argv[1:])
    if argv[:1] == ["throughput"]:
        from booksegm.bench import throughput

        return throughput.main(argv[1:])
    if argv[:1] == ["latency"]:
        from booksegm.bench import latency

        return latency.main(argv[1:])
    if argv[:1] == ["suggest"]:
        from booksegm.bench import suggest

        return suggest.main(argv[1:])
    args = parse_args(argv[1:] if argv[:1] == ["speed"] else argv)
    device = select_device(args.device)
    if args.amp and device.type != "cuda":
        raise ConfigError("--amp needs a CUDA device")
    print(f"booksegm bench: device {device}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"backbone {args.backbone}, {args.image_size} px, batch {args.batch_size}, AMP {args.amp}")
    with tempfile.TemporaryDirectory() as tmp:
        bench_synth(Path(tmp), args)
        datamodule = make_datamodule(Path(tmp), args)
        loader = datamodule.train_dataloader()
        bench_data(loader, args.batch_size)

        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        times, losses, ours = bench_booksegm(datamodule, device.type, args)
        report_train("booksegm (Lightning)", times, losses, args.batch_size, device)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        times, losses, plain = bench_plain(loader, device, args)
        report_train("plain torchvision loop", times, losses, args.batch_size, device)

        ours = ours.to(device)
        print(f"predict  booksegm {bench_predict(ours, loader, device):.2f} images/s, "
              f"plain torchvision {bench_predict(plain, loader, device):.2f} images/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
