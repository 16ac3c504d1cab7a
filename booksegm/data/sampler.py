"""A training DataLoader that a run can resume mid-epoch, batch for batch.

The order of an epoch and each draw's augmentation seed come from (run seed, epoch) alone, not
from worker processes or the global RNG: the same epoch yields the same batches whatever
``data.num_workers`` is. Lightning saves the loader's ``state_dict`` in every checkpoint and gives
it back on resume, so a run killed after batch k of epoch e continues with batch k + 1 of epoch e,
and the global RNG (torchvision's RoI sampling draws from it) is put back as it was at the save.

Under DDP each process draws its own share of the epoch's order (every ``num_replicas``-th draw from
its ``rank``), so every image is trained once an epoch across the processes. The order is padded, as
torch's DistributedSampler pads it, with its first few draws to a multiple of the processes: every
process then runs the same number of steps, which DDP's gradient all-reduce needs.
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Callable, Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, DistributedSampler

from booksegm.distributed import all_processes

log = logging.getLogger(__name__)


class SeededShuffleSampler(DistributedSampler):
    """Yields ``(index, augmentation seed)`` in an order fixed by ``(seed, epoch)``: this process's share.

    A DistributedSampler (so Lightning leaves it in place under DDP rather than wrapping it in one of
    its own, which would reshuffle the order) that does not run torch's ``__init__``: that one wants a
    dataset and a started process group, where this needs only their sizes.
    """

    def __init__(self, size: int, seed: int, num_replicas: int = 1, rank: int = 0):
        self.size, self.seed = size, seed
        self.num_replicas, self.rank = num_replicas, rank
        self.epoch = 0
        self.start = 0  # draws of this epoch's share already trained (set on resume), skipped once

    def set_epoch(self, epoch: int) -> None:  # Lightning calls it before each epoch
        if epoch != self.epoch:
            self.epoch, self.start = epoch, 0

    def __len__(self) -> int:
        return math.ceil(self.size / self.num_replicas)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        rng = np.random.default_rng([self.seed, self.epoch])
        order, seeds = rng.permutation(self.size), rng.integers(0, 2**31 - 1, self.size)
        padded = len(self) * self.num_replicas  # np.resize repeats the draws from the first
        order, seeds = np.resize(order, padded), np.resize(seeds, padded)
        share = slice(self.rank, None, self.num_replicas)
        start, self.start = self.start, 0
        for index, seed in zip(order[share][start:].tolist(), seeds[share][start:].tolist()):
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
        """Called on every process when a checkpoint is written (only process 0 writes it): each
        process's random state goes in, as their draws differ with the images they trained."""
        batches, epoch_done = self.progress()
        return {"epoch": self.sampler.epoch, "batches": batches, "epoch_done": epoch_done,
                "rng": all_processes(rng_state())}

    def load_state_dict(self, state: dict) -> None:
        if state["epoch_done"]:
            self.sampler.set_epoch(state["epoch"] + 1)
        else:
            self.sampler.epoch, self.sampler.start = state["epoch"], state["batches"] * self.batch_size
        saved = state["rng"] if isinstance(state["rng"], list) else [state["rng"]]  # one dict before DDP
        if len(saved) != self.sampler.num_replicas:
            log.warning("the checkpoint was written by %d training processes, this run has %d: each continues after "
                        "the same number of batches of its share, not from the same images", len(saved),
                        self.sampler.num_replicas)
        self._rng_to_restore = saved[min(self.sampler.rank, len(saved) - 1)]

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
