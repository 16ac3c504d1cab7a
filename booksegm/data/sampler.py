"""A training DataLoader that a run can resume mid-epoch, batch for batch.

The order of an epoch and each draw's augmentation seed come from (run seed, epoch) alone, not
from worker processes or the global RNG: the same epoch yields the same batches whatever
``data.num_workers`` is. Lightning saves the loader's ``state_dict`` in every checkpoint and gives
it back on resume, so a run killed after batch k of epoch e continues with batch k + 1 of epoch e,
and the global RNG (torchvision's RoI sampling draws from it) is put back as it was at the save.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler


class SeededShuffleSampler(Sampler[tuple[int, int]]):
    """Yields ``(index, augmentation seed)`` in an order fixed by ``(seed, epoch)``."""

    def __init__(self, size: int, seed: int):
        self.size, self.seed = size, seed
        self.epoch = 0
        self.start = 0  # draws of this epoch already trained (set on resume), skipped once

    def set_epoch(self, epoch: int) -> None:  # Lightning calls it before each epoch
        if epoch != self.epoch:
            self.epoch, self.start = epoch, 0

    def __len__(self) -> int:
        return self.size

    def __iter__(self) -> Iterator[tuple[int, int]]:
        rng = np.random.default_rng([self.seed, self.epoch])
        order, seeds = rng.permutation(self.size), rng.integers(0, 2**31 - 1, self.size)
        start, self.start = self.start, 0
        for index, seed in zip(order[start:].tolist(), seeds[start:].tolist()):
            yield index, seed


class ResumableLoader(DataLoader):
    """A DataLoader over a :class:`SeededShuffleSampler` with Lightning's ``state_dict`` interface.

    ``progress`` returns (batches of this epoch trained, whether the epoch is done): what the
    trainer has consumed, not what the loader has yielded, as Lightning prefetches a batch.
    """

    def __init__(self, *args, sampler: SeededShuffleSampler, progress: Callable[[], tuple[int, bool]], **kwargs):
        super().__init__(*args, sampler=sampler, **kwargs)
        self.progress = progress
        self._rng_to_restore: dict | None = None

    def state_dict(self) -> dict:
        batches, epoch_done = self.progress()
        return {"epoch": self.sampler.epoch, "batches": batches, "epoch_done": epoch_done, "rng": rng_state()}

    def load_state_dict(self, state: dict) -> None:
        if state["epoch_done"]:
            self.sampler.set_epoch(state["epoch"] + 1)
        else:
            self.sampler.epoch, self.sampler.start = state["epoch"], state["batches"] * self.batch_size
        self._rng_to_restore = state["rng"]

    def __iter__(self):
        iterator = super().__iter__()  # creating it draws worker seeds from the global RNG: restore after
        if self._rng_to_restore is not None:
            set_rng_state(self._rng_to_restore)
            self._rng_to_restore = None
        return iterator


def rng_state() -> dict:
    """The global RNGs as tensors and plain containers: checkpoints must load with weights_only=True."""
    name, keys, position, has_gauss, gauss = np.random.get_state()
    return {"torch": torch.get_rng_state(), "numpy": [name, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, gauss],
            "python": random.getstate()}


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    name, keys, position, has_gauss, gauss = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), position, has_gauss, gauss))
    random.setstate(state["python"])
