"""Staged fine-tuning in one run: matterport's successive ``model.train(layers=...)`` calls.

``train.stages`` lists ``{layers, epochs, lr, resize}``; :class:`StagedTraining` freezes the
backbone below each stage's first ResNet stage, gives the module a fresh optimizer and LR
schedule at each boundary (matterport compiles a new optimizer per ``train()`` call), and
switches ``data.resize`` for progressive resizing. The stage in force is saved in checkpoints,
so ``ckpt_path=`` resumes mid-stage with that stage's optimizer state.
"""

from __future__ import annotations

import bisect
import logging
from dataclasses import asdict, dataclass
from typing import Any

import pytorch_lightning as pl
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from booksegm.config import ConfigError, to_dataclass
from booksegm.data.resize import ResizeConfig
from booksegm.model.build import count_trainable

log = logging.getLogger(__name__)

# matterport's layer_regex (mrcnn/model.py, MaskRCNN.train) in torchvision's names. matterport's
# res2..res5 are torchvision's layer1..layer4; conv1/bn_conv1 the stem. FPN, RPN and heads
# ("fpn_*", "rpn_*", "mrcnn_*") match every regex: they always train.
BODY_TRAINABLE = {
    "heads": (),  # (mrcnn\_.*)|(rpn\_.*)|(fpn\_.*)
    "5+": ("layer4.",),  # (res5.*)|(bn5.*) + heads
    "4+": ("layer3.", "layer4."),  # (res4.*)|(bn4.*)|(res5.*)|(bn5.*) + heads
    "3+": ("layer2.", "layer3.", "layer4."),  # (res3.*)|(bn3.*) and up + heads
    "all": ("",),  # .* : the stem too
}
BODY = "backbone.body."
CHECKPOINT_KEY = "booksegm_stage"


@dataclass
class StageConfig:
    layers: str = "all"  # matterport train(layers=...): heads | 3+ | 4+ | 5+ | all
    epochs: int = 1  # epochs of this stage; the run lasts the sum
    lr: float | None = None  # LEARNING_RATE for this stage; null = train.lr
    resize: dict[str, Any] | None = None  # data.resize keys for this stage (progressive resizing); null = data.resize


def validate_stages(stages: list[StageConfig]) -> None:
    for i, stage in enumerate(stages):
        where = f"train.stages[{i}]"
        if stage.layers not in BODY_TRAINABLE:
            raise ConfigError(f"{where}.layers={stage.layers!r} is unknown; choose one of {list(BODY_TRAINABLE)}")
        if stage.epochs < 1:
            raise ConfigError(f"{where}.epochs must be >= 1, got {stage.epochs}")
        if stage.lr is not None and stage.lr <= 0:
            raise ConfigError(f"{where}.lr must be > 0 (or null for train.lr), got {stage.lr}")


def stage_resize(stage: StageConfig, base: ResizeConfig, index: int) -> ResizeConfig:
    """``data.resize`` with the stage's overrides merged in, checked as training resizing."""
    resize = to_dataclass(ResizeConfig, {**asdict(base), **(stage.resize or {})}, f"train.stages[{index}].resize")
    resize.validate(training=True)
    return resize


def set_trainable_layers(model: nn.Module, layers: str) -> None:
    """requires_grad as matterport's ``set_trainable(layer_regex[layers])``: the backbone body from
    the named ResNet stage up; everything outside the body (FPN, RPN, heads) always."""
    trainable = BODY_TRAINABLE[layers]
    for name, parameter in model.named_parameters():
        parameter.requires_grad_(not name.startswith(BODY) or name.removeprefix(BODY).startswith(trainable))


def freeze_batchnorm_statistics(model: nn.Module, layers: str) -> None:
    """BatchNorm in frozen parts of the body runs in inference mode, as a Keras layer with
    ``trainable=False`` does in matterport's TF2 port. (With ``train_bn=false`` and pretrained
    weights the body has FrozenBatchNorm2d, which has no statistics to update.)"""
    trainable = BODY_TRAINABLE[layers]
    for name, module in model.named_modules():
        if isinstance(module, _BatchNorm) and name.startswith(BODY):
            module.train(model.training and name.removeprefix(BODY).startswith(trainable))


