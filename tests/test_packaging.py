"""The wheel alone: built from the project's files, installed (not editable) into a fresh venv that
cannot see the checkout, and run from an empty folder, through ``python -m`` and the ``booksegm``
command. Slow (a wheel build and several processes that import torch); .ci/run runs it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image
from support import TORCH_THREADS

from booksegm.cli.main import COMMANDS
from booksegm.data.synthetic import render_scene

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
TINY_RUN = ["trainer.max_epochs=1", "trainer.limit_train_batches=2", "data.synthetic.num_images=8"]


def run(args, cwd: Path) -> subprocess.CompletedProcess:
    # no PYTHONPATH and no user site: the venv's own site-packages, and the dependencies, are all it sees
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "BOOKSEGM_ROOT", "BOOKSEGM_CACHE")}
    env.update(PYTHONNOUSERSITE="1", HYDRA_FULL_ERROR="0", OMP_NUM_THREADS=str(TORCH_THREADS))
    return subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="module")
def src(tmp_path_factory) -> Path:
    """A copy of the files the build reads, so no build/ or egg-info lands in the checkout."""
    src = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    for name in ("booksegm", "conf"):
        shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
    return src


@pytest.fixture(scope="module")
def wheel(src, tmp_path_factory) -> Path:
    """``pip wheel --no-deps``, in an isolated build environment as ``pip install .`` builds."""
    dist = tmp_path_factory.mktemp("dist")
    result = run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", dist, src], cwd=dist)
    assert result.returncode == 0, result.stderr[-3000:]
    (whl,) = dist.glob("booksegm-*.whl")
    return whl


@pytest.fixture(scope="module")
def venv(wheel, tmp_path_factory) -> Path:
    """A fresh venv holding booksegm from the wheel only. The dependencies (torch & co., gigabytes) are
    this interpreter's, reached through a .pth file: a .pth line only adds a folder to sys.path, so an
    editable install's finder in that folder never runs and the checkout stays out of reach."""
    venv = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", "--clear", "--without-pip", venv], check=True)
    purelib = run([venv / "bin" / "python", "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], venv)
    deps = [p for p in sys.path if p.endswith(("site-packages", "dist-packages"))]
    (Path(purelib.stdout.strip()) / "_booksegm_test_deps.pth").write_text("\n".join(deps) + "\n")
    result = run([sys.executable, "-m", "pip", "--python", venv / "bin" / "python", "install", "--no-deps", "-q",
                  wheel], cwd=venv)
    assert result.returncode == 0, result.stderr[-3000:]
    return venv


def test_the_wheel_ships_every_module_and_config(src, wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    modules = {p.relative_to(src).as_posix() for p in (src / "booksegm").rglob("*.py")}
    configs = {"booksegm/" + p.relative_to(src).as_posix() for p in (src / "conf").rglob("*.yaml")}
    assert modules - names == set(), "add the package to [tool.setuptools] packages in pyproject.toml"
    assert configs - names == set(), "add the config group to [tool.setuptools] packages in pyproject.toml"
    bundled = {"booksegm/" + p.relative_to(src / "booksegm").as_posix() for p in (src / "booksegm" / "bundled").iterdir()}
    assert {"booksegm/bundled/books.pth", "booksegm/bundled/books.json"} <= bundled
    assert bundled - names == set(), "add the bundled files to [tool.setuptools] package-data in pyproject.toml"


def test_the_installed_wheel_trains_from_an_empty_folder(venv, tmp_path):
    where = run([venv / "bin" / "python", "-c", "import booksegm; print(booksegm.__file__)"], tmp_path)
    assert Path(where.stdout.strip()).is_relative_to(venv), where.stdout + where.stderr

    result = run([venv / "bin" / "python", "-m", "booksegm.train", *TINY_RUN], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    (run_dir,) = (tmp_path / "outputs" / "train" / "runs").iterdir()
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()


def test_booksegm_train_takes_overrides_and_multirun(venv, tmp_path):
    result = run([venv / "bin" / "booksegm", "train", "--multirun", *TINY_RUN, "trainer.limit_train_batches=1",
                  "seed=1,2"], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    (sweep,) = (tmp_path / "outputs" / "train" / "multiruns").iterdir()
    for job, seed in (("0", 1), ("1", 2)):
        assert f"seed={seed}" in yaml.safe_load((sweep / job / ".hydra" / "overrides.yaml").read_text())
        assert (sweep / job / "checkpoints" / "last.ckpt").is_file()


def test_the_other_hydra_commands_of_the_wheel_find_their_configs_and_give_hydra_help(venv, tmp_path):
    # one process, as each imports torch: Hydra mains run one after another
    script = ("from booksegm.cli.main import main\n"
              "for command in ('evaluate', 'predict', 'export'):\n"
              "    main([command, '--cfg', 'job', 'ckpt_path=given.ckpt'])\n"
              "main(['train', '--help'])\n")
    result = run([venv / "bin" / "python", "-c", script], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("ckpt_path: given.ckpt") == 3, result.stdout
    assert "train is powered by Hydra" in result.stdout, result.stdout


def test_booksegm_help_lists_every_command_in_one_line_each(venv, tmp_path):
    result = run([venv / "bin" / "booksegm", "--help"], tmp_path)
    assert result.returncode == 0, result.stderr
    listed = [line.split()[0] for line in result.stdout.splitlines() if line.startswith("  ")]
    assert listed == list(COMMANDS)
    assert set(COMMANDS) == {"train", "evaluate", "predict", "inventory", "serve", "export", "data", "anchors",
                             "bench", "sweep-report", "weights"}


def test_the_installed_wheel_predicts_with_its_bundled_model_and_lists_it(venv, tmp_path):
    Image.fromarray(render_scene(np.random.default_rng(3), 384, 288)[0]).save(tmp_path / "shelf.jpg")
    result = run([venv / "bin" / "booksegm", "predict", "shelf.jpg", "output_dir=pred"], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "using the bundled 'books' model" in result.stdout + result.stderr
    assert (tmp_path / "pred" / "overlay").is_dir() and (tmp_path / "pred" / "predictions_coco.json").is_file()
    listed = run([venv / "bin" / "booksegm", "weights"], tmp_path)
    assert listed.returncode == 0 and "(matches its card)" in listed.stdout, listed.stdout + listed.stderr


def test_an_unknown_command_is_one_line_and_exit_2(venv, tmp_path):
    result = run([venv / "bin" / "booksegm", "trian"], tmp_path)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "unknown command 'trian'" in result.stderr, result.stderr


def test_a_command_gives_its_own_help_through_the_installed_script(venv, tmp_path):
    result = run([venv / "bin" / "booksegm", "data", "--help"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert all(name in result.stdout for name in ("synth", "check", "convert")), result.stdout
