"""Ctrl-C and SIGTERM end a run at the next batch boundary with ``last.ckpt`` written.

Lightning turns SIGTERM into a flag it checks between batches, but a Ctrl-C is a
KeyboardInterrupt wherever it lands and saves nothing. Here the first Ctrl-C raises the same flag
as SIGTERM (a second one stops at once), and the end of the running batch writes ``last.ckpt`` at
the point the step checkpoints are written, so the run resumes mid-epoch as if never stopped.
"""

from __future__ import annotations

import logging
import signal
import threading
from pathlib import Path

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Checkpoint

from booksegm.errors import UserError

log = logging.getLogger(__name__)


class TrainingInterrupted(UserError):
    """The run was stopped by a signal; the message says what was saved and how to resume."""

    def __init__(self, message: str, signal_name: str):
        super().__init__(message)
        self.exit_code = 128 + signal.Signals[signal_name].value  # the shell's code for death by that signal


class InterruptCheckpoint(Checkpoint):  # a Checkpoint, so Lightning runs it after the EMA update of the batch
    def __init__(self, dirpath: str):
        self.path = Path(dirpath) / "last.ckpt"
        self.signal_name: str | None = None
        self._previous_handler = None

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if threading.current_thread() is threading.main_thread():  # signal handlers live in the main thread
            self._previous_handler = signal.signal(signal.SIGINT, self._on_sigint)

    def _on_sigint(self, signum, frame) -> None:
        if self.signal_name is not None:
            raise KeyboardInterrupt  # the second Ctrl-C: stop now, without a checkpoint
        self.signal_name = "SIGINT"
        log.warning("Ctrl-C: stopping after this batch with last.ckpt written (press again to stop at once)")

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args) -> None:
        if trainer.received_sigterm:
            self.signal_name = "SIGTERM"
        if self.signal_name is None:
            return
        trainer.save_checkpoint(self.path)
        raise TrainingInterrupted(
            f"stopped by {self.signal_name} after step {trainer.global_step} (epoch {trainer.current_epoch}); "
            f"saved {self.path}: resume with ckpt_path={self.path}", self.signal_name,
        )

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        if not isinstance(exception, TrainingInterrupted) and trainer.received_sigterm:
            log.warning("stopped by SIGTERM during validation: nothing saved after the last checkpoint")

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if self._previous_handler is not None:
            signal.signal(signal.SIGINT, self._previous_handler)
            self._previous_handler = None
