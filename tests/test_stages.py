"""Staged fine-tuning: matterport's layer sets, optimizer rebuilt per stage, progressive resizing, resume."""

from __future__ import annotations

import re
import shutil
from dataclasses import asdict

import pytest
import pytorch_lightning as pl
import torch
from support import run_train, tiny_config

from booksegm.config import ConfigError, to_dataclass
from booksegm.data.datamodule import BookDataModule, DataConfig
from booksegm.data.resize import ResizeConfig
from booksegm.model.build import build_maskrcnn
from booksegm.training.module import BookSegmModule, OptimConfig
from booksegm.training.stages import StageConfig, StagedTraining, set_trainable_layers

# resumed runs write to their own checkpoint folders, which Lightning remarks on
pytestmark = pytest.mark.filterwarnings("ignore:The dirpath has changed")

# matterport mrcnn/model.py, MaskRCNN.train(): layer_regex, matched with re.fullmatch on Keras layer names
MATTERPORT_LAYER_REGEX = {
    "heads": r"(mrcnn\_.*)|(rpn\_.*)|(fpn\_.*)",
    "3+": r"(res3.*)|(bn3.*)|(res4.*)|(bn4.*)|(res5.*)|(bn5.*)|(mrcnn\_.*)|(rpn\_.*)|(fpn\_.*)",
    "4+": r"(res4.*)|(bn4.*)|(res5.*)|(bn5.*)|(mrcnn\_.*)|(rpn\_.*)|(fpn\_.*)",
    "5+": r"(res5.*)|(bn5.*)|(mrcnn\_.*)|(rpn\_.*)|(fpn\_.*)",
    "all": ".*",
}


def matterport_layer_name(parameter_name: str) -> str:
    """The Keras layer that holds a torchvision parameter in matterport's model (resnet_graph, FPN, heads)."""
    if parameter_name.startswith("backbone.fpn."):
        return "fpn_" + parameter_name.removeprefix("backbone.fpn.")
    if parameter_name.startswith("rpn."):
        return "rpn_model"
    if parameter_name.startswith("roi_heads."):
        return "mrcnn_" + parameter_name.removeprefix("roi_heads.")
    body = parameter_name.removeprefix("backbone.body.")
    if body.startswith("conv1."):
        return "conv1"
    if body.startswith("bn1."):
        return "bn_conv1"
    layer, block, part = re.match(r"layer(\d)\.(\d+)\.(\w+?)\.", body).groups()
    stage, letter = int(layer) + 1, chr(ord("a") + int(block))
    if part == "downsample":  # downsample.0 is the shortcut conv, downsample.1 its BatchNorm
        kind = "res" if body.split(".")[3] == "0" else "bn"
        return f"{kind}{stage}{letter}_branch1"
    kind, index = re.fullmatch(r"(conv|bn)(\d)", part).groups()
    return f"{'res' if kind == 'conv' else 'bn'}{stage}{letter}_branch2{'abc'[int(index) - 1]}"


@pytest.mark.parametrize("layers", list(MATTERPORT_LAYER_REGEX))
def test_stage_layers_train_exactly_what_matterport_trains(layers):
    # from scratch the body has trainable BatchNorm, so the BN parameter sets are compared too
    model = build_maskrcnn(tiny_config(weights="none"), num_classes=2)
    set_trainable_layers(model, layers)
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    expected = {
        name for name, _ in model.named_parameters()
        if re.fullmatch(MATTERPORT_LAYER_REGEX[layers], matterport_layer_name(name))
    }
    assert trainable == expected
    body = {name for name, _ in model.named_parameters() if name.startswith("backbone.body.")}
    frozen_body = {"heads": body, "all": set()}.get(layers)
    if frozen_body is not None:  # spelled out for the two ends of the schedule
        assert body - trainable == frozen_body


