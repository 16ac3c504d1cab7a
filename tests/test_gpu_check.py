"""scripts/gpu_check.sh, the one-call check for a lent GPU machine, runs end to end on CPU with toy
sizes (--device cpu --no-install --tiny) and prints its figures."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from support import TORCH_THREADS

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "gpu_check.sh"


@pytest.mark.slow  # six Python processes (train, evaluate, predict, export, bench): minutes on 2 busy cores
def test_gpu_check_runs_every_step_on_cpu_and_prints_its_figures(tmp_path):
    env = {**os.environ, "OUT": str(tmp_path / "out"), "OMP_NUM_THREADS": str(TORCH_THREADS)}
    result = subprocess.run(["bash", str(SCRIPT), "--device", "cpu", "--no-install", "--tiny", "--steps", "2"],
                            env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    figures = (tmp_path / "out" / "figures.txt").read_text()
    for label in ("train: 2 steps", "evaluate: COCO AP mask, box", "predict: 4 photos", "export: inference on CPU",
                  "bench fp32: train    booksegm", "bench fp32: train    plain", "bench AMP: skipped", "gpu_check: done"):
        assert label in figures and label in result.stdout, label


def test_gpu_check_refuses_an_unknown_argument():
    result = subprocess.run(["bash", str(SCRIPT), "--devcie", "cpu"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "unknown argument --devcie" in result.stderr
