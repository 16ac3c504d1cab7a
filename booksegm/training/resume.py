"""Resuming a run: ``ckpt_path=<run>/checkpoints/last.ckpt`` alone brings the run back.

The run's config comes from the checkpoint (every booksegm checkpoint carries it) or, for an older
checkpoint, from its run folder; what the command line changes is applied on top, with a warning
for model changes (the saved weights may not fit). The run continues in its own folder, so
ModelCheckpoint keeps its best score, TensorBoard its curves and metrics.json every validation.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from hydra import compose
from omegaconf import DictConfig, OmegaConf

from booksegm.config import ConfigError
from booksegm.inference import read_run_config
from booksegm.model.checkpoint_file import read_torch_file
from booksegm.training.module import BookSegmModule

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SavedModel:
    """A checkpoint's model as resuming needs it: its config and each weight's shape (not the tensors)."""

    path: Path
    config: dict  # the checkpoint's model hyperparameters
    shapes: dict[str, tuple[int, ...]]

    def check_fits(self, module: BookSegmModule) -> None:
        """A model built with other model.* values than the run's fails here, in one line, not in
        Lightning's load_state_dict with a page of missing and mismatched keys."""
        shapes = {name: tuple(tensor.shape) for name, tensor in module.state_dict().items()}
        differ = sorted(name for name in shapes.keys() | self.shapes.keys()
                        if shapes.get(name) != self.shapes.get(name))
        if not differ:
            return
        changed = ", ".join(f"model.{key}={value} (the run's: {self.config[key]})"
                            for key, value in module.hparams["model"].items()
                            if key in self.config and self.config[key] != value)
        raise ConfigError(f"ckpt_path={self.path}: its weights do not fit the model built here"
                          f"{': ' + changed if changed else ''} ({len(differ)} weight tensors differ, the first "
                          f"{differ[0]}); resume without model.* changes, or start a new run")


def read_resumed(cfg: DictConfig, ckpt_path: Path) -> tuple[DictConfig, SavedModel]:
    """The config to resume with (``resume_config``) and the checkpoint's model, from the file."""
    checkpoint = read_torch_file(ckpt_path)
    shapes = {name: tuple(tensor.shape) for name, tensor in checkpoint.get("state_dict", {}).items()}
    saved = SavedModel(ckpt_path, dict((checkpoint.get("hyper_parameters") or {}).get("model") or {}), shapes)
    return resume_config(cfg, checkpoint, ckpt_path), saved


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
