"""Sweeps: a real 2-job multirun and its report, the same through the submitit and joblib launchers, the
k-fold summary, the Optuna search config."""

from __future__ import annotations

import csv
import importlib.util
import json
from pathlib import Path

import pytest
import torch
import yaml
from omegaconf import OmegaConf
from support import CONF, compose_config, run_train

from booksegm.cli.sweep_report import main as sweep_report
from booksegm.cli.sweep_report import read_sweep


def test_a_two_job_multirun_completes_and_the_report_lists_both(tmp_path, capsys):
    result = run_train(tmp_path, "trainer.limit_train_batches=1", "hydra.mode=MULTIRUN",  # = --multirun
                       "+experiment=anchors_16_256,anchors_32_512")
    assert result.returncode == 0, result.stderr[-3000:]
    (sweep,) = (tmp_path / "outputs" / "train" / "multiruns").iterdir()
    for job in ("0", "1"):
        summary = json.loads((sweep / job / "metrics.json").read_text())
        assert summary["metric"] == "val/mask_AP" and "val/box_AP" in summary["best"]
        assert summary["wall_time_s"] > 0 and len(summary["validations"]) == 1

    assert sweep_report([str(sweep)]) == 0
    out = capsys.readouterr().out
    assert "2 jobs, 2 with results" in out
    table = out[out.index("rank"):]
    assert "anchors_16_256" in table and "anchors_32_512" in table
    assert "data.synthetic.num_images=10" in out  # the overrides every job shared, printed once
    rows = list(csv.DictReader((sweep / "sweep_report.csv").open()))
    assert sorted(r["+experiment"] for r in rows) == ["anchors_16_256", "anchors_32_512"]
    assert (sweep / "sweep_report.png").stat().st_size > 0


def has_plugin(name: str) -> bool:
    # find_spec on a dotted name raises, not returns None, when the namespace package is absent
    try:
        return importlib.util.find_spec(f"hydra_plugins.{name}") is not None
    except ModuleNotFoundError:
        return False


def needs(plugin: str, extra: str) -> pytest.MarkDecorator:
    return pytest.mark.skipif(not has_plugin(plugin), reason=f"needs pip install -e '.[{extra}]'")


@pytest.mark.slow
@pytest.mark.parametrize("launcher", [
    pytest.param(["hydra/launcher=submitit_local"], id="submitit_local",  # as submitit_slurm on a cluster
                 marks=needs("hydra_submitit_launcher", "cluster")),
    pytest.param(["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"], id="joblib",
                 marks=needs("hydra_joblib_launcher", "sweep")),
])
def test_a_multirun_through_a_launcher_trains_each_job_in_its_own_process(tmp_path, capsys, launcher):
    # the launcher pickles train's task function and config into a process of its own per job: the job
    # must unpickle with booksegm's resolvers (${run_suffix:}, ${auto_precision:}) and write into the
    # sweep folder the launching process named
    result = run_train(tmp_path, "trainer.limit_train_batches=1", "hydra.mode=MULTIRUN", *launcher,
                       "train.lr=0.001,0.002")
    assert result.returncode == 0, result.stderr[-3000:]
    (sweep,) = (tmp_path / "outputs" / "train" / "multiruns").iterdir()
    processes = set()
    for job in ("0", "1"):
        assert json.loads((sweep / job / "metrics.json").read_text())["epochs"] == 1
        assert torch.load(sweep / job / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] == 1
        (events,) = (sweep / job / "tensorboard").glob("events.out.tfevents.*")
        processes.add(events.name.split(".")[-2])  # TensorBoard names the file with the writing process's id
    assert len(processes) == 2

    assert sweep_report([str(sweep)]) == 0
    out = capsys.readouterr().out
    assert "2 jobs, 2 with results" in out
    rows = list(csv.DictReader((sweep / "sweep_report.csv").open()))
    assert sorted(r["train.lr"] for r in rows) == ["0.001", "0.002"]


def fake_job(sweep: Path, name: str, overrides: list[str], mask_aps: list[float] | None, box_ap: float = 0.5):
    job = sweep / name
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    if mask_aps is not None:
        validations = [{"epoch": e, "val/mask_AP": ap, "val/box_AP": box_ap} for e, ap in enumerate(mask_aps)]
        (job / "metrics.json").write_text(json.dumps({"validations": validations, "wall_time_s": 75.0}))


def test_kfold_sweep_reports_mean_and_std_over_folds(tmp_path, capsys):
    mask_aps = {"anchors_16_256": [0.30, 0.40, 0.50], "anchors_32_512": [0.10, 0.20, 0.30]}
    number = 0
    for experiment, aps in mask_aps.items():
        for fold, ap in enumerate(aps):
            fake_job(tmp_path, str(number), [f"+experiment={experiment}", "data.folds=3", f"data.fold={fold}"],
                     [ap / 2, ap], box_ap=ap + 0.1)
            number += 1
    assert sweep_report([str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "+experiment=anchors_16_256: mask AP 0.4000 ± 0.1000, box AP 0.5000 ± 0.1000 (3 of 3 folds)" in out
    assert "+experiment=anchors_32_512: mask AP 0.2000 ± 0.1000" in out
    assert out.index("anchors_16_256: mask AP") < out.index("anchors_32_512: mask AP")  # best first
    assert len(list(csv.DictReader((tmp_path / "sweep_kfold.csv").open()))) == 2


def test_the_table_is_sorted_by_best_mask_ap_and_shows_failed_jobs_last(tmp_path, capsys):
    fake_job(tmp_path, "0", ["train.lr=0.01"], [0.2, 0.1])
    fake_job(tmp_path, "1", ["train.lr=0.02"], None)  # crashed before writing metrics.json
    fake_job(tmp_path, "2", ["train.lr=0.03"], [0.1, 0.3])
    jobs = {job.name: job for job in read_sweep(tmp_path)}
    assert (jobs["0"].mask_ap, jobs["0"].best_epoch, jobs["2"].mask_ap, jobs["2"].best_epoch) == (0.2, 0, 0.3, 1)
    assert sweep_report([str(tmp_path)]) == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines() if line.strip()[:1] in "12-"]
    assert [row[1] for row in rows if row[0] != "----"] == ["2", "0", "1"]
    assert "no metrics.json" in " ".join(rows[-1])


def test_a_folder_without_jobs_is_an_error(tmp_path, capsys):
    with pytest.raises(SystemExit, match="^2$"):
        sweep_report([str(tmp_path)])
    assert "no Hydra jobs" in capsys.readouterr().err


@needs("hydra_optuna_sweeper", "sweep")
def test_optuna_search_config_maximises_mask_ap_over_real_config_keys():
    cfg = compose_config("+hparams_search=optuna", return_hydra_config=True)
    sweeper = cfg.hydra.sweeper
    assert sweeper._target_.endswith("OptunaSweeper") and sweeper.direction == "maximize"
    assert cfg.optimized_metric == "val/mask_AP"
    params = dict(sweeper.params)
    assert {"+experiment", "train.lr", "train.weight_decay", "model.box_batch_size_per_image",
            "train.loss_weights.mrcnn_mask_loss"} <= set(params)
    for key in params:
        if not key.startswith("+"):
            assert OmegaConf.select(cfg, key) is not None, key
    experiments = {p.stem for p in (CONF / "experiment").glob("*.yaml")}
    assert set(params["+experiment"].removeprefix("choice(").removesuffix(")").replace(" ", "").split(",")) <= experiments
