"""Evaluate: the report's figures on hand-made cases, and the command on a tiny trained run."""

from __future__ import annotations

import csv
import json
import math

import pytest
import torch
from support import TINY, compose_config, run_command

from booksegm.cli import evaluate as evaluate_cli
from booksegm.cli.evaluate import evaluate
from booksegm.cli.evaluate import run_evaluation as real_run_evaluation
from booksegm.cli.export import ExportConfig, export
from booksegm.config import ConfigError
from booksegm.evaluation.report import EvaluationReport
from booksegm.evaluation.voc import mean_voc_ap

SIZE = 40


def square(x: int, y: int, side: int = 10) -> torch.Tensor:
    mask = torch.zeros(SIZE, SIZE, dtype=torch.uint8)
    mask[y : y + side, x : x + side] = 1
    return mask


def target(masks: list[torch.Tensor], image_id: int) -> dict:
    stacked = torch.stack(masks) if masks else torch.zeros(0, SIZE, SIZE, dtype=torch.uint8)
    boxes = []
    for mask in stacked:
        ys, xs = torch.nonzero(mask, as_tuple=True)
        boxes.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
    return {"boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
            "labels": torch.ones(len(stacked), dtype=torch.int64), "masks": stacked, "image_id": image_id}


def as_detections(truth: dict, scores: list[float]) -> dict:
    """Ground truth in the form the model predicts: float masks [N, 1, H, W] and scores."""
    return {"boxes": truth["boxes"], "labels": truth["labels"], "scores": torch.tensor(scores),
            "masks": truth["masks"].float()[:, None]}


def report_on(predictions: list[dict], targets: list[dict], threshold: float = 0.5) -> EvaluationReport:
    report = EvaluationReport(["book"], score_threshold=threshold)
    report.update(predictions, targets, [f"photo{t['image_id']}.jpg" for t in targets])
    return report


def test_ground_truth_fed_as_detections_scores_one():
    targets = [target([square(2, 2), square(20, 5, 12)], 0), target([square(8, 25)], 1)]
    report = report_on([as_detections(t, [0.9] * len(t["labels"])) for t in targets], targets)
    metrics = report.metrics()
    for name in ("mask_AP", "mask_AP50", "mask_AP75", "box_AP", "mask_AR100", "voc_mask_AP50"):
        assert metrics[name] == pytest.approx(1.0), name
    assert all((r.tp, r.fp, r.fn, r.f1, r.mean_match_iou) == (r.gt, 0, 0, 1.0, 1.0) for r in report.images)


@pytest.mark.parametrize(
    "dx, coco_ap, ap50, voc_ap50, tp",  # IoU of a 10 px square and its copy moved dx px: (10 - dx) / (10 + dx)
    [(2, 0.4, 1.0, 1.0, 1),  # IoU 0.667 passes COCO's thresholds 0.50..0.65: 4 of 10
     (4, 0.0, 0.0, 0.0, 0)],  # IoU 0.429: no match at all
)
def test_shifted_masks_give_the_expected_lower_values(dx, coco_ap, ap50, voc_ap50, tp):
    truth = target([square(5, 5)], 0)
    moved = as_detections(target([square(5 + dx, 5)], 0), [0.9])
    report = report_on([moved], [truth])
    metrics = report.metrics()
    assert metrics["mask_AP"] == pytest.approx(coco_ap)
    assert metrics["mask_AP50"] == pytest.approx(ap50)
    assert metrics["voc_mask_AP50"] == pytest.approx(voc_ap50)
    (result,) = report.images
    assert (result.tp, result.fp, result.fn) == (tp, 1 - tp, 1 - tp)
    if tp:
        assert result.mean_match_iou == pytest.approx((10 - dx) / (10 + dx))


def test_voc_figure_is_matterports_mean_of_per_image_compute_ap():
    """A false positive scoring above a hit, a miss, and a photo without books."""
    truth = [target([square(2, 2), square(20, 20)], 0), target([square(5, 5)], 1), target([], 2)]
    predictions = [
        as_detections(target([square(2, 2), square(28, 2)], 0), [0.6, 0.9]),  # a hit (low score), a stray (high)
        as_detections(truth[1], [0.8]),
        as_detections(target([square(10, 10)], 2), [0.95]),  # a detection where there is no book
    ]
    report = report_on(predictions, truth)
    # photo 0: precision 0 at the stray, then 1/2 at recall 1/2 -> AP 0.25; photo 1: 1.0; photo 2: left out
    assert [r.voc_ap50 for r in report.images][:2] == pytest.approx([0.25, 1.0])
    assert math.isnan(report.images[2].voc_ap50)
    assert report.metrics()["voc_mask_AP50"] == pytest.approx(mean_voc_ap(predictions, truth)) == pytest.approx(0.625)
    worst = report.worst_first()
    assert [r.image for r in worst] == ["photo2.jpg", "photo0.jpg", "photo1.jpg"]  # F1 0, 0.5, 1


