"""The CPU default recipe learns: `python -m booksegm.train` with no arguments (slow: ~12 CPU minutes)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

MIN_MASK_AP = 0.10  # the default run's floor: well above the baseline's 0.01 (docs/experiments.md)


@pytest.mark.slow
def test_the_default_run_reaches_mask_ap_0_10(tmp_path):
    env = {**os.environ, "BOOKSEGM_ROOT": str(tmp_path), "HYDRA_FULL_ERROR": "0"}
    result = subprocess.run([sys.executable, "-m", "booksegm.train"], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=3600)
    assert result.returncode == 0, result.stderr[-3000:]
    run_dir = next((tmp_path / "outputs" / "train" / "runs").iterdir())
    last = json.loads((run_dir / "metrics.json").read_text())["last"]
    print(f"default run: val mask AP {last['val/mask_AP']:.4f}, AP50 {last['val/mask_AP50']:.4f}, "
          f"box AP {last['val/box_AP']:.4f}")
    assert last["val/mask_AP"] >= MIN_MASK_AP