class StagedTraining(pl.Callback):
    """Runs ``stages`` back to back in one ``Trainer.fit``.

    The LightningModule must build its optimizer in ``configure_optimizers`` from its ``stage``
    attribute (LR and length of the schedule) and its trainable parameters, as
    :class:`booksegm.training.module.BookSegmModule` does; this callback sets both, then calls
    ``trainer.strategy.setup_optimizers`` at each boundary. The datamodule needs a ``cfg.resize``
    (:class:`booksegm.data.datamodule.BookDataModule`) when stages resize.
    """

    def __init__(self, stages: list[StageConfig], base_resize: ResizeConfig):
        validate_stages(stages)
        if not stages:
            raise ConfigError("train.stages: StagedTraining needs at least one stage")
        self.stages = stages
        self.resizes = [stage_resize(stage, base_resize, i) for i, stage in enumerate(stages)]
        self.progressive = any(resize != base_resize for resize in self.resizes)
        self.index = 0  # the stage whose layers and optimizer are in force
        # the first epoch of each stage: stage i runs epochs starts[i] .. starts[i+1]-1
        self.starts = [sum(s.epochs for s in stages[:i]) for i in range(len(stages) + 1)]

    @property
    def total_epochs(self) -> int:
        return self.starts[-1]

    def stage_at(self, epoch: int) -> int:
        return min(bisect.bisect_right(self.starts, epoch) - 1, len(self.stages) - 1)

    # -- Lightning hooks, in the order a run meets them --------------------------------------

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        if trainer.max_epochs != self.total_epochs:
            raise ConfigError(
                f"trainer.max_epochs={trainer.max_epochs} but train.stages add up to {self.total_epochs} epochs"
            )
        if self.progressive:
            datamodule = trainer.datamodule
            # validation keeps the run's size, so val AP compares across stages
            datamodule.cfg.val_resize = datamodule.cfg.effective_val_resize
            # a fresh train DataLoader each epoch picks up the stage's data.resize
            trainer.reload_dataloaders_every_n_epochs = 1
        self._enter(trainer, pl_module, 0)

    def on_load_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict) -> None:
        # Before configure_optimizers: the optimizer must have the saved stage's parameters for
        # Lightning to load its state; on_train_start then moves on if that stage had ended.
        saved = checkpoint.get(CHECKPOINT_KEY)
        if saved is None:
            log.warning("checkpoint has no training stage; resuming as stage 1")
            return
        if saved["index"] >= len(self.stages) or saved["layers"] != self.stages[saved["index"]].layers:
            raise ConfigError(
                f"ckpt_path: the checkpoint was in stage {saved['index'] + 1} (layers {saved['layers']}), "
                "which train.stages no longer has: resume with the stages it was trained with"
            )
        self._enter(trainer, pl_module, saved["index"])

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict) -> None:
        checkpoint[CHECKPOINT_KEY] = {"index": self.index, "layers": self.stages[self.index].layers}

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Also the only hook a resumed run is sure to meet: Lightning skips on_train_epoch_start
        # for an epoch restarted from a checkpoint.
        if not self._enter(trainer, pl_module, self.stage_at(trainer.current_epoch)):
            self._announce(trainer, pl_module)
        freeze_batchnorm_statistics(pl_module.model, self.stages[self.index].layers)

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._enter(trainer, pl_module, self.stage_at(trainer.current_epoch))
        freeze_batchnorm_statistics(pl_module.model, self.stages[self.index].layers)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        pl_module.log("train/stage", float(self.index + 1), on_epoch=True)
        pl_module.log("train/trainable_params", float(count_trainable(pl_module.model)), on_epoch=True)
        # the next epoch's DataLoader is built before its on_train_epoch_start: resize now
        self._set_resize(trainer, self.stage_at(trainer.current_epoch + 1))

    # -- helpers ------------------------------------------------------------------------------

    def _enter(self, trainer: pl.Trainer, pl_module: pl.LightningModule, index: int) -> bool:
        """Make stage ``index`` the one in force (layers, the module's stage, optimizer, data size);
        False when it already was."""
        self._set_resize(trainer, index)
        if index == self.index and getattr(pl_module, "stage", None) is self.stages[index]:
            return False
        self.index = index
        set_trainable_layers(pl_module.model, self.stages[index].layers)
        pl_module.stage = self.stages[index]
        if trainer.optimizers:  # training is under way: replace them (at setup, Lightning builds them next)
            trainer.strategy.setup_optimizers(trainer)
            self._announce(trainer, pl_module)
        return True

    def _announce(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        stage, resize = self.stages[self.index], self.resizes[self.index]
        log.info(
            "epoch %d: stage %d/%d, layers %s, %d epochs from epoch %d, lr %g, %s trainable parameters, "
            "resize %s %d..%d",
            trainer.current_epoch, self.index + 1, len(self.stages), stage.layers, stage.epochs,
            self.starts[self.index], trainer.optimizers[0].param_groups[0]["initial_lr"],
            f"{count_trainable(pl_module.model):,}", resize.mode, resize.min_dim, resize.max_dim,
        )

    def _set_resize(self, trainer: pl.Trainer, index: int) -> None:
        if self.progressive:
            trainer.datamodule.cfg.resize = self.resizes[index]