@pytest.mark.parametrize(
    "stages, message",
    [
        ([{"layers": "2+", "epochs": 1}], r"train.stages\[0\].layers='2\+' is unknown"),
        ([{"layers": "heads", "epochs": 1}, {"layers": "all", "epochs": 0}], r"train.stages\[1\].epochs must be >= 1"),
        ([{"layers": "all", "epochs": 2, "lr": -0.1}], r"train.stages\[0\].lr must be > 0"),
        ([{"layers": "all", "epoch": 2}], "epoch"),  # a typo in a key
    ],
)
def test_invalid_stages_fail_with_one_line(stages, message):
    with pytest.raises(ConfigError, match=message) as info:
        to_dataclass(OptimConfig, {"stages": stages}, "train").validate()
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    "resize, message",
    [({"mode": "squash"}, "data.resize.mode='squash' is unknown"), ({"min_dimm": 3}, r"train.stages\[0\].resize")],
)
def test_invalid_stage_resize_fails_with_one_line(resize, message):
    with pytest.raises(ConfigError, match=message) as info:
        StagedTraining([StageConfig(epochs=1, resize=resize)], ResizeConfig())
    assert "\n" not in str(info.value)


def test_a_bad_stage_stops_the_train_command_in_one_line(tmp_path):
    result = run_train(tmp_path, "train.stages=[{layers:heads,epochs:1},{layers:2+,epochs:1}]")
    assert result.returncode != 0
    assert "booksegm: error: train.stages[1].layers='2+' is unknown" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_checkpoint_from_a_stage_the_schedule_lacks_is_refused():
    staging = StagedTraining([StageConfig("heads", 1), StageConfig("all", 1)], ResizeConfig())
    with pytest.raises(ConfigError, match=r"checkpoint was in stage 3 \(layers all\)"):
        staging.on_load_checkpoint(None, None, {"booksegm_stage": {"index": 2, "layers": "all"}})


# -- a real staged run on a tiny synthetic set ------------------------------------------------

STAGES = [
    {"layers": "heads", "epochs": 1, "resize": {"min_dim": 64, "max_dim": 64}},
    {"layers": "4+", "epochs": 2, "lr": 0.005, "resize": {"min_dim": 80, "max_dim": 80}},
    {"layers": "all", "epochs": 1},
]
BASE_SIZE = 96


class Recorder(pl.Callback):
    """What each training epoch ran with, read at its first batch."""

    def __init__(self):
        self.epochs: dict[int, dict] = {}
        self.val_sizes: set[int] = set()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        optimizer = trainer.optimizers[0]
        params = [p for group in optimizer.param_groups for p in group["params"]]
        body = pl_module.model.backbone.body
        self.epochs.setdefault(trainer.current_epoch, {
            "stage": pl_module.stage.layers,
            "optimizer": id(optimizer),
            "optimizer_params": {id(p) for p in params},
            "trainable": {id(p) for p in pl_module.parameters() if p.requires_grad},
            "has_momentum": any(optimizer.state.get(p) for p in params),
            "lr": optimizer.param_groups[0]["initial_lr"],
            "scheduler_step": trainer.lr_scheduler_configs[0].scheduler.last_epoch,
            "image_size": batch[0][0].shape[-1],
            "layer1_bn_training": body.layer1[0].bn1.training,
            "layer3_bn_training": body.layer3[0].bn1.training,
            "layer1_bn_mean": body.layer1[0].bn1.running_mean.clone(),
        })

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        self.val_sizes.add(batch[0][0].shape[-1])


def staged_fit(root, checkpoints, ckpt_path=None) -> Recorder:
    pl.seed_everything(0)
    data_cfg = to_dataclass(DataConfig, {
        "format": "via", "root": str(root), "annotations": "via_region_data.json", "images": "images",
        "resize": {"mode": "square", "min_dim": BASE_SIZE, "max_dim": BASE_SIZE}, "val_fraction": 0.34,
        "batch_size": 2, "val_batch_size": 2, "num_workers": 0,
    })
    datamodule = BookDataModule(data_cfg)
    optim = to_dataclass(OptimConfig, {"lr": 0.01, "warmup_steps": 0, "schedule": "constant", "stages": STAGES})
    # from scratch: BatchNorm2d in the body, so frozen stages must also stop its statistics
    # narrow heads (the stages freeze the backbone): 12 checkpoints of about 135 MB, not 365
    model = tiny_config(weights="none", fpn_channels=32, box_head_dim=64, mask_head_channels=16)
    module = BookSegmModule(model=asdict(model), optim=asdict(optim), class_names=["book"])
    staging = StagedTraining(optim.stages, data_cfg.resize)
    recorder = Recorder()
    trainer = pl.Trainer(
        max_epochs=staging.total_epochs, limit_train_batches=1, limit_val_batches=1, num_sanity_val_steps=0,
        logger=False, enable_progress_bar=False, enable_model_summary=False, accelerator="cpu",
        callbacks=[staging, recorder, pl.callbacks.ModelCheckpoint(dirpath=checkpoints, filename="{epoch}",
                                                                   save_top_k=-1, save_last=True)],
    )
    trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
    return recorder


