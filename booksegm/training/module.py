"""LightningModule around torchvision Mask R-CNN: weighted matterport losses, COCO mAP at validation."""

from __future__ import annotations

import functools
import logging
import math
import warnings
from dataclasses import dataclass, field

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import TensorBoardLogger

from booksegm.config import ConfigError, to_dataclass
from booksegm.distributed import all_processes
from booksegm.errors import UserError
from booksegm.evaluation.coco_eval import CocoEvaluator
from booksegm.model.build import RESNET_STAGES, ModelConfig, build_maskrcnn, is_resnet, without_retired_keys
from booksegm.model.checkpoint_file import RUN_CONFIG_KEY, SCORE_THRESHOLD_KEY, display_threshold
from booksegm.model.losses import LOSS_NAMES, validate_loss_weights, weighted_loss
from booksegm.training.batch_threads import BatchThreads, trains_batchnorm
from booksegm.training.stages import StageConfig, validate_stages
from booksegm.viz.overlays import draw_prediction, make_grid

log = logging.getLogger(__name__)

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("cosine", "step", "constant")
VAL_HISTORY_KEY = "val_history"  # checkpoint entry: every validation so far, so a resumed run's metrics.json is whole


class NonFiniteTrainingError(UserError, RuntimeError):
    """Training diverged: too many steps in a row with a non-finite loss or gradient, or non-finite weights."""


@dataclass
class OptimConfig:
    optimizer: str = "adamw"  # adamw | adam | sgd (matterport's, with momentum)
    lr: float = 2e-3  # LEARNING_RATE
    momentum: float = 0.9  # LEARNING_MOMENTUM (sgd)
    weight_decay: float = 0.05  # WEIGHT_DECAY
    decay_norm_and_bias: bool = False  # apply weight decay to norm weights and biases too
    warmup_steps: int = 50  # linear LR warmup from warmup_factor * lr
    warmup_factor: float = 0.001  # LR multiplier at step 0
    schedule: str = "cosine"  # after warmup: cosine (to 0) | step | constant
    step_milestones: list[float] = field(default_factory=lambda: [0.7, 0.9])  # step: fractions of all steps
    step_gamma: float = 0.1  # step: LR multiplier at each milestone
    # LOSS_WEIGHTS by matterport name; a name left out of an override weighs 1.0
    loss_weights: dict[str, float] = field(default_factory=lambda: dict.fromkeys(LOSS_NAMES.values(), 1.0))
    max_nonfinite_steps: int = 5  # consecutive steps with a NaN/inf loss or gradient (each skipped) before the run stops
    batch_threads: int = 2  # CPU: each step's batch in this many shares, forward and backward in parallel threads
    # matterport's staged train(layers=...) calls, run back to back; null or [] = one stage, all layers
    stages: list[StageConfig] | None = field(default_factory=list)

    def validate(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(f"train.optimizer={self.optimizer!r} is unknown; choose one of {list(OPTIMIZERS)}")
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"train.schedule={self.schedule!r} is unknown; choose one of {list(SCHEDULES)}")
        if self.lr <= 0 or self.weight_decay < 0 or self.warmup_steps < 0:
            raise ConfigError("train.lr must be > 0, train.weight_decay and train.warmup_steps >= 0")
        if self.batch_threads < 1:
            raise ConfigError(f"train.batch_threads must be >= 1 (1 = one pass), got {self.batch_threads}")
        if self.max_nonfinite_steps < 1:
            raise ConfigError(f"train.max_nonfinite_steps must be >= 1, got {self.max_nonfinite_steps}")
        self.loss_weights = validate_loss_weights(self.loss_weights)
        validate_stages(self.stages or [])


