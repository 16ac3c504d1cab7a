"""The profile a bare `booksegm train` picks: gpu with CUDA (full Mask R-CNN, 640x480, AMP, workers,
pinned memory), cpu without it (the CPU default exactly as before the profiles)."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from support import EXPERIMENTS, compose_config, select_values

from booksegm.config import to_dataclass
from booksegm.data.datamodule import BookDataModule, DataConfig, SyntheticConfig
from booksegm.data.resize import ResizeConfig
from booksegm.model.build import ModelConfig, build_maskrcnn
from booksegm.training.profile import auto_precision, with_profile

# the CPU default docs/experiments.md measures (conf/model/maskrcnn_cpu.yaml, conf/data/synthetic.yaml,
# conf/train/default.yaml, conf/trainer/default.yaml)
CPU_DEFAULT = {
    "model.backbone": "mobilenet_v3_large", "model.norm": "group", "model.fpn_channels": 32,
    "model.box_head_dim": 256, "model.mask_head_convs": 2, "model.mask_head_channels": 32,
    "model.anchors.sizes": [12, 24, 48, 96, 192], "model.anchors.ratios": [0.18, 0.38, 1.8],
    "model.rpn_pre_nms_top_n_train": 600, "model.box_batch_size_per_image": 32, "model.box_positive_fraction": 0.5,
    "model.maskness_scoring": True, "model.maskness_power": 2.0, "model.box_nms_thresh": 0.4, "model.weights": "none",
    "model.tta_scales": [1.0, 1.25], "model.tta_hflip": True, "train.lr": 0.002,
    "data.format": "synthetic", "data.synthetic.num_images": 240, "data.synthetic.width": 256,
    "data.synthetic.height": 192, "data.resize.mode": "none", "data.batch_size": 4, "data.val_batch_size": 4,
    "data.augment.hflip": 0.5, "data.augment.vflip": 0.0, "data.augment.rotate_p": 0.0, "data.augment.scale_p": 0.5,
    "data.num_workers": 0, "data.pin_memory": False,
    "train.batch_threads": 2, "trainer.max_epochs": 20, "trainer.check_val_every_n_epoch": 5, "trainer.precision": "32-true",
}


def chosen_config(monkeypatch, cuda: bool, *overrides: str):
    """The config `booksegm train OVERRIDES` composes where torch.cuda.is_available() says `cuda`."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    return compose_config(*with_profile(["train", *overrides])[1:])


def test_without_cuda_a_bare_train_composes_the_cpu_default_as_before(monkeypatch):
    cfg = chosen_config(monkeypatch, cuda=False)
    assert select_values(cfg, CPU_DEFAULT) == CPU_DEFAULT
    assert cfg == compose_config()  # and the same as the config with no profile named


def test_with_cuda_a_bare_train_composes_the_gpu_recipe(monkeypatch):
    cfg = chosen_config(monkeypatch, cuda=True)
    assert (cfg.model.backbone, cfg.model.norm, cfg.model.fpn_channels, cfg.model.box_head_dim) == ("resnet50", "batch", 256, 1024)
    assert 640 <= max(cfg.data.synthetic.width, cfg.data.synthetic.height) <= 800
    assert cfg.data.resize.mode == "none"  # rendered at the training size
    assert cfg.data.synthetic.num_images >= 1000 and cfg.trainer.max_epochs > 20
    assert cfg.data.num_workers > 0 and cfg.data.pin_memory is True
    assert cfg.trainer.precision == "bf16-mixed"
    # torchvision's RoI sampling and the LR the GPU recipe was set up with, not the CPU model's
    assert cfg.model.box_positive_fraction == 0.25 and cfg.train.lr == 0.001
    assert cfg.model.maskness_scoring is False  # torchvision's scores: measured on the CPU model only
    assert cfg.model.box_nms_thresh == 0.5  # torchvision's NMS: the CPU model's 0.4 was measured on it alone
    assert list(cfg.model.tta_scales) == [1.0] and cfg.model.tta_hflip is False  # one view: TTA measured on the CPU model
    assert cfg.train.batch_threads == 1  # the CPU's threaded shares do not apply to a GPU


@pytest.mark.parametrize("bf16, expected", [(True, "bf16-mixed"), (False, "16-mixed")])
def test_cuda_trains_with_amp_bf16_where_supported(monkeypatch, bf16, expected):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16)
    assert auto_precision() == expected


@pytest.mark.parametrize("named", ["profile=cpu", "profile=gpu"])
def test_a_named_profile_wins_over_the_automatic_choice(monkeypatch, named):
    for cuda in (True, False):
        monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
        assert with_profile(["train", "seed=1", named]) == ["train", "seed=1", named]


@pytest.mark.parametrize("argv, expected", [
    # among the overrides: argparse takes them as one run of words
    (["a=1", "b=2", "--cfg", "job"], ["profile=cpu", "a=1", "b=2", "--cfg", "job"]),
    (["--cfg", "job", "a=1"], ["--cfg", "job", "profile=cpu", "a=1"]),
    (["--info"], ["profile=cpu", "--info"]),  # first: after --info it would be read as --info's argument
    (["-m", "--config-name", "config"], ["profile=cpu", "-m", "--config-name", "config"]),
    (["--hydra-help"], ["--hydra-help"]),  # Hydra's help takes no override
    (["a=1", "--cfg", "job", "b=2"], ["a=1", "--cfg", "job", "b=2"]),  # Hydra refuses it: left for Hydra to say so
])
def test_the_profile_joins_the_overrides_wherever_they_stand(monkeypatch, argv, expected):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert with_profile(["train", *argv]) == ["train", *expected]


def test_the_train_entry_point_applies_the_choice(tmp_path):
    """`python -m booksegm.train --cfg job` where torch reports CUDA shows the GPU model."""
    code = ("import runpy, sys, torch; torch.cuda.is_available = lambda: True; "
            "sys.argv = ['train', '--cfg', 'job']; runpy.run_module('booksegm.train', run_name='__main__')")
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "backbone: resnet50" in result.stdout and "pin_memory: true" in result.stdout


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_composes_with_the_gpu_profile(experiment, monkeypatch, tmp_path):
    monkeypatch.setenv("BOOKSEGM_ROOT", str(tmp_path))
    cfg = compose_config("profile=gpu", f"+experiment={experiment}", "data.root=/photos")
    to_dataclass(DataConfig, cfg.data, "data").validate()
    build_maskrcnn(to_dataclass(ModelConfig, cfg.model, "model"), num_classes=1 + len(cfg.data.classes))


@pytest.mark.parametrize("pin", [True, False])
def test_data_pin_memory_reaches_the_loaders(tmp_path, pin):
    cfg = DataConfig(format="synthetic", root=str(tmp_path), annotations="via_region_data.json", images="images", num_workers=0,
                     pin_memory=pin, val_fraction=0.5, resize=ResizeConfig("none"),
                     synthetic=SyntheticConfig(num_images=2, width=64, height=48))
    datamodule = BookDataModule(cfg)
    datamodule.prepare_data()
    datamodule.setup("fit")
    assert datamodule.train_dataloader().pin_memory is pin and datamodule.val_dataloader().pin_memory is pin
