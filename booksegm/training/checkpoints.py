"""The run's checkpoints: the best validation's and ``last.ckpt``, which ends as the final model.

Lightning's ModelCheckpoint (2.6) rewrites ``last.ckpt`` after a validation only when that
validation saved a new best. A run whose final validation is not its best would keep an earlier
``last.ckpt``: up to ``step_checkpoint``'s interval short of the final weights, with an earlier
validation's calibrated score threshold and history. The bundled model, exported files and
``model.weights=last`` all read ``last.ckpt``, so it is written once more when training ends.
"""

from __future__ import annotations

from pytorch_lightning.callbacks import ModelCheckpoint


class BestAndFinalCheckpoint(ModelCheckpoint):
    def on_train_end(self, trainer, pl_module) -> None:
        super().on_train_end(trainer, pl_module)
        if self.save_last and not self._should_skip_saving_checkpoint(trainer):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))
