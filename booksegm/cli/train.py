"""Training entry point: ``python -m booksegm.train [overrides]`` (Hydra).

Everything a run needs is built and checked first (config, data, model, weights), so a bad
value fails in one line before training; then Lightning trains and the run folder holds the
resolved config, TensorBoard logs, checkpoints and ``metrics.json`` (best and last validation
metrics, wall time: what ``python -m booksegm.sweep_report`` reads).
"""

from __future__ import annotations

import json
import logging
import math
import sys
import time
from pathlib import Path

import hydra
import pytorch_lightning as pl
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.strategies.launchers.subprocess_script import _SubprocessScriptLauncher
from pytorch_lightning.utilities.exceptions import SIGTERMException

from booksegm.config import ConfigError, as_plain, check_command_line, to_dataclass
from booksegm.data.datamodule import BookDataModule, DataConfig
from booksegm.errors import cli_errors
from booksegm.model.checkpoint_file import AtomicCheckpointIO
from booksegm.model.weights import load_initial_weights, read_state_dict, weights_file
from booksegm.training.interrupt import InterruptCheckpoint, TrainingInterrupted
from booksegm.training.module import BookSegmModule
from booksegm.training.profile import with_profile  # also registers ${auto_precision:}
from booksegm.training.resume import read_resumed
from booksegm.training.stages import StagedTraining

log = logging.getLogger(__name__)


def build(cfg: DictConfig) -> tuple[BookDataModule, BookSegmModule]:
    """The datamodule (set up, so bad data fails now) and the module with its initial weights."""
    datamodule = BookDataModule(to_dataclass(DataConfig, cfg.data, "data"))
    datamodule.prepare_data()
    datamodule.setup("fit")
    # plain sections: the module converts each once and keeps them as checkpoint hyperparameters
    module = BookSegmModule(
        model=as_plain(cfg.model), optim=as_plain(cfg.train), class_names=list(datamodule.class_names)
    )
    # as .hydra/config.yaml holds it: evaluate, predict, export and resume read it from the checkpoint;
    # data.root as the folder it named here, so that the checkpoint finds its data from any folder
    module.run_config = OmegaConf.to_container(cfg, resolve=False)
    module.run_config["data"]["root"] = str(datamodule.root.resolve())
    if not cfg.get("ckpt_path"):
        model_cfg = module.model_cfg
        load_initial_weights(module.model, model_cfg.weights, model_cfg.backbone, Path(cfg.paths.log_dir))
    return datamodule, module


def train(cfg: DictConfig) -> dict:
    """Train; returns the run summary also written to ``metrics.json`` in the run folder. Bad input,
    divergence and a stop by signal raise a UserError (``main`` reports it in one line)."""
    started = time.perf_counter()
    saved = None
    if cfg.get("ckpt_path"):  # a wrong path fails now, in one line, not after data and model are built
        cfg, saved = read_resumed(cfg, Path(cfg.ckpt_path).expanduser())
        note_resumed_run(Path(cfg.paths.output_dir))
    elif (weights := weights_file(str(cfg.model.weights), Path(cfg.paths.log_dir))) is not None:
        read_state_dict(weights)  # a bad model.weights file fails now too, before data and model
    check_run_length(cfg)
    pl.seed_everything(cfg.seed, workers=True)
    datamodule, module = build(cfg)
    if saved is not None:
        saved.check_fits(module)
    staging = build_staging(module, datamodule)

    # an experiment turns a default callback off by setting it to null (callbacks.ema: null)
    callbacks = [instantiate(c) for c in cfg.get("callbacks", {}).values() if c is not None]
    callbacks.append(InterruptCheckpoint(Path(cfg.paths.output_dir) / "checkpoints"))
    loggers = [instantiate(c) for c in cfg.get("logger", {}).values()]
    staged = {}
    if staging is not None:  # the stages set the epochs
        callbacks.append(staging)
        staged = {"max_epochs": staging.total_epochs}
        log.info("train.stages: %d stages, %d epochs in all", len(staging.stages), staging.total_epochs)
    # every checkpoint written whole or not at all, a failed write in one line (AtomicCheckpointIO)
    trainer: pl.Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers, plugins=[AtomicCheckpointIO()],
                                      **staged)
    check_not_a_ddp_sweep(trainer)
    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"), weights_only=True)
    except SIGTERMException:  # SIGTERM before InterruptCheckpoint takes the signals: Lightning stops there
        raise TrainingInterrupted("stopped by SIGTERM before training started; nothing saved", "SIGTERM") from None

    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    summary = summarize(module.val_history, cfg.optimized_metric, time.perf_counter() - started, trainer)
    if trainer.is_global_zero:  # under DDP every process ends here with the same summary: one writes it
        (Path(cfg.paths.output_dir) / "metrics.json").write_text(json.dumps(summary, indent=2))
        report(trainer, metrics, cfg)
    return summary


