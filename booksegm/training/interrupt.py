"""Ctrl-C and SIGTERM end a run at the next batch boundary with ``last.ckpt`` written.

A Ctrl-C is a KeyboardInterrupt wherever it lands and saves nothing, and Lightning's SIGTERM flag
stops a run at whichever of its checks comes first: after the batch's checkpoint hooks or at the
epoch's end, where nothing is saved. From the start of training both signals raise a flag of this
callback instead (a second Ctrl-C stops at once), and the end of the running batch writes
``last.ckpt`` at the point the step checkpoints are written, so the run resumes mid-epoch as if
never stopped. A SIGTERM during validation stops at the next validation batch, as Lightning's does:
a scheduler's grace period may not last to its end.

Under DDP a signal may reach one process only (``kill PID``), or reach each in a different step: all
stop after the same batch, whichever got it, since a process alone in the checkpoint's barrier or in a
gradient all-reduce would wait for the others forever.
"""

from __future__ import annotations

import logging
import signal
import threading
from pathlib import Path

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Checkpoint

from booksegm.distributed import all_processes
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
        self._previous_handlers: dict[int, object] = {}

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if threading.current_thread() is threading.main_thread():  # signal handlers live in the main thread
            # Lightning's own SIGTERM handler comes back at its teardown
            self._previous_handlers = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}

    def _on_signal(self, signum, frame) -> None:
        if signum == signal.SIGINT and self.signal_name is not None:
            raise KeyboardInterrupt  # the second Ctrl-C: stop now, without a checkpoint
        self.signal_name = signal.Signals(signum).name
        log.warning("%s: stopping after this batch with last.ckpt written%s", self.signal_name,
                    " (press again to stop at once)" if signum == signal.SIGINT else "")

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args) -> None:
        if trainer.world_size > 1:  # DDP: every process stops after this batch if any of them got a signal
            if not trainer.strategy.reduce_boolean_decision(self.signal_name is not None, all=False):
                return
            self.signal_name = next(name for name in all_processes(self.signal_name) if name is not None)
        elif self.signal_name is None:
            return
        trainer.save_checkpoint(self.path)
        raise TrainingInterrupted(
            f"stopped by {self.signal_name} after step {trainer.global_step} (epoch {trainer.current_epoch}); "
            f"saved {self.path}: resume with ckpt_path={self.path}", self.signal_name,
        )

    def on_validation_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args) -> None:
        # only fit's own validations (the handler comes after the sanity check) and one process: DDP's stop
        # at the next training batch, as processes that agreed per validation batch would wait forever for
        # one whose share came short (an image that stopped loading)
        if self.signal_name == "SIGTERM" and trainer.world_size == 1:
            raise TrainingInterrupted(
                f"stopped by SIGTERM during validation after step {trainer.global_step}: nothing saved after "
                "the last checkpoint; resume from it", "SIGTERM")

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        for signum, handler in self._previous_handlers.items():
            signal.signal(signum, handler)
        self._previous_handlers = {}
