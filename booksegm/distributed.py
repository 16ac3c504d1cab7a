"""Values of every DDP process, gathered: each process's share of the validation detections, each
process's random state for a checkpoint. Outside DDP (one process, no process group) a gather is the
process's own value alone."""

from __future__ import annotations

from typing import TypeVar

import torch.distributed as dist

T = TypeVar("T")


def all_processes(value: T) -> list[T]:
    """``value`` of every process, in rank order; every process must call it at the same point."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return [value]
    gathered: list = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, value)  # pickled: any plain value, tensors included
    return gathered