def test_scores_below_the_threshold_stay_out_of_the_per_image_counts_but_not_out_of_coco_ap():
    truth = [target([square(5, 5)], 0)]
    report = report_on([as_detections(truth[0], [0.3])], truth, threshold=0.5)
    assert report.metrics()["mask_AP"] == pytest.approx(1.0)
    (result,) = report.images
    assert (result.detections, result.tp, result.fn, result.voc_ap50) == (0, 0, 1, 0.0)


def test_evaluate_command_on_a_checkpoint_uses_its_run_config(tiny_run):
    root = tiny_run.root
    result = run_command("evaluate", root, f"ckpt_path={tiny_run.checkpoint}", "data.val_batch_size=1",
                         "score_threshold=0.0")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "val: 2 images" in result.stdout and "matterport VOC mask AP50" in result.stdout
    assert "AP50" in result.stdout and "AR100" in result.stdout

    out = next((root / "outputs" / "evaluate" / "runs").iterdir())
    summary = json.loads((out / "metrics.json").read_text())
    assert summary["images"] == 2 and summary["split"] == "val"
    for prefix in ("mask", "box"):
        assert {f"{prefix}_{name}" for name in ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100")} \
            <= summary["metrics"].keys()
    assert "voc_mask_AP50" in summary["metrics"]
    assert (out / "pr_curves.png").stat().st_size > 0
    with open(out / "per_image.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 and [float(r["f1"]) for r in rows] == sorted(float(r["f1"]) for r in rows)
    assert all(r["image"].startswith("synth_") for r in rows)


def test_an_exported_state_dict_evaluates_the_same(tiny_run, tmp_path, monkeypatch):
    monkeypatch.setenv("BOOKSEGM_CACHE", str(tiny_run.root / "cache"))
    ckpt, weights = tiny_run.checkpoint, tmp_path / "books.pth"
    export(ExportConfig(ckpt_path=str(ckpt), format="state_dict", output=str(weights), timing_runs=1))
    data = [o for o in TINY if o.startswith("data.")]
    results = {}
    for name, path in (("ckpt", ckpt), ("state_dict", weights)):
        overrides = [f"ckpt_path={path}", f"paths.output_dir={tmp_path / name}"]
        overrides += data if name == "state_dict" else []  # a checkpoint brings its run's data config
        (tmp_path / name).mkdir()
        results[name] = evaluate(compose_config(*overrides, config_name="evaluate"), overrides)
    assert results["state_dict"]["metrics"] == results["ckpt"]["metrics"]
    assert results["state_dict"]["images"] == 2


def test_evaluate_mask_threshold_reaches_the_model_and_its_metrics(tiny_run, tmp_path, monkeypatch):
    monkeypatch.setenv("BOOKSEGM_CACHE", str(tiny_run.root / "cache"))
    cuts = []
    monkeypatch.setattr(evaluate_cli, "run_evaluation", lambda loaded, *args: cuts.append(
        loaded.model.transform.mask_threshold) or real_run_evaluation(loaded, *args))
    results = {}
    for threshold in ("null", "0.05", "0.95"):
        overrides = [f"ckpt_path={tiny_run.checkpoint}", f"paths.output_dir={tmp_path / threshold}",
                     f"mask_threshold={threshold}"]
        (tmp_path / threshold).mkdir()
        results[threshold] = evaluate(compose_config(*overrides, config_name="evaluate"), overrides)
    assert [results[t]["mask_threshold"] for t in ("null", "0.05", "0.95")] == cuts == [0.5, 0.05, 0.95]
    overrides = [f"ckpt_path={tiny_run.checkpoint}", "mask_threshold=1.0"]
    with pytest.raises(ConfigError, match=r"^mask_threshold must lie in \(0, 1\), got 1.0$"):
        evaluate(compose_config(*overrides, config_name="evaluate"), overrides)
