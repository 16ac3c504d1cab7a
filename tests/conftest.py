"""Fixtures several test modules share; the plain helpers they share are in tests/support.py.

One rule decides which goes where: what costs time to build and is read by many tests (a rendered
data set, a trained run) is a session fixture here, built once; what is a value or a function (the
tiny run's overrides ``TINY``, ``run_train``, ``train_env``, ``compose_config``, ``tiny_config``,
``toy_batch``, ``write_via_set``, ``truncate_jpeg``) is a plain name in support.py, because tests use
those where a fixture cannot go: in ``parametrize`` lists and module constants, with arguments, and
inside fixtures of any scope. No test module imports another (tests/test_layout.py checks): a helper
then has one home, and running one test file does not depend on another's contents.
Tests that take a shared fixture read it and may add files beside it, never change what is there.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from support import TORCH_THREADS, run_train

from booksegm.config import to_dataclass
from booksegm.data.datamodule import BookDataModule, DataConfig
from booksegm.data.synthetic import generate_dataset

torch.set_num_threads(TORCH_THREADS)


@pytest.fixture(scope="session")
def synthetic_set(tmp_path_factory) -> Path:
    """Six 96 x 72 synthetic photos: ``images/`` and ``via_region_data.json``."""
    root = tmp_path_factory.mktemp("synthetic")
    generate_dataset(root, 6, seed=0, width=96, height=72, progress=False)
    return root


@pytest.fixture(scope="session")
def synthetic_datamodule(synthetic_set) -> BookDataModule:
    """``synthetic_set`` as a datamodule, set up: batch 2, two photos held out, images as drawn
    (96 x 72: the default 1024 px squares would cost seconds a step)."""
    data = BookDataModule(to_dataclass(DataConfig, {
        "format": "via", "root": str(synthetic_set), "annotations": "via_region_data.json", "images": "images",
        "val_fraction": 0.34, "batch_size": 2, "num_workers": 0, "resize": {"mode": "none"}}))
    data.setup("fit")
    return data


@dataclass(frozen=True)
class TinyRun:
    root: Path  # its BOOKSEGM_ROOT: outputs/train/runs/<run>/ and the synthetic set in cache/
    result: subprocess.CompletedProcess  # what the command printed

    @property
    def folder(self) -> Path:
        (run,) = (self.root / "outputs" / "train" / "runs").iterdir()
        return run

    @property
    def checkpoint(self) -> Path:
        return self.folder / "checkpoints" / "last.ckpt"


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> TinyRun:
    """One real ``python -m booksegm.train`` with the TINY overrides, for every test that needs a
    trained run or checkpoint and does not care how it was trained."""
    root = tmp_path_factory.mktemp("tiny_run")
    result = run_train(root)
    assert result.returncode == 0, result.stderr[-3000:]
    return TinyRun(root, result)
