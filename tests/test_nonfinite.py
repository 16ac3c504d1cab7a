"""A diverged run stops with a one-line error and never writes a non-finite model."""

from __future__ import annotations

from dataclasses import asdict

import pytest
import pytorch_lightning as pl
import torch
from support import run_train, tiny_config

from booksegm.data.datamodule import BookDataModule
from booksegm.training.module import BookSegmModule, NonFiniteTrainingError


class PoisonedGradients(BookSegmModule):
    """A finite loss whose gradient is NaN at the chosen steps (torch.where's NaN-gradient trap)."""

    poisoned_steps: set[int] = set()

    def training_step(self, batch, batch_idx):
        loss = super().training_step(batch, batch_idx)
        if self.global_step in self.poisoned_steps:
            weight = next(self.model.parameters())
            loss = loss + torch.where(torch.tensor(True), torch.zeros(()), torch.sqrt(-weight.abs().sum() - 1))
        return loss


def fit(datamodule: BookDataModule, poisoned: set[int], max_nonfinite_steps: int = 3, steps: int = 4) -> PoisonedGradients:
    pl.seed_everything(0)
    module = PoisonedGradients(model=asdict(tiny_config()), class_names=["book"],
                               optim={"warmup_steps": 0, "max_nonfinite_steps": max_nonfinite_steps})
    module.poisoned_steps = poisoned
    trainer = pl.Trainer(max_steps=steps, limit_val_batches=0, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, accelerator="cpu")
    trainer.fit(module, datamodule=datamodule)
    return module


class WeightsAt(pl.Callback):
    def __init__(self):
        self.before = {}

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        self.before[trainer.global_step] = [p.detach().clone() for p in module.parameters()]


def test_a_step_with_a_non_finite_gradient_is_skipped_and_counted_and_training_goes_on(synthetic_datamodule):
    module = fit(synthetic_datamodule, poisoned={1})
    assert module.nonfinite_steps == 1
    assert module.trainer.global_step == 4  # the skipped step still counts as a step
    assert all(torch.isfinite(p).all() for p in module.parameters())


def test_the_skipped_step_leaves_every_weight_as_it_was(synthetic_datamodule):
    recorder = WeightsAt()
    pl.seed_everything(0)
    module = PoisonedGradients(model=asdict(tiny_config()), class_names=["book"], optim={"warmup_steps": 0})
    module.poisoned_steps = {1}
    trainer = pl.Trainer(max_steps=3, limit_val_batches=0, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, accelerator="cpu", callbacks=[recorder])
    trainer.fit(module, datamodule=synthetic_datamodule)
    assert all(torch.equal(a, b) for a, b in zip(recorder.before[1], recorder.before[2]))
    assert not all(torch.equal(a, b) for a, b in zip(recorder.before[0], recorder.before[1]))


def test_consecutive_non_finite_steps_stop_the_run_naming_the_step_and_the_last_losses(synthetic_datamodule):
    with pytest.raises(NonFiniteTrainingError, match=r"training diverged: 3 steps in a row .*gradient.*step 3.*loss "):
        fit(synthetic_datamodule, poisoned={1, 2, 3}, max_nonfinite_steps=3, steps=8)


def test_a_checkpoint_with_non_finite_weights_is_refused():
    module = BookSegmModule(model=asdict(tiny_config()), optim={}, class_names=["book"])
    with torch.no_grad():
        next(module.parameters())[0] = float("nan")
    with pytest.raises(NonFiniteTrainingError, match="refusing to write a checkpoint"):
        module.on_save_checkpoint({"state_dict": module.state_dict()})


def test_a_run_whose_loss_overflows_exits_non_zero_in_one_line_without_a_checkpoint(tmp_path):
    result = run_train(tmp_path, "train.loss_weights.mrcnn_mask_loss=1e39", "train.max_nonfinite_steps=2")
    assert result.returncode != 0
    assert "booksegm: error: training diverged: 2 steps in a row with a non-finite loss" in result.stderr
    assert "Traceback" not in result.stderr
    assert not list((tmp_path / "outputs").rglob("*.ckpt"))
    assert "best checkpoint" not in result.stdout