@pytest.fixture(scope="module")
def staged_run(synthetic_set, tmp_path_factory):
    checkpoints = tmp_path_factory.mktemp("checkpoints")
    yield staged_fit(synthetic_set, checkpoints), checkpoints
    shutil.rmtree(checkpoints)  # the module's checkpoints, not kept to the end of the session


def test_each_stage_freezes_its_layers_with_a_new_optimizer_at_its_size(staged_run):
    record, _ = staged_run
    epochs = record.epochs
    assert [epochs[e]["stage"] for e in range(4)] == ["heads", "4+", "4+", "all"]
    for e in range(4):  # the optimizer holds exactly the trainable parameters
        assert epochs[e]["optimizer_params"] == epochs[e]["trainable"]
    assert len(epochs[0]["trainable"]) < len(epochs[1]["trainable"]) < len(epochs[3]["trainable"])
    # a new optimizer at each boundary, kept within a stage
    assert epochs[0]["optimizer"] != epochs[1]["optimizer"] == epochs[2]["optimizer"] != epochs[3]["optimizer"]
    assert not epochs[1]["has_momentum"] and epochs[2]["has_momentum"]
    assert [epochs[e]["scheduler_step"] for e in range(4)] == [0, 0, 1, 0]  # each stage's schedule restarts
    assert [epochs[e]["lr"] for e in range(4)] == [0.01, 0.005, 0.005, 0.01]  # stage lr, else train.lr
    # progressive resizing for training; validation stays at data.resize
    assert [epochs[e]["image_size"] for e in range(4)] == [64, 80, 80, BASE_SIZE]
    assert record.val_sizes == {BASE_SIZE}


def test_batchnorm_of_frozen_layers_keeps_its_statistics(staged_run):
    epochs = staged_run[0].epochs
    assert [epochs[e]["layer1_bn_training"] for e in range(4)] == [False, False, False, True]
    assert [epochs[e]["layer3_bn_training"] for e in range(4)] == [False, True, True, True]
    # layer1 is frozen for epochs 0-2: its running mean only moves once "all" trains it
    assert torch.equal(epochs[0]["layer1_bn_mean"], epochs[3]["layer1_bn_mean"])


def test_resume_in_the_middle_of_stage_2_continues_it(staged_run, synthetic_set):
    _, checkpoints = staged_run
    resumed = staged_fit(synthetic_set, checkpoints / "resumed", ckpt_path=checkpoints / "epoch=1.ckpt")
    epochs = resumed.epochs
    assert sorted(epochs) == [2, 3]
    assert epochs[2]["stage"] == "4+" and epochs[2]["image_size"] == 80
    # the stage's optimizer state and schedule position came back from the checkpoint
    assert epochs[2]["has_momentum"] and epochs[2]["scheduler_step"] == 1 and epochs[2]["lr"] == 0.005
    assert epochs[2]["optimizer_params"] == epochs[2]["trainable"]
    assert epochs[3]["stage"] == "all" and epochs[3]["optimizer"] != epochs[2]["optimizer"]


def test_resume_at_a_stage_boundary_enters_the_next_stage(staged_run, synthetic_set):
    _, checkpoints = staged_run
    resumed = staged_fit(synthetic_set, checkpoints / "boundary", ckpt_path=checkpoints / "epoch=0.ckpt")
    epoch = resumed.epochs[1]
    assert epoch["stage"] == "4+" and epoch["image_size"] == 80 and epoch["lr"] == 0.005
    assert epoch["optimizer_params"] == epoch["trainable"] and not epoch["has_momentum"]
    assert not epoch["layer1_bn_training"] and epoch["layer3_bn_training"]
