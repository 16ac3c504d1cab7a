"""Runs survive kills: step checkpoints mid-epoch, resume from ckpt_path alone, exactly."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from support import CONF, TINY, compose_config, run_train, train_env
from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

from booksegm.model.checkpoint_file import RUN_CONFIG_KEY, AtomicCheckpointIO, CheckpointWriteError
from booksegm.training.interrupt import InterruptCheckpoint, TrainingInterrupted
from booksegm.training.resume import resume_config

# two epochs of 4 steps, last.ckpt every 2 steps: step 2 is mid-epoch
SCHEDULE = ["trainer.max_epochs=2", "trainer.limit_train_batches=4", "callbacks.step_checkpoint.every_n_train_steps=2",
            "seed=3"]


def run_folder(root: Path) -> Path:
    (run,) = [p for p in (root / "outputs" / "train" / "runs").iterdir() if not (p / "resumed_run").exists()]
    return run


def load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def scalars(event_file: Path, tag: str) -> dict[int, float]:
    values = {}
    for event in EventFileLoader(str(event_file)).Load():
        for value in event.summary.value:
            if value.tag == tag:
                values[event.step] = value.tensor.float_val[0] if value.HasField("tensor") else value.simple_value
    return values


def assert_close(a, b, what: str) -> None:
    """Nested checkpoint contents equal, tensors within float tolerance."""
    if isinstance(a, torch.Tensor):
        assert torch.allclose(a.float(), b.float(), rtol=1e-5, atol=1e-6), what
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), what
        for key in a:
            assert_close(a[key], b[key], f"{what}.{key}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), what
        for i, (x, y) in enumerate(zip(a, b)):
            assert_close(x, y, f"{what}[{i}]")
    else:
        assert a == b, f"{what}: {a} != {b}"


@pytest.mark.parametrize("processes", [1, pytest.param(2, marks=pytest.mark.slow)])  # 2: DDP, about 3 minutes
def test_a_run_killed_mid_epoch_resumes_from_its_checkpoint_alone_as_if_never_stopped(tmp_path, processes):
    whole_root, killed_root = tmp_path / "whole", tmp_path / "killed"
    whole_root.mkdir(), killed_root.mkdir()
    # twice the images for two processes: each trains a share of 8 in 4 steps, as one process all 8
    schedule = [*SCHEDULE, *(["trainer=ddp", "data.synthetic.num_images=20"] if processes == 2 else [])]
    assert run_train(whole_root, *schedule).returncode == 0

    process = subprocess.Popen([sys.executable, "-m", "booksegm.train", *TINY, *schedule], cwd=killed_root,
                               env=train_env(killed_root), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)
    deadline = time.monotonic() + 600
    while not list(killed_root.glob("outputs/train/runs/*/checkpoints/last.ckpt")) and process.poll() is None:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)  # every process of the run, as a crash, an OOM kill or a lost machine would
    process.wait()
    run = run_folder(killed_root)
    ckpt = run / "checkpoints" / "last.ckpt"
    assert load(ckpt)["global_step"] == 2  # written mid-epoch, then killed during step 3

    resumed = run_train(killed_root, f"ckpt_path={ckpt}", base=[])  # no other override: the config comes back
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert str(run) in resumed.stdout  # the same folder: best and last checkpoints, metrics.json

    whole = load(run_folder(whole_root) / "checkpoints" / "last.ckpt")
    after = load(ckpt)
    assert after["global_step"] == whole["global_step"] == 8
    assert_close(after["lr_schedulers"], whole["lr_schedulers"], "lr_schedulers")
    assert_close(after["optimizer_states"], whole["optimizer_states"], "optimizer_states")
    assert_close(after["current_model_state"], whole["current_model_state"], "weights")
    assert_close(after["state_dict"], whole["state_dict"], "EMA weights")
    (best_whole,) = [v["best_model_score"] for k, v in whole["callbacks"].items() if "val/mask_AP" in k]
    (best_after,) = [v["best_model_score"] for k, v in after["callbacks"].items() if "val/mask_AP" in k]
    assert_close(best_after, best_whole, "best score")

    # the next step's loss and LR, as TensorBoard got them: the resumed launch writes its own event file
    whole_events = sorted((run_folder(whole_root) / "tensorboard").glob("events.*"))
    resumed_events = sorted((run / "tensorboard").glob("events.*"), key=lambda p: p.stat().st_mtime)
    assert len(whole_events) == 1 and len(resumed_events) == 2
    for tag in ("train/loss", "train/lr"):
        expected, got = scalars(whole_events[0], tag), scalars(resumed_events[-1], tag)
        assert min(got) == 2 and got[2] == expected[2], tag  # step index 2 is the third step
        assert all(abs(got[step] - expected[step]) < 1e-5 for step in got), tag
    summary = json.loads((run / "metrics.json").read_text())
    assert [v["epoch"] for v in summary["validations"]] == [0, 1]  # the first launch's validation too


@pytest.mark.parametrize("sent, exit_code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_ctrl_c_and_sigterm_stop_after_the_batch_with_last_ckpt_written(tmp_path, sent, exit_code):
    # a step checkpoint after every step tells the test that training runs; the signal comes after it,
    # wherever in the step it lands (one epoch of 12 steps: no validation to land in)
    process = subprocess.Popen(
        [sys.executable, "-m", "booksegm.train", *TINY, "trainer.max_epochs=1", "trainer.limit_train_batches=12",
         "callbacks.step_checkpoint.every_n_train_steps=1"],
        cwd=tmp_path, env=train_env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 600
    while not list(tmp_path.glob("outputs/train/runs/*/checkpoints/last.ckpt")) and process.poll() is None:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    process.send_signal(sent)
    _, stderr = process.communicate(timeout=600)
    assert process.returncode == exit_code, stderr[-3000:]
    ckpt = run_folder(tmp_path) / "checkpoints" / "last.ckpt"
    step = load(ckpt)["global_step"]
    assert f"stopped by {sent.name} after step {step}" in stderr and f"resume with ckpt_path={ckpt}" in stderr
    assert 1 <= step < 12 and "Traceback" not in stderr


@pytest.mark.slow  # two training processes: about a minute on 2 busy cores
def test_sigterm_to_one_ddp_process_stops_every_process_after_the_same_batch(tmp_path):
    process = subprocess.Popen(
        [sys.executable, "-m", "booksegm.train", *TINY, "trainer=ddp", "data.synthetic.num_images=40",
         "trainer.max_epochs=1", "trainer.limit_train_batches=8", "callbacks.step_checkpoint.every_n_train_steps=1"],
        cwd=tmp_path, env=train_env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True)
    deadline = time.monotonic() + 600
    while not list(tmp_path.glob("outputs/train/runs/*/checkpoints/last.ckpt")) and process.poll() is None:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    (second,) = Path(f"/proc/{process.pid}/task/{process.pid}/children").read_text().split()  # Lightning started it
    os.kill(int(second), signal.SIGTERM)  # process 1 alone, as `kill PID` would
    try:
        _, stderr = process.communicate(timeout=300)  # no process left waiting alone in a collective
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
    ckpt = run_folder(tmp_path) / "checkpoints" / "last.ckpt"
    step = load(ckpt)["global_step"]
    assert f"stopped by SIGTERM after step {step}" in stderr and 1 <= step < 8, stderr[-3000:]  # of 8
    # 143 from process 0's own stop; Lightning's launcher may SIGKILL it first when process 1 ends before it
    assert process.returncode in (143, -signal.SIGKILL), stderr[-3000:]


class TrainerAt:
    """What InterruptCheckpoint reads of a Trainer, at one step."""

    world_size = 1

    def __init__(self, step: int):
        self.global_step, self.current_epoch, self.saved = step, 0, []

    def save_checkpoint(self, path):
        self.saved.append(path)


def test_sigterm_between_batches_waits_for_the_next_batch_end_and_stops_validation_at_once(tmp_path):
    callback, before = InterruptCheckpoint(str(tmp_path)), signal.getsignal(signal.SIGTERM)
    callback.on_train_start(TrainerAt(0), None)
    try:
        assert signal.getsignal(signal.SIGTERM) == callback._on_signal  # Lightning's flag is not raised
        os.kill(os.getpid(), signal.SIGTERM)  # lands after a batch's hooks: nothing stops here
        trainer = TrainerAt(7)
        with pytest.raises(TrainingInterrupted, match="stopped by SIGTERM after step 7") as stop:
            callback.on_train_batch_end(trainer, None)
        assert trainer.saved == [tmp_path / "last.ckpt"] and stop.value.exit_code == 143
        with pytest.raises(TrainingInterrupted, match="during validation after step 7: nothing saved") as stop:
            callback.on_validation_batch_end(TrainerAt(7), None)
        assert stop.value.exit_code == 143
    finally:
        callback.teardown(None, None, "fit")
    assert signal.getsignal(signal.SIGTERM) == before


def test_ctrl_c_waits_through_validation_for_the_next_batch_end(tmp_path):
    callback, before = InterruptCheckpoint(str(tmp_path)), signal.getsignal(signal.SIGINT)
    callback.on_train_start(TrainerAt(0), None)
    try:
        os.kill(os.getpid(), signal.SIGINT)
        callback.on_validation_batch_end(TrainerAt(4), None)  # goes on
        with pytest.raises(TrainingInterrupted, match="stopped by SIGINT after step 5"):
            callback.on_train_batch_end(TrainerAt(5), None)
        with pytest.raises(KeyboardInterrupt):  # a second Ctrl-C stops at once
            os.kill(os.getpid(), signal.SIGINT)
    finally:
        callback.teardown(None, None, "fit")
    assert signal.getsignal(signal.SIGINT) == before


def test_resume_takes_the_run_config_with_the_command_line_on_top_and_warns_of_model_changes(tmp_path, caplog):
    run = tmp_path / "run"
    (run / ".hydra").mkdir(parents=True)
    ckpt = run / "checkpoints" / "last.ckpt"
    saved = OmegaConf.to_container(compose_config(*TINY), resolve=False)
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[f"ckpt_path={ckpt}", "trainer.max_epochs=9",
                                                       "model.box_detections_per_img=5"])
        with caplog.at_level(logging.WARNING):
            resumed = resume_config(cfg, {RUN_CONFIG_KEY: saved}, ckpt)
    assert resumed.trainer.max_epochs == 9 and resumed.model.box_detections_per_img == 5  # the command line
    assert resumed.model.backbone == "resnet18" and resumed.data.synthetic.num_images == 10  # the run's own
    assert resumed.paths.output_dir == str(run.resolve())  # the run's folder, not a new one
    assert "model.box_detections_per_img=5 changes the model" in caplog.text
    assert "trainer.max_epochs" not in caplog.text


def test_resuming_with_a_model_the_weights_do_not_fit_fails_in_one_line(tiny_run, tmp_path):
    """It warned, then printed Lightning's 53-line RuntimeError of missing and mismatched keys."""
    run = tmp_path / "run"
    shutil.copytree(tiny_run.folder / ".hydra", run / ".hydra")
    (run / "checkpoints").mkdir()
    ckpt = run / "checkpoints" / "last.ckpt"
    shutil.copy(tiny_run.checkpoint, ckpt)
    result = run_train(tmp_path, f"ckpt_path={ckpt}", "model.backbone=resnet34", base=[])
    assert result.returncode == 1, result.stderr[-3000:]
    assert "Traceback" not in result.stderr and result.stderr.splitlines()[-1].startswith(
        f"booksegm: error: ckpt_path={ckpt}: its weights do not fit the model built here: "
        "model.backbone=resnet34 (the run's: resnet18) ("), result.stderr[-3000:]
    assert "resume without model.* changes, or start a new run" in result.stderr
    assert load(ckpt)["global_step"] == load(tiny_run.checkpoint)["global_step"]


