"""Training and validation on several processes (Lightning DDP, gloo on the CPU): `trainer=ddp`, each
image trained once an epoch across the processes, and validation that scores every process's images
as one set, so N processes give the AP of one."""

from __future__ import annotations

import json
import re
import runpy
import socket
import subprocess
import sys

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from support import TINY, compose_config, run_train, train_env

from booksegm.config import to_dataclass
from booksegm.data.datamodule import BookDataModule, DataConfig
from booksegm.data.sampler import ResumableLoader, SeededShuffleSampler
from booksegm.data.synthetic import generate_dataset
from booksegm.model.checkpoint_file import RUN_CONFIG_KEY
from booksegm.training.module import BookSegmModule


def load_checkpoint(path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def test_trainer_ddp_and_its_keys_compose_without_a_plus():
    ddp = compose_config("trainer=ddp").trainer
    assert (ddp.strategy, ddp.devices, ddp.num_nodes) == ("ddp", 2, 1)
    assert ddp.max_epochs == compose_config().trainer.max_epochs  # the default trainer underneath
    named = compose_config("trainer.strategy=ddp", "trainer.num_nodes=2", "trainer.devices=4").trainer
    assert (named.strategy, named.num_nodes, named.devices) == ("ddp", 2, 4)


@pytest.mark.parametrize("size", [10, 9, 2])
@pytest.mark.parametrize("processes", [2, 3])
def test_the_processes_shares_cover_every_image_once_an_epoch(size, processes):
    one = list(SeededShuffleSampler(size, seed=5))
    shares = [list(SeededShuffleSampler(size, seed=5, num_replicas=processes, rank=r)) for r in range(processes)]
    assert {len(share) for share in shares} == {len(SeededShuffleSampler(size, 5, processes))}
    drawn = [draw for share in shares for draw in share]
    assert {index for index, _ in drawn} == set(range(size))  # every image, each with the seed one process gives it
    assert set(drawn) == set(one)
    assert len(drawn) - size == -size % processes  # only the padding to equal shares repeats an image
    # one process: the draws as before sharding, so a single-process run resumes as it was trained
    rng = np.random.default_rng([5, 0])
    assert one == list(zip(rng.permutation(size).tolist(), rng.integers(0, 2**31 - 1, size).tolist()))


def test_a_resumed_share_skips_what_was_trained():
    sampler = SeededShuffleSampler(11, seed=3, num_replicas=2, rank=1)
    whole = list(sampler)
    sampler.start = 4
    assert list(sampler) == whole[4:] and list(sampler) == whole  # skipped once


def test_a_ddp_multirun_that_lightning_would_relaunch_whole_is_refused_in_one_line(tmp_path):
    result = run_train(tmp_path, "trainer=ddp", "seed=1,2", "-m")
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert result.stderr.splitlines()[-1] == ("booksegm: error: DDP with 2 processes a machine in a multirun (-m): run "
                                              "each job as its own command, or start the processes with torchrun or "
                                              "srun (docs/scaling.md)")
    assert not list(tmp_path.glob("outputs/**/*.ckpt"))


def loader(processes: int = 1, rank: int = 0) -> ResumableLoader:
    return ResumableLoader(list(range(10)), batch_size=2, progress=lambda: (2, False),
                           sampler=SeededShuffleSampler(10, seed=1, num_replicas=processes, rank=rank))


def test_a_checkpoint_from_one_process_or_from_before_ddp_resumes_its_random_state(caplog):
    state = loader().state_dict()
    assert len(state["rng"]) == 1  # one process: its own state, as each process's under DDP
    for saved in (state["rng"], state["rng"][0]):  # a list, or the one dict checkpoints held before
        resumed = loader()
        resumed.load_state_dict({**state, "rng": saved})
        assert resumed.sampler.start == 4 and resumed._rng_to_restore is state["rng"][0]
    assert not caplog.records


def test_a_checkpoint_of_two_processes_resumed_on_one_says_it_is_not_the_same_run(caplog):
    states = [loader().state_dict()["rng"][0], {"torch": torch.zeros(1)}]
    resumed = loader()
    resumed.load_state_dict({"epoch": 0, "batches": 2, "epoch_done": False, "rng": states})
    assert resumed._rng_to_restore is states[0]
    assert "written by 2 training processes, this run has 1" in caplog.text


# The ground truth of each validation image, moved and scored by a draw seeded by the image: a COCO AP
# well inside (0, 1) that depends on every image, unlike an untrained model's 0.
ECHO = '''
import json, sys
from pathlib import Path
import numpy as np, pytorch_lightning as pl, torch
from booksegm.config import to_dataclass
from booksegm.data.datamodule import BookDataModule, DataConfig
from booksegm.model.checkpoint_file import RUN_CONFIG_KEY
from booksegm.training.module import BookSegmModule

class EchoModule(BookSegmModule):
    def validation_step(self, batch, batch_idx):
        images, targets = batch
        self.evaluator.update([echo(t) for t in targets], list(targets))

def echo(target):
    rng = np.random.default_rng(int(target["image_id"]))
    shifts = rng.integers(-2, 3, size=(len(target["masks"]), 2)).tolist()
    masks = torch.stack([torch.roll(m, tuple(s), dims=(0, 1)) for m, s in zip(target["masks"], shifts)])
    boxes = target["boxes"] + torch.tensor([[dx, dy, dx, dy] for dy, dx in shifts], dtype=torch.float32)
    return {"boxes": boxes, "labels": target["labels"], "masks": masks[:, None].float(),
            "scores": torch.tensor(rng.random(len(masks)), dtype=torch.float32)}

root, devices, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
data = BookDataModule(to_dataclass(DataConfig, {
    "format": "via", "root": root, "annotations": "via_region_data.json", "images": "images", "val_fraction": 0.5,
    "val_batch_size": 1, "num_workers": 0, "resize": {"mode": "none"}}))
data.setup("fit")
module = EchoModule(model={"backbone": "resnet18"}, optim={}, class_names=list(data.class_names))
trainer = pl.Trainer(accelerator="cpu", devices=devices, strategy="ddp" if devices > 1 else "auto", logger=False,
                     enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
[metrics] = trainer.validate(module, datamodule=data)
if trainer.is_global_zero:
    Path(out).write_text(json.dumps({"metrics": metrics, "score_threshold": module.score_threshold,
                                     "images": len(module.evaluator.state()["images"]), "of": len(data.val_records)}))
'''


@pytest.mark.slow  # two processes start torch and Lightning: about 30 s on 2 busy cores
def test_validation_on_two_processes_gives_the_ap_and_threshold_of_one(tmp_path, synthetic_set, monkeypatch):
    script = tmp_path / "echo_validate.py"
    script.write_text(ECHO)
    two = subprocess.run([sys.executable, str(script), str(synthetic_set), "2", str(tmp_path / "two.json")],
                         cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert two.returncode == 0, two.stderr[-3000:]
    monkeypatch.setattr(sys, "argv", [str(script), str(synthetic_set), "1", str(tmp_path / "one.json")])
    runpy.run_path(str(script), run_name="__main__")
    one, two = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("one", "two"))
    assert one["images"] == two["images"] == one["of"] == 3  # every image once, the padded repeat dropped
    assert 0.05 < one["metrics"]["val/mask_AP"] < 0.95
    assert two["metrics"].keys() == one["metrics"].keys()
    for key, value in one["metrics"].items():
        assert two["metrics"][key] == pytest.approx(value, abs=1e-6, nan_ok=True), key
    assert two["score_threshold"] == pytest.approx(one["score_threshold"], abs=1e-6)


@pytest.mark.slow  # two training processes: about 40 s on 2 busy cores
def test_a_two_process_run_trains_each_image_once_and_writes_one_run(tmp_path):
    """The CPU defaults under `trainer=ddp` (threaded shares included): one summary, one best checkpoint."""
    result = run_train(tmp_path, "trainer=ddp", "trainer.devices=2", "data.val_fraction=0.3",
                       "trainer.limit_train_batches=1.0")
    assert result.returncode == 0, result.stderr[-3000:]
    assert len(re.findall(r"^val mask AP: ", result.stdout, re.M)) == 1, result.stdout
    (run,) = (tmp_path / "outputs" / "train" / "runs").iterdir()
    log = (run / "train.log").read_text()
    assert log.count("train.batch_threads=2 off under DDP (2 processes)") == 1
    assert "data: 7 training, 3 validation images" in log
    best = [p for p in (run / "checkpoints").glob("*.ckpt") if p.name != "last.ckpt"]
    assert len(best) == 1, best
    summary = json.loads((run / "metrics.json").read_text())
    assert best[0].name == f"epoch000-mask_ap{summary['best']['val/mask_AP']:.4f}.ckpt"
    # 7 images in shares of 4 (one repeated to even them) at batch 2: 2 steps, where one process takes 4
    checkpoint = load_checkpoint(run / "checkpoints" / "last.ckpt")
    assert checkpoint["global_step"] == 2 and summary["validations"][-1]["step"] == 2
    # each process's random state, which its own images moved: a resume puts back each one's
    (loader_state,) = checkpoint["loops"]["fit_loop"]["state_dict"]["combined_loader"]
    assert len(loader_state["rng"]) == 2 and not torch.equal(*(rng["torch"] for rng in loader_state["rng"]))
    assert len(list((run / "tensorboard").glob("events.out.tfevents.*"))) == 1
    assert "sync_dist" not in result.stderr  # epoch-level values are reduced over the processes


# Process 1's loss is NaN at its second step; process 0's is finite. A gloo timeout of a minute turns the
# hang of a process waiting alone in its gradient all-reduce into an error.
POISONED = '''
import datetime, json, sys
from dataclasses import asdict
import pytorch_lightning as pl, torch
from pytorch_lightning.strategies import DDPStrategy
from booksegm.config import to_dataclass
from booksegm.data.datamodule import BookDataModule, DataConfig
from booksegm.model.build import ModelConfig
from booksegm.model.checkpoint_file import RUN_CONFIG_KEY
from booksegm.training.module import BookSegmModule

class PoisonedLoss(BookSegmModule):
    def weighted_losses(self, images, targets):
        loss, named = super().weighted_losses(images, targets)
        return (loss * float("nan") if (self.global_rank, self.global_step) == (1, 1) else loss), named

root, out = sys.argv[1], sys.argv[2]
pl.seed_everything(0)
data = BookDataModule(to_dataclass(DataConfig, {
    "format": "via", "root": root, "annotations": "via_region_data.json", "images": "images", "val_fraction": 0.34,
    "batch_size": 1, "num_workers": 0, "resize": {"mode": "none"}}))
data.setup("fit")
module = PoisonedLoss(model=asdict(ModelConfig(backbone="resnet18", rpn_post_nms_top_n_train=50,
                                               box_batch_size_per_image=16)),
                      optim={"warmup_steps": 0, "batch_threads": 1}, class_names=list(data.class_names))
trainer = pl.Trainer(accelerator="cpu", devices=2, strategy=DDPStrategy(timeout=datetime.timedelta(seconds=60)),
                     max_steps=3, limit_val_batches=0, logger=False, enable_checkpointing=False,
                     enable_progress_bar=False, enable_model_summary=False)
trainer.fit(module, datamodule=data)
weights = float(sum(p.double().sum() for p in module.model.parameters()))
with open(f"{out}-{trainer.global_rank}.json", "w") as file:
    json.dump({"skipped": module.nonfinite_steps, "steps": trainer.global_step, "weights": weights}, file)
'''


@pytest.mark.slow  # two processes train 3 steps: about 40 s on 2 busy cores
def test_a_non_finite_loss_on_one_process_skips_the_step_on_every_process(tmp_path, synthetic_set):
    script = tmp_path / "poisoned.py"
    script.write_text(POISONED)
    result = subprocess.run([sys.executable, str(script), str(synthetic_set), str(tmp_path / "rank")], cwd=tmp_path,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank-{rank}.json").read_text()) for rank in (0, 1)]
    assert [(r["skipped"], r["steps"]) for r in ranks] == [(1, 3), (1, 3)]
    assert ranks[0]["weights"] == ranks[1]["weights"]  # the same weights: no process stepped alone
    assert "non-finite loss on process 1: every process skips the step" in result.stderr


@pytest.mark.slow  # two training processes and a validation: about a minute and a half on 2 busy cores
def test_two_nodes_on_localhost_write_one_run_whose_ap_one_process_finds_again(tmp_path):
    """Two "machines" of one process each, started as torchrun or srun would start them (Lightning reads
    MASTER_ADDR, NODE_RANK, LOCAL_RANK, WORLD_SIZE), into the one run folder both name."""
    scenes, run = tmp_path / "scenes", tmp_path / "run"
    generate_dataset(scenes, 10, seed=0, width=128, height=96, progress=False)  # rendered once, before the nodes
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [sys.executable, "-m", "booksegm.train", *TINY, "trainer=ddp", "trainer.devices=1", "trainer.num_nodes=2",
               "data.val_fraction=0.3", f"data.root={scenes}", f"hydra.run.dir={run}"]
    nodes = [subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env={**train_env(tmp_path), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
                                   "WORLD_SIZE": "2", "NODE_RANK": str(rank), "LOCAL_RANK": "0", "RANK": str(rank)})
             for rank in (0, 1)]
    outputs = [node.communicate(timeout=600) for node in nodes]
    assert [node.returncode for node in nodes] == [0, 0], outputs[0][1][-3000:] + outputs[1][1][-3000:]
    assert "val mask AP: " in outputs[0][0] and "val mask AP: " not in outputs[1][0]  # node 0 reports, node 1 not
    (best,) = [p for p in (run / "checkpoints").glob("*.ckpt") if p.name != "last.ckpt"]
    summary = json.loads((run / "metrics.json").read_text())
    checkpoint = load_checkpoint(best)
    assert checkpoint["global_step"] == 2  # 7 images in two shares of 4, batch 2

    module = BookSegmModule.load_from_checkpoint(best, map_location="cpu", weights_only=True)
    data = BookDataModule(to_dataclass(DataConfig, {**checkpoint[RUN_CONFIG_KEY]["data"], "root": str(scenes),
                                                    "synthetic_root": None, "image_check_cache": None}, "data"))
    data.setup("fit")
    [alone] = pl.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False).validate(module, data)
    assert alone["val/mask_AP"] == pytest.approx(summary["best"]["val/mask_AP"], abs=1e-6)
    assert alone["val/box_AR100"] == pytest.approx(summary["best"]["val/box_AR100"], abs=1e-6)
