"""An exponential moving average of the weights, for validation and the saved model.

Lightning's ``WeightAveraging`` keeps the average, swaps it in for validation and writes it as the
checkpoint's ``state_dict`` (the live weights go to ``current_model_state``), so evaluate, predict,
export and ``model.weights=<ckpt>`` all see the averaged model. The decay ramps up with the number of
updates, as YOLOv5/v8 do: a short run from scratch is not dominated by its random first weights.
"""

from __future__ import annotations

import math

import torch
from pytorch_lightning.callbacks import WeightAveraging

from booksegm.config import ConfigError


class EMAWeights(WeightAveraging):
    def __init__(self, decay: float = 0.995, ramp_steps: float = 100.0):
        if not 0.0 < decay < 1.0 or ramp_steps < 0:
            raise ConfigError(f"callbacks.ema: decay must lie in (0, 1) and ramp_steps >= 0, got {decay}, {ramp_steps}")
        self.decay, self.ramp_steps = decay, ramp_steps
        super().__init__(multi_avg_fn=self.average)

    def effective_decay(self, num_averaged: int) -> float:
        """decay * (1 - exp(-n / ramp_steps)): 0 at the first update (a copy), -> decay later."""
        if self.ramp_steps == 0:
            return self.decay
        return self.decay * (1.0 - math.exp(-num_averaged / self.ramp_steps))

    def on_train_end(self, trainer, pl_module) -> None:
        # Lightning would copy the average into the model here; ModelCheckpoint's save_last then writes
        # once more at the end of a run that never saved it (one without validation, or step_checkpoint
        # in a run shorter than its interval), which would store the average as the live weights too and
        # a resumed run would continue from the average. Every checkpoint's state_dict is the average anyway.
        pass

    @torch.no_grad()
    def average(self, averaged: list[torch.Tensor], current: list[torch.Tensor], num_averaged: torch.Tensor) -> None:
        # called once per device and dtype group; integer buffers (BatchNorm's counter) are copied
        if torch.is_floating_point(averaged[0]):
            torch._foreach_lerp_(averaged, current, 1.0 - self.effective_decay(int(num_averaged)))
        else:
            torch._foreach_copy_(averaged, current)