def test_a_failed_checkpoint_write_leaves_the_earlier_file_and_names_the_folder_and_its_free_space(tmp_path):
    """ulimit -f as a full disk: the OSError [Errno 27] File too large reached the user as a traceback."""
    path = tmp_path / "checkpoints" / "last.ckpt"
    writer = AtomicCheckpointIO()
    writer.save_checkpoint({"weights": torch.zeros(10)}, path)
    earlier = path.read_bytes()
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (4 * len(earlier), hard))  # this process writes no larger file
    try:
        with pytest.raises(CheckpointWriteError) as error:
            writer.save_checkpoint({"weights": torch.zeros(1_000_000)}, path)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    assert re.fullmatch(rf"cannot write the checkpoint last.ckpt in {re.escape(str(path.parent))}: File too large "
                        r"\(\d+\.\d GB free there\); the checkpoints already there are left as they were",
                        str(error.value))
    assert path.read_bytes() == earlier and [p.name for p in path.parent.iterdir()] == ["last.ckpt"]


def test_training_that_cannot_write_its_checkpoint_stops_in_one_line(tmp_path):
    def limit_file_size() -> None:
        # the data and the logs fit, a checkpoint does not
        resource.setrlimit(resource.RLIMIT_FSIZE, (20 << 20, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))

    result = subprocess.run([sys.executable, "-m", "booksegm.train", *TINY], cwd=tmp_path, env=train_env(tmp_path),
                            capture_output=True, text=True, timeout=600, preexec_fn=limit_file_size)
    checkpoints = run_folder(tmp_path) / "checkpoints"
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert re.match(rf"booksegm: error: cannot write the checkpoint \S+\.ckpt in {re.escape(str(checkpoints))}: "
                    r"File too large \(", result.stderr.splitlines()[-1]), result.stderr[-3000:]
    assert not list(checkpoints.iterdir())  # no partial file, no temporary one
