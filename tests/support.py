"""What several test modules share that is not a fixture: the tiny run's overrides, running a
command, composing a config, tiny models and toy data. Imported as ``from support import ...``
(pytest puts tests/ on sys.path); see tests/conftest.py for why these are plain names."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib.resources import files
from pathlib import Path

import numpy as np
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf
from PIL import Image

from booksegm.data.transforms import AugmentConfig
from booksegm.model.build import ModelConfig

CONF = Path(files("booksegm.conf"))  # the configs the entry points load: pkg://booksegm.conf
EXPERIMENTS = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml"))

# Small enough for a few CPU seconds a step: 128x96 images (rendered at that size, as the default
# renders at its training size), resnet18, few proposals.
TINY = [
    "data.synthetic.num_images=10", "data.synthetic.width=128", "data.synthetic.height=96",
    "data.batch_size=2", "data.val_batch_size=2", "data.num_workers=0", "data.val_fraction=0.2",
    "model.backbone=resnet18", "model.rpn_pre_nms_top_n_train=100", "model.rpn_post_nms_top_n_train=50",
    "model.rpn_pre_nms_top_n_test=50", "model.rpn_post_nms_top_n_test=20", "model.box_batch_size_per_image=16",
    "model.box_detections_per_img=10",
    "trainer.max_epochs=1", "trainer.check_val_every_n_epoch=1", "trainer.limit_train_batches=3", "trainer.limit_val_batches=1",
    "trainer.log_every_n_steps=1",
    "train.warmup_steps=1",
]


# torch threads of a test process and the commands it starts: one each beside a second pytest worker
# (pytest-xdist, pyproject's addopts), both cores for a single process
TORCH_THREADS = 1 if os.environ.get("PYTEST_XDIST_WORKER") else 2


def train_env(root: Path) -> dict:
    """A command's environment with its outputs and synthetic-set cache under ``root``."""
    return {**os.environ, "BOOKSEGM_ROOT": str(root), "BOOKSEGM_CACHE": str(root / "cache"),
            "OMP_NUM_THREADS": str(TORCH_THREADS), "HYDRA_FULL_ERROR": "0"}


def run_command(command: str, root: Path, *overrides: str) -> subprocess.CompletedProcess:
    """``booksegm <command> OVERRIDES`` (as ``python -m booksegm``) run in ``root``."""
    return subprocess.run([sys.executable, "-m", "booksegm", command, *overrides], cwd=root, env=train_env(root),
                          capture_output=True, text=True, timeout=600)


def run_train(root: Path, *overrides: str, base: list[str] = TINY) -> subprocess.CompletedProcess:
    """The tiny synthetic training run (``base``) with ``overrides`` on top."""
    return run_command("train", root, *base, *overrides)


def compose_config(*overrides: str, config_name: str = "config", return_hydra_config: bool = False) -> DictConfig:
    """The config an entry point composes (``config`` is train's; evaluate, predict, export)."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name=config_name, overrides=list(overrides), return_hydra_config=return_hydra_config)


def select_values(cfg: DictConfig, keys) -> dict:
    """{dotted key: plain value} of ``cfg`` (lists as lists), to compare a composed config with a table."""
    plain = (OmegaConf.select(cfg, key) for key in keys)
    return {key: OmegaConf.to_object(v) if OmegaConf.is_config(v) else v for key, v in zip(keys, plain)}


def tiny_config(**overrides) -> ModelConfig:
    cfg = ModelConfig(
        backbone="resnet18",
        rpn_pre_nms_top_n_train=100,
        rpn_post_nms_top_n_train=50,
        rpn_pre_nms_top_n_test=50,
        rpn_post_nms_top_n_test=20,
        box_batch_size_per_image=16,
    )
    for key, value in overrides.items():
        setattr(cfg, key, value)
    return cfg


def toy_batch(size: int = 64):
    torch.manual_seed(0)
    images = [torch.rand(3, size, size) for _ in range(2)]
    masks = torch.zeros(2, size, size, dtype=torch.uint8)
    masks[0, 8:40, 10:20] = 1
    masks[1, 20:60, 30:44] = 1
    boxes = torch.tensor([[10, 8, 20, 40], [30, 20, 44, 60]], dtype=torch.float32)
    target = {"boxes": boxes, "labels": torch.ones(2, dtype=torch.int64), "masks": masks}
    return images, [target, dict(target)]


NO_AUGMENT = AugmentConfig(hflip=0, vflip=0, rotate_p=0, photometric_p=0)


def polygon_region(xs, ys) -> dict:
    return {"shape_attributes": {"name": "polygon", "all_points_x": xs, "all_points_y": ys},
            "region_attributes": {"name": "book"}}


BOOK = [polygon_region([10, 30, 30, 10], [5, 5, 45, 45])]


def write_via_set(root: Path, images: dict[str, list[dict]], missing: tuple[str, ...] = ()) -> Path:
    """A VIA 2 export plus 80 x 60 JPEGs (except the ``missing`` ones)."""
    root.mkdir(parents=True, exist_ok=True)
    for name in images:
        if name not in missing:
            Image.fromarray(np.full((60, 80, 3), 90, np.uint8)).save(root / name)
    data = {f"{name}-1": {"filename": name, "size": -1, "regions": regions, "file_attributes": {}}
            for name, regions in images.items()}
    path = root / "via_region_data.json"
    path.write_text(json.dumps(data))
    return path


def truncate_jpeg(path: Path) -> None:
    """Rewrite ``path`` as a noise JPEG cut in half: its header reads, its pixels do not decode."""
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (60, 80, 3), dtype=np.uint8)).save(path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
