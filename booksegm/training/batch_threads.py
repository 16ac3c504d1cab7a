"""Data parallelism over threads for a training step on the CPU.

On a few cores one process with all of them leaves cores idle: RoIAlign's backward, NMS, the
sampling and the Python around them run on one thread, so a second intra-op thread adds little.
Splitting the batch into shares and running each share's forward and backward in its own thread
keeps every core busy (docs/experiments.md, "batch threads"): torch releases the GIL inside its
kernels, and autograd accumulates the shares' gradients into the same parameters safely (each
share's backward adds to ``.grad`` once per parameter). The shares' random draws (the RPN's and
RoI heads' samplers) come from torch's one generator, so they take turns in share order: a seeded
run repeats exactly.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor, wait
from typing import Any, Callable

import torch
from torch import Tensor, nn


class BatchThreads:
    """Runs a function over ``threads`` shares of a batch at once, then their backward passes at once.

    ``random_draws`` names the callables that draw random numbers (``(owner, attribute)``): while
    the threads run, each call to them waits for its share's turn (share 0, 1, ..., 0, ...).
    """

    def __init__(self, threads: int, random_draws: tuple[tuple[object, str], ...] = ()):
        self.threads = threads
        self._turns = Turns()
        self._drawing = [(owner, name, getattr(owner, name)) for owner, name in random_draws]
        for owner, name, draw in self._drawing:
            setattr(owner, name, self._turns.in_turn(draw))
        # each worker thread sets its own OpenMP thread count; the calling thread keeps all cores for validation
        self._pool = ThreadPoolExecutor(
            threads, "booksegm-step", initializer=torch.set_num_threads,
            initargs=(max(1, torch.get_num_threads() // threads),),
        )

    def map(self, fn: Callable[[list, list], Any], images: list, targets: list) -> list[tuple[float, Any]]:
        """``fn(images, targets)`` on each share, with the share's fraction of the images (its weight in a mean)."""
        shares = min(self.threads, len(images))
        bounds = [round(i * len(images) / shares) for i in range(shares + 1)]
        self._turns.start(shares)
        # autocast is per thread: the shares run under the caller's (trainer.precision=bf16-mixed on the CPU)
        autocast = torch.autocast("cpu", dtype=torch.get_autocast_dtype("cpu"), enabled=torch.is_autocast_enabled("cpu"))
        jobs = [(end - start, self._pool.submit(self._run_share, share, fn, images[start:end], targets[start:end],
                                                autocast))
                for share, (start, end) in enumerate(zip(bounds, bounds[1:]))]
        wait([job for _, job in jobs])  # all shares end before any error is raised: none runs into the next batch
        return [(count / len(images), job.result()) for count, job in jobs]

    def _run_share(self, share: int, fn: Callable[[list, list], Any], images: list, targets: list,
                   autocast: torch.autocast) -> Any:
        self._turns.local.share = share
        try:
            with autocast:
                return fn(images, targets)
        finally:  # a share that ends (or fails) leaves the turns, so no other share waits for it
            self._turns.local.share = None
            self._turns.finish(share)

    def backward(self, losses: list[Tensor]) -> None:
        jobs = [self._pool.submit(loss.backward) for loss in losses]
        wait(jobs)
        for job in jobs:
            job.result()

    def close(self) -> None:
        self._pool.shutdown()
        for owner, name, draw in self._drawing:
            setattr(owner, name, draw)


class Turns:
    """Calls from the shares' threads, one share at a time in share order (0, 1, ..., 0, 1, ...)."""

    def __init__(self):
        self.local = threading.local()  # .share: the share the current thread runs, None outside one
        self._changed = threading.Condition()
        self._running: list[int] = []  # shares not yet ended, in order
        self._turn: int | None = None

    def start(self, shares: int) -> None:
        with self._changed:
            self._running, self._turn = list(range(shares)), 0

    def in_turn(self, fn: Callable) -> Callable:
        def call_in_turn(*args, **kwargs):
            share = getattr(self.local, "share", None)
            if share is None:  # one pass, or validation: nothing to order
                return fn(*args, **kwargs)
            with self._changed:
                self._changed.wait_for(lambda: self._turn == share)
            try:
                return fn(*args, **kwargs)
            finally:
                with self._changed:
                    self._turn = self._after(share)
                    self._changed.notify_all()
        return call_in_turn

    def finish(self, share: int) -> None:
        with self._changed:
            self._running.remove(share)
            if self._turn == share:
                self._turn = self._after(share)
            self._changed.notify_all()

    def _after(self, share: int) -> int | None:
        later = [s for s in self._running if s > share]
        return (later or self._running or [None])[0]


def trains_batchnorm(model: nn.Module) -> bool:
    """Whether a training step updates BatchNorm statistics: shares of a batch would each
    normalise by their own few images, and two threads would update the running statistics at once."""
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training for m in model.modules())
