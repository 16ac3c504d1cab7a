"""End to end: `python -m booksegm.train` on a tiny synthetic set, and config composition."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from support import BOOK, EXPERIMENTS, TINY, compose_config, run_train, tiny_config, write_via_set
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from booksegm.cli.train import build, check_run_length, train
from booksegm.config import ConfigError, to_dataclass
from booksegm.data.datamodule import DataConfig
from booksegm.model.build import ModelConfig, build_maskrcnn
from booksegm.training.module import BookSegmModule


def test_tiny_training_run_writes_checkpoints_and_the_six_losses_and_ap(tiny_run):
    result = tiny_run.result
    assert result.returncode == 0, result.stderr[-3000:]
    assert "val mask AP:" in result.stdout and "tensorboard --logdir" in result.stdout

    run_dir = tiny_run.folder
    assert (run_dir / ".hydra" / "config.yaml").is_file()
    checkpoints = sorted(p.name for p in (run_dir / "checkpoints").glob("*.ckpt"))
    assert "last.ckpt" in checkpoints and any(name.startswith("epoch000-mask_ap") for name in checkpoints)

    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    losses = ["loss", "rpn_class_loss", "rpn_bbox_loss", "mrcnn_class_loss", "mrcnn_bbox_loss", "mrcnn_mask_loss"]
    assert {f"train/{name}" for name in losses} <= tags
    assert {f"train_epoch/{name}" for name in losses} <= tags
    assert {"train/lr", "val/mask_AP", "val/mask_AP50", "val/mask_AP75", "val/box_AP"} <= tags
    assert len(events.Scalars("train/loss")) == 3  # one per step
    assert "val/predictions" in events.Tags()["images"]

    # the weight EMA is on by default: the checkpoint's model is the average, the live weights ride along
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["state_dict"].keys() == ckpt["current_model_state"].keys()
    assert any(not torch.equal(ckpt["state_dict"][k], ckpt["current_model_state"][k]) for k in ckpt["state_dict"])
    assert ckpt["score_threshold"] is None or 0.0 <= ckpt["score_threshold"] <= 1.0

    # the synthetic set was rendered into the cache once and is reused
    assert (tiny_run.root / "cache").is_dir()


def test_the_first_screen_shows_the_model_in_a_line_and_its_layers_only_in_the_log_file(tiny_run):
    printed = tiny_run.result.stdout + tiny_run.result.stderr
    noise = ["FLOPs", "LeafSpec", "Tip:", "| Name", "┏"]  # Lightning's summary, a torch warning from Lightning, its adverts
    assert not [line for line in printed.splitlines() if any(n in line for n in noise)]
    assert re.search(r"model: TTAMaskRCNN, [\d.]+ M parameters \([\d.]+ M trainable\)", printed)
    log_file = (tiny_run.folder / "train.log").read_text()
    assert "model.backbone  | BackboneWithFPN" in log_file and "FLOPs" not in log_file


def test_a_bad_config_value_fails_in_one_line_before_training(tmp_path):
    result = run_train(tmp_path, "model.anchors.sizes=[16,32]")
    assert result.returncode != 0
    assert "booksegm: error: model.anchors.sizes needs 5 values" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "outputs" / "train" / "runs").exists() or not list(
        (tmp_path / "outputs" / "train" / "runs").rglob("*.ckpt")
    )


def test_two_runs_started_together_get_their_own_folders(tmp_path):
    """Run folders carry a random suffix after the second they started: runs launched at the same
    moment (a grid of jobs, two terminals) never write into one folder."""
    env = {**os.environ, "BOOKSEGM_ROOT": str(tmp_path), "HYDRA_FULL_ERROR": "0"}
    # a bad value stops each run right after Hydra made its folder: quick, and enough to see the names
    launches = [subprocess.Popen([sys.executable, "-m", "booksegm.train", "model.anchors.sizes=[1]"], cwd=tmp_path,
                                 env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for _ in range(2)]
    assert [p.wait(timeout=300) for p in launches] == [1, 1]
    folders = sorted(p.name for p in (tmp_path / "outputs" / "train" / "runs").iterdir())
    assert len(folders) == 2, folders
    assert all(re.fullmatch(r"\d{4}-\d{2}-\d{2}_\d{2}-\d{2}-\d{2}-[0-9a-f]{6}", name) for name in folders), folders


@pytest.mark.parametrize("content, message", [(None, "no such checkpoint file"),
                                              ("not a checkpoint", "not a readable PyTorch checkpoint")])
def test_a_bad_resume_checkpoint_fails_in_one_line_before_anything_is_built(tmp_path, content, message):
    ckpt = tmp_path / "given.ckpt"
    if content is not None:
        ckpt.write_text(content)
    result = run_train(tmp_path, f"ckpt_path={ckpt}")
    assert result.returncode != 0
    assert message in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "cache").exists()  # the synthetic set was not even rendered


def test_a_bad_model_weights_file_fails_in_one_line_before_the_data_is_built(tmp_path):
    weights = tmp_path / "weights.pth"
    weights.write_text("not a checkpoint")
    result = run_train(tmp_path, f"model.weights={weights}")
    assert result.returncode != 0
    assert f"booksegm: error: model.weights: {weights}: not a readable PyTorch checkpoint" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "cache").exists()  # the synthetic set was not even rendered


def test_an_unknown_config_key_is_named(tmp_path):
    result = run_train(tmp_path, "+model.anchor_sizes=[16]")
    assert result.returncode != 0
    assert "anchor_sizes" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("epochs, message", [
    (-1, "trainer.max_epochs=-1 trains without end, but the learning-rate schedule needs one"),
    (0, "trainer.max_epochs must be >= 1, got 0: the run would train nothing"),
])
def test_a_run_without_an_end_or_without_epochs_fails_in_one_line_before_the_data(epochs, message, tmp_path,
                                                                                  monkeypatch):
    """-1 ended in an OverflowError traceback from the LR schedule; 0 exited 0 without a checkpoint."""
    monkeypatch.setenv("BOOKSEGM_ROOT", str(tmp_path))
    monkeypatch.setenv("BOOKSEGM_CACHE", str(tmp_path / "cache"))
    with pytest.raises(ConfigError, match=message):
        train(compose_config(*TINY, f"trainer.max_epochs={epochs}"))
    assert not (tmp_path / "cache").exists()  # the synthetic set was not even rendered
    check_run_length(compose_config(*TINY, f"trainer.max_epochs={epochs}", "train.stages=[{layers: all, epochs: 1}]"))
    if epochs == -1:
        check_run_length(compose_config(*TINY, "trainer.max_epochs=-1", "+trainer.max_steps=3"))


def test_the_checkpoint_records_the_data_folder_as_an_absolute_path(tmp_path, monkeypatch):
    """A relative data.root, kept as written, named another folder (or none) where the checkpoint was evaluated."""
    write_via_set(tmp_path / "photos", {"a.jpg": BOOK, "b.jpg": BOOK})
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("BOOKSEGM_ROOT", str(tmp_path))
    _, module = build(compose_config("data=via", "data.root=photos", "data.val_fraction=0.5"))
    assert module.run_config["data"]["root"] == str(tmp_path / "photos")


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_composes_and_builds_a_model(experiment, monkeypatch, tmp_path):
    monkeypatch.setenv("BOOKSEGM_ROOT", str(tmp_path))
    cfg = compose_config(f"+experiment={experiment}", "data.root=/photos")
    to_dataclass(DataConfig, cfg.data, "data").validate()
    model_cfg = to_dataclass(ModelConfig, cfg.model, "model")
    build_maskrcnn(model_cfg, num_classes=1 + len(cfg.data.classes))


def test_anchors_16_256_experiment_sets_the_seed_anchor_scales():
    cfg = compose_config("+experiment=anchors_16_256")
    assert list(cfg.model.anchors.sizes) == [16, 32, 64, 128, 256]


def first_losses(run_root: Path) -> list[float]:
    events = EventAccumulator(str(next((run_root / "outputs" / "train" / "runs").iterdir()) / "tensorboard"))
    events.Reload()
    return [event.value for event in events.Scalars("train/loss")]


def test_the_same_seed_gives_the_same_first_losses_on_cpu(tmp_path):
    """Two runs with one seed log identical per-step losses; another seed differs."""
    runs = {name: tmp_path / name for name in ("a", "b", "c")}
    for name, seed in (("a", 1), ("b", 1), ("c", 2)):
        runs[name].mkdir()
        result = run_train(runs[name], f"seed={seed}", "trainer.limit_val_batches=0")
        assert result.returncode == 0, result.stderr[-2000:]
    assert first_losses(runs["a"]) == first_losses(runs["b"])
    assert first_losses(runs["a"]) != first_losses(runs["c"])


def test_the_last_epoch_validates_whatever_check_val_every_n_epoch(synthetic_datamodule):
    module = BookSegmModule(model=asdict(tiny_config()), class_names=["book"], optim={"warmup_steps": 0})
    trainer = pl.Trainer(max_epochs=5, check_val_every_n_epoch=3, limit_train_batches=1, limit_val_batches=1,
                         logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, num_sanity_val_steps=0, accelerator="cpu")
    trainer.fit(module, datamodule=synthetic_datamodule)
    assert [v["epoch"] for v in module.val_history] == [2, 4]  # the 3rd epoch's, then the 5th (last) one's