def check_run_length(cfg: DictConfig) -> None:
    """A run needs an end (train.stages set their own): the LR schedule runs to it, and its last epoch
    validates and writes the checkpoints. Lightning's -1 (endless) ended in an OverflowError of the
    schedule, and 0 exited without a checkpoint."""
    epochs, steps = cfg.trainer.get("max_epochs"), cfg.trainer.get("max_steps", -1)
    if cfg.train.get("stages") or epochs is None or epochs >= 1:
        return
    if epochs == -1 and steps is not None and steps >= 1:
        return
    if epochs == -1:
        raise ConfigError("trainer.max_epochs=-1 trains without end, but the learning-rate schedule needs one: "
                          "give trainer.max_epochs >= 1, or +trainer.max_steps=N with it")
    raise ConfigError(f"trainer.max_epochs must be >= 1, got {epochs}: the run would train nothing and save "
                      "no checkpoint")


def check_not_a_ddp_sweep(trainer: pl.Trainer) -> None:
    """Lightning starts a DDP run's other processes on this machine as copies of this command line,
    which under ``-m`` is the whole sweep again: each copy would run every job, joining whichever
    process group it meets. Processes that torchrun or srun start are not copies of this one."""
    multirun = HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN  # train() outside Hydra: a notebook
    if multirun and isinstance(trainer.strategy.launcher, _SubprocessScriptLauncher):
        raise ConfigError(f"DDP with {trainer.num_devices} processes a machine in a multirun (-m): run each job as its "
                          "own command, or start the processes with torchrun or srun (docs/scaling.md)")


def build_staging(module: BookSegmModule, datamodule: BookDataModule) -> StagedTraining | None:
    """The staged schedule (train.stages); None runs all layers for trainer.max_epochs."""
    stages = module.optim_cfg.stages
    return StagedTraining(stages, datamodule.cfg.resize) if stages else None


def note_resumed_run(run_dir: Path) -> None:
    """A resumed run writes into its own folder; this launch's folder (its log) links to it."""
    here = Path(HydraConfig.get().runtime.output_dir)
    link = here / "resumed_run"
    if run_dir.resolve() != here.resolve() and not link.is_symlink():  # DDP's other processes run in this folder too
        link.symlink_to(run_dir.resolve(), target_is_directory=True)
        log.info("resuming the run in %s: checkpoints, TensorBoard and metrics.json continue there", run_dir)


def summarize(history: list[dict], metric: str, wall_time_s: float, trainer: pl.Trainer) -> dict:
    """Best validation (by ``metric``) and last validation of the run, with its wall time."""
    # COCO gives NaN where a size range has no objects: null in JSON
    history = [{k: v if math.isfinite(v) else None for k, v in entry.items()} for entry in history]
    scored = [v for v in history if v.get(metric) is not None]
    ckpt = trainer.checkpoint_callback
    return {
        "metric": metric,
        "best": max(scored, key=lambda v: v[metric]) if scored else {},
        "last": history[-1] if history else {},
        "validations": history,
        "wall_time_s": round(wall_time_s, 1),
        "epochs": trainer.current_epoch,
        "best_checkpoint": ckpt.best_model_path if ckpt is not None else "",
    }


def report(trainer: pl.Trainer, metrics: dict[str, float], cfg: DictConfig) -> None:
    """The lines a user wants at the end: validation AP, where the model is, how to look at it."""
    ckpt = trainer.checkpoint_callback
    print(f"val mask AP: {metrics.get('val/mask_AP', float('nan')):.4f}  box AP: {metrics.get('val/box_AP', float('nan')):.4f}"
          f"  (mask AP50 {metrics.get('val/mask_AP50', float('nan')):.4f})")
    if ckpt is not None and ckpt.best_model_path:
        print(f"best checkpoint (val mask AP {float(ckpt.best_model_score):.4f}): {ckpt.best_model_path}")
    if ckpt is not None and ckpt.last_model_path:
        print(f"last checkpoint: {ckpt.last_model_path}")
    print(f"tensorboard --logdir {Path(cfg.paths.output_dir) / 'tensorboard'}")


@hydra.main(version_base="1.3", config_path="pkg://booksegm.conf", config_name="config")
def main(cfg: DictConfig) -> float | None:
    """Returns the run's best ``optimized_metric``: what Hydra sweepers (Optuna) optimise."""
    with cli_errors():  # bad input, divergence, Ctrl-C/SIGTERM: one line and the exit code
        return train(cfg)["best"].get(cfg.optimized_metric)


if __name__ == "__main__":
    sys.argv = with_profile(sys.argv)  # profile=gpu when CUDA is present and none is named
    with cli_errors():
        check_command_line("config", sys.argv)
    main()