class BookSegmModule(pl.LightningModule):
    """Mask R-CNN for books. Hyperparameters are plain dicts so checkpoints load anywhere."""

    def __init__(self, model: dict, optim: dict, class_names: list[str], num_val_images_logged: int = 4):
        super().__init__()
        self.save_hyperparameters()
        # the one conversion of each section (train.build passes the plain YAML sections)
        self.model_cfg = to_dataclass(ModelConfig, without_retired_keys(dict(model), "model"), "model")
        self.optim_cfg = to_dataclass(OptimConfig, optim, "train")
        self.optim_cfg.validate()
        resnet_stages = [s.layers for s in self.optim_cfg.stages or [] if s.layers in RESNET_STAGES]
        if resnet_stages and not is_resnet(self.model_cfg.backbone):
            raise ConfigError(f"train.stages layers {resnet_stages} name ResNet stages; "
                              f"model.backbone={self.model_cfg.backbone} trains with layers heads or all")
        self.class_names = list(class_names)
        self.model = build_maskrcnn(self.model_cfg, num_classes=1 + len(self.class_names))
        self.evaluator = CocoEvaluator(self.class_names)
        self._val_pictures: list[np.ndarray] = []
        self.val_history: list[dict[str, float]] = []  # one entry per validation: epoch, step and metrics
        self.stage: StageConfig | None = None  # the training stage in force, set by StagedTraining
        # the score with the best validation F1 (mask IoU 0.5), saved in checkpoints: predict's default threshold
        self.score_threshold: float | None = None
        self.run_config: dict | None = None  # the run's resolved config, written into every checkpoint by train
        self.nonfinite_steps = 0  # steps skipped for a non-finite loss or gradient, in all
        self._nonfinite_in_a_row = 0
        self._last_finite_losses: dict[str, torch.Tensor] = {}
        self._batch_threads: BatchThreads | None = None  # set for a CPU fit with train.batch_threads > 1
        self._share_losses: list[torch.Tensor] = []  # this step's per-share losses, for backward

    def setup(self, stage: str) -> None:
        # Lightning 2.6's pytree helper builds torch's deprecated LeafSpec as it trains: a FutureWarning
        # about Lightning's code, on every run's first screen, that no user can act on
        warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated",
                                category=FutureWarning)

    def on_train_start(self) -> None:
        threads = self.optim_cfg.batch_threads
        if threads == 1:
            return
        if self.trainer.world_size > 1:
            if self.trainer.is_global_zero:
                log.info("train.batch_threads=%d off under DDP (%d processes): each share's backward pass would mark "
                         "DDP's gradients ready again; each batch is one pass", threads, self.trainer.world_size)
        elif self.device.type != "cpu":
            log.info("train.batch_threads=%d applies on the CPU only; on %s each batch is one pass", threads, self.device)
        elif trains_batchnorm(self.model):
            log.info("train.batch_threads=%d ignored: this model trains BatchNorm, whose statistics would come "
                     "from each thread's share of the batch; each batch is one pass", threads)
        else:
            samplers = ((self.model.rpn, "fg_bg_sampler"), (self.model.roi_heads, "fg_bg_sampler"))
            self._batch_threads = BatchThreads(threads, random_draws=samplers)

    def on_train_epoch_start(self) -> None:
        # Lightning validates every check_val_every_n_epoch epochs only: the last epoch validates too,
        # so the best checkpoint and the calibrated threshold see the final weights
        trainer = self.trainer
        if trainer.check_val_every_n_epoch is not None and trainer.current_epoch == (trainer.max_epochs or 0) - 1:
            trainer.check_val_every_n_epoch = 1

    def on_train_end(self) -> None:
        if self._batch_threads is not None:
            self._batch_threads.close()
            self._batch_threads = None

    def forward(self, images: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        return self.model(list(images))

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        images, targets = batch
        if self._batch_threads is None:
            loss, named = self.weighted_losses(images, targets)
        else:
            shares = self._batch_threads.map(self.weighted_losses, list(images), list(targets))
            self._share_losses = [weight * share_loss for weight, (share_loss, _) in shares]
            loss = sum(self._share_losses)
            named = {name: sum(weight * share_named[name] for weight, (_, share_named) in shares)
                     for name in LOSS_NAMES.values()}
        if not torch.isfinite(loss):
            self._share_losses = []
            if self.trainer.world_size > 1:
                # every DDP process must run backward, whose gradient all-reduce waits for all of them: the
                # averaged gradient is then non-finite everywhere and on_before_optimizer_step skips the step on each
                log.warning("step %d: non-finite loss on process %d: every process skips the step",
                            self.global_step, self.global_rank)
                return loss
            self.skip_nonfinite_step("loss", named)
            return None  # Lightning skips backward and the optimizer step
        # detached tensors, read only when a run diverges: a float() per loss each step would sync a GPU six times
        self._last_finite_losses = {name: value.detach() for name, value in {"loss": loss, **named}.items()}
        # tags: train/<name> every step and train_epoch/<name> per epoch (Lightning would
        # otherwise suffix one tag with _step/_epoch)
        for name, value in {"loss": loss, **named}.items():
            self.log(f"train/{name}", value, on_step=True, on_epoch=False, prog_bar=name == "loss", batch_size=len(images))
            self.log(f"train_epoch/{name}", value, on_step=False, on_epoch=True, batch_size=len(images),
                     sync_dist=True)
        self.log("train/lr", self.optimizers().param_groups[0]["lr"], on_step=True, batch_size=len(images))
        return loss

    def weighted_losses(self, images, targets) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        return weighted_loss(self.model(list(images), list(targets)), self.optim_cfg.loss_weights)

    def backward(self, loss: torch.Tensor, *args, **kwargs) -> None:
        """With threads, the shares' losses of this step go backward (their sum is ``loss``); a
        subclass that changes the loss training_step returns must train with train.batch_threads=1."""
        if self._share_losses:  # each share's graph in its own thread (fp32 on the CPU: nothing to scale)
            shares, self._share_losses = self._share_losses, []
            self._batch_threads.backward(shares)
        else:
            super().backward(loss, *args, **kwargs)

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        # under AMP the grad scaler already skips steps with inf/NaN gradients (they are how it finds its scale)
        if self.trainer.precision in ("16-mixed", "16"):
            self._nonfinite_in_a_row = 0
            return
        grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        if not grads:  # training_step skipped a non-finite loss: nothing to step
            return
        if torch.isfinite(torch.stack(torch._foreach_norm(grads))).all():
            self._nonfinite_in_a_row = 0
        else:
            optimizer.zero_grad(set_to_none=True)  # parameters without a gradient are left as they are
            self.skip_nonfinite_step("gradient", {})

    def skip_nonfinite_step(self, what: str, named: dict[str, torch.Tensor]) -> None:
        """Count a step whose loss or gradient is NaN/inf (it changes no weight); stop after
        train.max_nonfinite_steps in a row, naming the step and the last finite losses."""
        self.nonfinite_steps += 1
        self._nonfinite_in_a_row += 1
        self.log("train/nonfinite_steps", float(self.nonfinite_steps), on_step=True, batch_size=1)
        bad = ", ".join(name for name, value in named.items() if not torch.isfinite(value))
        log.warning("step %d: non-finite %s%s: step skipped (%d in a row)", self.global_step, what,
                    f" ({bad})" if bad else "", self._nonfinite_in_a_row)
        if self._nonfinite_in_a_row >= self.optim_cfg.max_nonfinite_steps:
            last = ", ".join(f"{k} {float(v):.4g}" for k, v in self._last_finite_losses.items()) or "none (the first step)"
            raise NonFiniteTrainingError(
                f"training diverged: {self._nonfinite_in_a_row} steps in a row with a non-finite {what} "
                f"(the last at step {self.global_step}); last finite losses: {last}. Lower train.lr "
                f"(now {self.optim_cfg.lr:g}) or raise train.warmup_steps; no checkpoint was written from these steps"
            )

    def on_validation_epoch_start(self) -> None:
        self.evaluator.reset()
        self._val_pictures = []

    def validation_step(self, batch, batch_idx: int) -> None:
        images, targets = batch
        predictions = self.model(list(images))
        self.evaluator.update(predictions, list(targets))
        wanted = self.hparams.num_val_images_logged - len(self._val_pictures) if self.trainer.is_global_zero else 0
        for image, pred in list(zip(images, predictions))[: max(wanted, 0)]:
            self._val_pictures.append(
                draw_prediction(image, pred, self.class_names, display_threshold(None, self.score_threshold)))

    def on_validation_epoch_end(self) -> None:
        if self.trainer.world_size > 1:  # the AP of one process's share is not the model's: score all images as one set
            self.evaluator.load_states(all_processes(self.evaluator.state()))
        metrics = {f"val/{k}": v for k, v in self.evaluator.compute().items()}
        # each process computed the same values; max over them keeps them exact where a mean could round
        self.log_dict(metrics, sync_dist=True, reduce_fx="max")
        if math.isfinite(metrics["val/mask_F1_score"]):
            self.score_threshold = metrics["val/mask_F1_score"]
        if not self.trainer.sanity_checking:
            self.val_history.append(
                {"epoch": self.current_epoch, "step": self.global_step, **{k: float(v) for k, v in metrics.items()}}
            )
        if self._val_pictures and isinstance(self.logger, TensorBoardLogger):
            grid = make_grid(self._val_pictures, ncols=2)
            self.logger.experiment.add_image("val/predictions", grid, self.global_step, dataformats="HWC")

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        for key in ("state_dict", "current_model_state"):  # the EMA and the live weights
            bad = [name for name, t in checkpoint.get(key, {}).items() if t.is_floating_point() and not t.isfinite().all()]
            if bad:
                raise NonFiniteTrainingError(
                    f"refusing to write a checkpoint at step {self.global_step}: {len(bad)} weight tensors are "
                    f"not finite (first: {bad[0]}); the run diverged"
                )
        checkpoint[SCORE_THRESHOLD_KEY] = self.score_threshold
        checkpoint[RUN_CONFIG_KEY] = self.run_config
        checkpoint[VAL_HISTORY_KEY] = self.val_history

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.score_threshold = checkpoint.get(SCORE_THRESHOLD_KEY)
        self.val_history = list(checkpoint.get(VAL_HISTORY_KEY) or [])

    def configure_optimizers(self):
        # One optimizer and schedule per training stage, as matterport compiles a new optimizer for
        # each train(layers=...) call; without a stage, one for the whole run.
        cfg, stage = self.optim_cfg, self.stage
        lr = cfg.lr if stage is None or stage.lr is None else stage.lr

        # Counted at the first scheduler step, not here: asking Lightning now builds the training
        # DataLoader before a resumed run's loop state is restored, and it would start the epoch over.
        # The factor at step 0 does not depend on the count.
        @functools.cache
        def total_steps() -> int:
            steps = max(1, int(self.trainer.estimated_stepping_batches))
            return steps if stage is None else max(1, round(steps * stage.epochs / self.trainer.max_epochs))

        optimizer = build_optimizer(self.model, cfg, lr)
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: lr_factor(step, total_steps() if step else 1, cfg)
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


def build_optimizer(model: torch.nn.Module, cfg: OptimConfig, lr: float) -> torch.optim.Optimizer:
    """Only trainable parameters; norm weights and biases without weight decay unless asked."""
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.decay_norm_and_bias:
        groups = [{"params": params, "weight_decay": cfg.weight_decay}]
    else:
        groups = [
            {"params": [p for p in params if p.ndim > 1], "weight_decay": cfg.weight_decay},
            {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0},
        ]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=cfg.momentum)
    optimizer_class = torch.optim.Adam if cfg.optimizer == "adam" else torch.optim.AdamW
    return optimizer_class(groups, lr=lr)


def lr_factor(step: int, total_steps: int, cfg: OptimConfig) -> float:
    """LR multiplier: linear warmup, then the schedule over the remaining steps (of the stage)."""
    if step < cfg.warmup_steps:
        alpha = step / cfg.warmup_steps
        return cfg.warmup_factor * (1 - alpha) + alpha
    if cfg.schedule == "constant":
        return 1.0
    progress = min(1.0, (step - cfg.warmup_steps) / max(1, total_steps - cfg.warmup_steps))
    if cfg.schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    return cfg.step_gamma ** sum(progress >= m for m in cfg.step_milestones)
