"""What a training run shows as it starts: the model in one console line, its layer table in the
run's log file, and none of Lightning's adverts.

Lightning's own summary prints a table and a FLOPs count (0 for a module without an
``example_input_array``) on the console. Here the table goes to the ``booksegm.layers`` logger,
which conf/hydra/default.yaml sends to the log file only, and the console gets the model in a line.
"""

from __future__ import annotations

import logging
from typing import Any

from pytorch_lightning.callbacks import ModelSummary
from pytorch_lightning.utilities.model_summary import get_human_readable_count

log = logging.getLogger(__name__)
layers_log = logging.getLogger("booksegm.layers")  # the log file only (conf/hydra/default.yaml)


class ModelInALine(ModelSummary):
    """Lightning's ``ModelSummary``: the model in one console line, its layers in the log file."""

    def __init__(self, max_depth: int = 2):  # layer nesting in the log file's table
        super().__init__(max_depth=max_depth)

    @staticmethod
    def summarize(
        summary_data: list[tuple[str, list[str]]],
        total_parameters: int,
        trainable_parameters: int,
        model_size: float,
        total_training_modes: dict[str, int],
        total_flops: int,
        **summarize_kwargs: Any,
    ) -> None:
        columns = dict(summary_data)
        layers_log.info("model layers:\n%s", layer_table({k: v for k, v in columns.items() if k != "FLOPs"}))
        kind = next(iter(columns.get("Type", [])), "?")  # the outermost module's class
        log.info("model: %s, %s parameters (%s trainable), %.1f MB", kind, get_human_readable_count(total_parameters),
                 get_human_readable_count(trainable_parameters), model_size)


def layer_table(columns: dict[str, list[str]]) -> str:
    """Columns of strings as a plain text table, one layer a line."""
    widths = {name: max([len(name), *map(len, values)]) for name, values in columns.items()}
    rows = [list(columns), *zip(*columns.values())]
    return "\n".join(" | ".join(str(cell).ljust(widths[name]) for cell, name in zip(row, columns)) for row in rows)


class WithoutLightningTips(logging.Filter):
    """Drops Lightning's "💡 Tip" lines (adverts for its cloud services, on every run); conf/hydra/default.yaml
    sets it on the logger they come from."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("💡 Tip")
