"""Data parallelism over threads for a training step on the CPU.

On a few cores one process with all of them leaves cores idle: RoIAlign's backward, NMS, the
sampling and the Python around them run on one thread (on 2 cores a second intra-op thread makes
a step only 1.15x faster). Splitting the batch into shares and running each share's forward and
backward in its own thread keeps every core busy (0.68x the step's time on 2 cores): torch
releases the GIL inside its kernels, and autograd accumulates the shares' gradients into the
same parameters safely (each share's backward adds to ``.grad`` once per parameter). The RoI
samplers of the shares draw from torch's one random generator in the order the threads reach it,
so repeats of a threaded run differ slightly.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

import torch
from torch import Tensor, nn


class BatchThreads:
    """Runs a function over ``threads`` shares of a batch at once, then their backward passes at once."""

    def __init__(self, threads: int):
        self.threads = threads
        # each worker thread sets its own OpenMP thread count; the calling thread keeps all cores for validation
        self._pool = ThreadPoolExecutor(
            threads, "booksegm-step", initializer=torch.set_num_threads,
            initargs=(max(1, torch.get_num_threads() // threads),),
        )

    def map(self, fn: Callable[[list, list], Any], images: list, targets: list) -> list[tuple[float, Any]]:
        """``fn(images, targets)`` on each share, with the share's fraction of the images (its weight in a mean)."""
        shares = min(self.threads, len(images))
        bounds = [round(i * len(images) / shares) for i in range(shares + 1)]
        jobs = [(end - start, self._pool.submit(fn, images[start:end], targets[start:end]))
                for start, end in zip(bounds, bounds[1:])]
        return [(count / len(images), job.result()) for count, job in jobs]

    def backward(self, losses: list[Tensor]) -> None:
        for job in [self._pool.submit(loss.backward) for loss in losses]:
            job.result()

    def close(self) -> None:
        self._pool.shutdown()


def trains_batchnorm(model: nn.Module) -> bool:
    """Whether a training step updates BatchNorm statistics: shares of a batch would each
    normalise by their own few images, and two threads would update the running statistics at once."""
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training for m in model.modules())
