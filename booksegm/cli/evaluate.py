"""Evaluation entry point: ``python -m booksegm.evaluate ckpt_path=PATH [split=test] [data overrides]``.

Runs the model over the validation (or test) images as validation sized them and writes, in
``outputs/evaluate/runs/<time>/``: ``metrics.json`` (COCO box and mask AP, AP50, AP75, AP
small/medium/large, AR@1/10/100, and matterport's VOC mask AP50), ``pr_curves.png`` (IoU 0.5
and 0.75) and ``per_image.csv`` (worst photos first). The table is printed too.
"""

from __future__ import annotations

import json
import math
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from booksegm.config import ConfigError, as_plain, check_command_line, to_dataclass
from booksegm.data.datamodule import BookDataModule, DataConfig
from booksegm.errors import cli_errors
from booksegm.evaluation.coco_eval import STAT_NAMES
from booksegm.evaluation.report import EvaluationReport
from booksegm.inference import (
    DEFAULT_MAX_SIDE,
    LoadedModel,
    load_model,
    predict_inputs,
    read_settings,
    select_device,
    with_mask_threshold,
)
from booksegm.model.build import check_mask_threshold
from booksegm.viz.curves import plot_pr_curves

SPLITS = ("val", "test")


@dataclass
class EvaluateConfig:
    ckpt_path: str | None = None  # null: the bundled books model
    split: str = "val"  # val | test
    test_annotations: str | None = None  # split=test: annotations under data.root
    score_threshold: float | None = None  # DETECTION_MIN_CONFIDENCE of the per-image figures; null: the checkpoint's calibrated one, else 0.7
    mask_threshold: float | None = None  # a mask pixel is the book's above this probability; null: the model's own
    device: str = "auto"
    max_side: int = DEFAULT_MAX_SIDE  # px: the longest model input; a longer image runs scaled down

    def validate(self) -> None:
        if self.split not in SPLITS:
            raise ConfigError(f"split={self.split!r} is unknown; choose one of {list(SPLITS)}")
        if self.split == "test" and not self.test_annotations:
            raise ConfigError("split=test needs test_annotations=FILE (under data.root)")
        if self.score_threshold is not None and not 0.0 <= self.score_threshold <= 1.0:
            raise ConfigError(f"score_threshold must lie in [0, 1], got {self.score_threshold}")
        check_mask_threshold(self.mask_threshold)
        if self.max_side < 1:
            raise ConfigError(f"max_side must be >= 1, got {self.max_side}")


def data_config(cfg: DictConfig, loaded: LoadedModel, overrides: list[str]) -> DataConfig:
    """The data to evaluate on.

    A checkpoint in its run folder: the run's data config, resolved against the run's own paths,
    with this command's ``data.*`` overrides applied on top. Otherwise, or when a data group is
    chosen (``data=via``): the composed ``data`` section, resized as the model was validated
    unless ``data.val_resize`` is set.
    """
    parsed = OverridesParser.create().parse_overrides(overrides)
    if loaded.run_config is not None and not any(o.key_or_group == "data" for o in parsed):
        data = OmegaConf.create(as_plain(loaded.run_config.data))
        for override in parsed:
            if override.key_or_group.startswith("data."):
                OmegaConf.update(data, override.key_or_group.removeprefix("data."), override.value(), merge=True)
    else:
        data = OmegaConf.create(as_plain(cfg.data))
        if data.get("val_resize") is None and loaded.resize is not None:
            data.val_resize = asdict(loaded.resize)
    if cfg.split == "test":
        data.val_annotations = cfg.test_annotations
    return to_dataclass(DataConfig, data, "data")


@torch.no_grad()
def run_evaluation(loaded: LoadedModel, datamodule: BookDataModule, score_threshold: float,
                   max_side: int = DEFAULT_MAX_SIDE) -> EvaluationReport:
    """The model over every validation image of ``datamodule`` (set up), with a progress bar."""
    names = [record.file_name for record in datamodule.val_records]
    report = EvaluationReport(loaded.class_names, score_threshold)
    for images, targets in tqdm(datamodule.val_dataloader(), desc="evaluate", unit="batch"):
        predictions = predict_inputs(loaded, list(images), max_side)
        report.update(predictions, list(targets), [names[int(t["image_id"])] for t in targets])
    return report


def evaluate(cfg: DictConfig, overrides: list[str]) -> dict:
    """Evaluate; writes metrics.json, pr_curves.png and per_image.csv to ``cfg.paths.output_dir``."""
    settings = read_settings(EvaluateConfig, cfg)
    settings.validate()
    loaded = with_mask_threshold(load_model(settings.ckpt_path, select_device(settings.device)), settings.mask_threshold)
    settings.score_threshold = loaded.display_threshold(settings.score_threshold)
    datamodule = BookDataModule(data_config(cfg, loaded, overrides))
    datamodule.prepare_data()
    datamodule.setup("validate")
    if list(datamodule.class_names) != loaded.class_names:
        raise ConfigError(
            f"the model's classes {loaded.class_names} differ from data.classes {list(datamodule.class_names)}"
        )
    if not datamodule.val_records:
        raise ConfigError(f"no {settings.split} images to evaluate: check data.val_fraction / data.val_annotations")
    report = run_evaluation(loaded, datamodule, settings.score_threshold, settings.max_side)

    out = Path(cfg.paths.output_dir)
    metrics = report.metrics()
    summary = {
        "checkpoint": str(loaded.source), "split": settings.split, "images": len(report.images),
        "score_threshold": settings.score_threshold, "mask_threshold": loaded.model_cfg.mask_threshold,
        "metrics": {k: v if math.isfinite(v) else None for k, v in metrics.items()},  # NaN: nothing to measure
    }
    (out / "metrics.json").write_text(json.dumps(summary, indent=2))
    plot_pr_curves(report.curves(), out / "pr_curves.png")
    report.write_csv(out / "per_image.csv")
    print(format_table(report, settings, out))
    return summary


def format_table(report: EvaluationReport, settings: EvaluateConfig, out: Path) -> str:
    metrics = report.metrics()
    lines = [f"{settings.split}: {len(report.images)} images", f"{'':<8}{'mask':>8}{'box':>8}"]
    lines += [f"{name:<8}{metrics[f'mask_{name}']:>8.4f}{metrics[f'box_{name}']:>8.4f}" for name in STAT_NAMES]
    lines.append(f"matterport VOC mask AP50 (scores >= {settings.score_threshold}): {metrics['voc_mask_AP50']:.4f}")
    worst = [r for r in report.worst_first()[:3] if r.f1 < 1.0]
    if worst:
        described = (f"{r.image} (F1 {r.f1:.2f}: {r.tp} TP, {r.fp} FP, {r.fn} FN)" for r in worst)
        lines.append("worst images: " + "; ".join(described))
    lines += [f"wrote {out / name}" for name in ("metrics.json", "pr_curves.png", "per_image.csv")]
    return "\n".join(lines)


@hydra.main(version_base="1.3", config_path="pkg://booksegm.conf", config_name="evaluate")
def main(cfg: DictConfig) -> None:
    with cli_errors():
        evaluate(cfg, list(HydraConfig.get().overrides.task))


if __name__ == "__main__":
    with cli_errors():
        check_command_line("evaluate", sys.argv)
    main()
