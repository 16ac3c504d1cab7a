"""Resuming a run: ``ckpt_path=<run>/checkpoints/last.ckpt`` alone brings the run back.

The run's config comes from the checkpoint (every booksegm checkpoint carries it) or, for an older
checkpoint, from its run folder; what the command line changes is applied on top, with a warning
for model changes (the saved weights may not fit). The run continues in its own folder, so
ModelCheckpoint keeps its best score, TensorBoard its curves and metrics.json every validation.
"""

from __future__ import annotations

import logging
from pathlib import Path

from hydra import compose
from omegaconf import DictConfig, OmegaConf

from booksegm.inference import read_run_config

log = logging.getLogger(__name__)


def resume_config(cfg: DictConfig, checkpoint: dict, ckpt_path: Path) -> DictConfig:
    """The config to resume with: the run's own, the command line's changes on top."""
    resumed = read_run_config(ckpt_path, checkpoint)
    if resumed is None:
        log.warning("%s carries no run config and has no run folder: resuming with the command line's config", ckpt_path)
        return cfg
    for key, value in command_line_changes(cfg).items():
        if key.split(".")[0] == "model" and OmegaConf.select(resumed, key) != value:
            log.warning("%s=%s changes the model of the run being resumed: its weights may not fit", key, value)
        OmegaConf.update(resumed, key, value, merge=False, force_add=True)
    resumed.ckpt_path = str(ckpt_path)
    run_dir = run_folder(ckpt_path)
    if run_dir is not None:
        resumed.paths.output_dir = str(run_dir)
    return resumed


def command_line_changes(cfg: DictConfig) -> dict:
    """Dotted keys whose value differs from the bare default config: overrides and experiments."""
    default = flatten(OmegaConf.to_container(compose(config_name="config"), resolve=False))
    current = flatten(OmegaConf.to_container(cfg, resolve=False))
    return {k: v for k, v in current.items() if k != "ckpt_path" and (k not in default or default[k] != v)}


def flatten(tree: dict, prefix: str = "") -> dict:
    """{"a": {"b": 1}} -> {"a.b": 1}; lists stay whole (an override replaces a list)."""
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def run_folder(ckpt_path: Path) -> Path | None:
    """``<run>`` for ``<run>/checkpoints/x.ckpt``; None for a checkpoint outside a run folder."""
    ckpt_path = ckpt_path.resolve()
    run = ckpt_path.parent.parent
    return run if ckpt_path.parent.name == "checkpoints" and (run / ".hydra").is_dir() else None
