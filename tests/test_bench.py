"""The benchmark modules run end to end and print every figure (smoke tests, not timings)."""

from __future__ import annotations

import argparse
import json
import re
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from support import TINY, compose_config, select_values, train_env

from booksegm.bench.__main__ import main, model_settings
from booksegm.bench.latency import scaled_photos
from booksegm.config import ConfigError
from booksegm.data.synthetic import render_scene
from booksegm.training.module import build_optimizer


def test_bench_prints_synth_data_train_and_predict_figures(capsys):
    assert main(["--steps", "2", "--warmup-steps", "1", "--num-images", "4", "--image-size", "64",
                 "--batch-size", "2", "--backbone", "resnet18", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^synth .* [\d.]+ images/s", out, re.M)
    assert re.search(r"^data .* [\d.]+ images/s", out, re.M)
    assert re.search(r"^train +booksegm \(Lightning\) +[\d.]+ s/step", out, re.M)
    assert re.search(r"^train +plain torchvision loop +[\d.]+ s/step", out, re.M)
    assert re.search(r"^predict +booksegm [\d.]+ images/s, plain torchvision [\d.]+ images/s", out, re.M)


def test_booksegm_side_trains_with_the_plain_loops_optimizer():
    # the plain loop uses torch.optim.SGD; the comparison is only fair if booksegm's side does too,
    # whatever the training default (AdamW) is
    _, optim = model_settings(argparse.Namespace(backbone="resnet18"))
    assert type(build_optimizer(torch.nn.Linear(2, 2), optim, optim.lr)) is torch.optim.SGD


def test_accuracy_bench_trains_each_recipe_and_prints_them_side_by_side(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("BOOKSEGM_ROOT", str(tmp_path))
    out = tmp_path / "bench"
    code = main(["accuracy", "--recipe", "tiny=train.lr=0.002", "--recipe", "broken=model.norm=layer",
                 "--max-steps", "3", "--out", str(out), *TINY])
    printed = capsys.readouterr().out
    assert code == 1  # one recipe failed: the exit status says so
    assert re.search(r"^tiny +[\d.]+ +[\d.]+ +[\d.]+ +3 +\d+ s +ok$", printed, re.M), printed
    assert re.search(r"^broken +- +- +- +- +\d+ s +failed: exit code [1-9]$", printed, re.M), printed
    assert (out / "tiny" / "metrics.json").is_file() and (out / "learning_curve.png").is_file()

    assert main(["curves", f"tiny={out / 'tiny'}", "--out", str(tmp_path / "curve.png")]) == 0
    assert re.search(r"^tiny: [\d.]+ min 0\.\d{4}$", capsys.readouterr().out, re.M)
    assert (tmp_path / "curve.png").stat().st_size > 0


@pytest.mark.slow  # two tiny training runs, one of 2 DDP processes: about a minute on 2 cores
def test_throughput_bench_trains_with_1_and_2_processes_and_predicts_at_each_batch_size(tmp_path, capsys, monkeypatch):
    for name, value in train_env(tmp_path).items():
        monkeypatch.setenv(name, value)
    assert main(["throughput", "--steps", "1", "--warmup-steps", "1", "--batch-sizes", "1", "2", "--photos", "4",
                 *TINY]) == 0
    out = capsys.readouterr().out
    # images of every process: 1 timed step of batch 2 on each
    assert re.search(r"^train +1 process +[\d.]+ images/s +\(2 images in [\d.]+ s, batch 2 a process", out, re.M), out
    assert re.search(r"^train +2 processes +[\d.]+ images/s +\(4 images in [\d.]+ s, batch 2 a process", out, re.M), out
    for batch in (1, 2):
        assert re.search(rf"^predict +batch {batch} +[\d.]+ photos/s +\(4 photos of 128x96 in", out, re.M), out


def test_latency_bench_times_the_model_per_photo_beside_the_peer_when_it_is_installed(tmp_path, capsys, monkeypatch):
    photos = tmp_path / "photos"
    photos.mkdir()
    for seed, size in enumerate(((120, 80), (90, 160))):
        Image.fromarray(render_scene(np.random.default_rng(seed), *size)[0]).save(photos / f"shelf{seed}.jpg")
    (photos / "notes.txt").write_text("not a photo")
    monkeypatch.setitem(sys.modules, "ultralytics", None)  # not installed: the line says how to get it
    assert main(["latency", str(photos), "--photos", "5", "--repeats", "1", "--size", "64"]) == 0
    out = capsys.readouterr().out
    assert "2 photos of" in out and "(the first 64x43), longer side 64 px" in out, out
    assert re.search(r"^booksegm books.pth \(square 448 px, 1 view\) +median +[\d.]+ s a photo, mean +[\d.]+ s, +"
                     r"[\d.]+ photos/s$", out, re.M), out
    assert "yolov8n-seg: not measured (pip install ultralytics" in out

    seen = []

    class YOLO:  # Ultralytics' interface: built from the architecture file, predict on BGR arrays
        def __init__(self, model, task):
            assert (model, task) == ("yolov8n-seg.yaml", "segment")

        def predict(self, image, imgsz, device, verbose):
            seen.append((image, imgsz, device))

    monkeypatch.setitem(sys.modules, "ultralytics", types.SimpleNamespace(YOLO=YOLO))
    assert main(["latency", str(photos), "--photos", "1", "--repeats", "2", "--size", "64"]) == 0
    assert re.search(r"^yolov8n-seg \(Ultralytics, untrained, imgsz 64\) +median", capsys.readouterr().out, re.M)
    (first,) = scaled_photos(photos, 1, 64)  # what booksegm's side ran on
    assert first.shape == (43, 64, 3) and not np.array_equal(first, first[..., ::-1])
    assert len(seen) == 3 and all(imgsz == 64 and device == "cpu" for _, imgsz, device in seen)  # warm-up + 2
    assert all(np.array_equal(image, first[..., ::-1]) for image, _, _ in seen)  # the same photo, blue first (BGR)


@pytest.mark.slow  # three tiny training runs and a suggest: 1 to 6 minutes on 2 shared cores
def test_suggest_bench_fine_tunes_on_the_suggested_and_a_random_pick_and_prints_both(tmp_path, capsys, monkeypatch):
    for name, value in train_env(tmp_path).items():
        monkeypatch.setenv(name, value)
    out = tmp_path / "bench"
    tiny = [o for o in TINY if not o.startswith(("trainer.max_epochs", "trainer.check_val_every_n_epoch"))]
    assert main(["suggest", "--pool", "4", "--val", "2", "--k", "2", "--seeds", "0", "--start-epochs", "1",
                 "--finetune-epochs", "1", "--width", "128", "--height", "96", "--out", str(out), *tiny]) == 0
    printed = capsys.readouterr().out
    assert re.search(r"^start model: the default recipe for 1 epochs, val mask AP 0\.\d{4}$", printed, re.M), printed
    for row in ("0", "mean"):
        assert re.search(rf"^{row} +0\.\d{{4}} +0\.\d{{4}} +[+-]0\.\d{{4}} +\d+ +[\d.]+$", printed, re.M), printed
    # the suggested pick is the project's photos, most unsure first; each fine-tune trained on its own pick
    project = json.loads((out / "suggested_via.json").read_text())
    picked = [project["_via_img_metadata"][key]["filename"] for key in project["_via_image_id_list"]]
    suggested = json.loads((out / "picks" / "suggested_seed0.json").read_text())
    assert [Path(entry["filename"]).name for entry in suggested.values()] == picked
    for arm in ("suggested", "random"):
        assert "data: 2 training, 2 validation images" in (out / "finetune" / f"{arm}_seed0" / "train.log").read_text()
    assert "data: 10 training, 2 validation images" in (out / "start" / "train.log").read_text()


def test_suggest_bench_renders_its_pool_with_packed_shelves_and_refuses_a_pool_rendered_otherwise(tmp_path):
    from booksegm.bench.suggest import parse_args, rendered

    size = ["--width", "96", "--height", "64"]
    packed = rendered(tmp_path / "pool", 3, 1, parse_args(["--packed-share", "1.0", *size]))
    plain = rendered(tmp_path / "plain", 3, 1, parse_args(size))
    assert json.loads((tmp_path / "pool" / "render.json").read_text())["packed_share"] == 1.0
    assert [e["regions"] for e in packed.values()] != [e["regions"] for e in plain.values()]
    assert all(Path(e["filename"]).is_absolute() and Path(e["filename"]).is_file() for e in packed.values())
    with pytest.raises(ConfigError, match=r"pool was rendered with other settings \(packed_share 1.0 there, 0.0 asked\)"):
        rendered(tmp_path / "pool", 3, 1, parse_args(size))
    with pytest.raises(ConfigError, match=r"--packed-share must be in \[0, 1\], got 1.5"):
        parse_args(["--packed-share", "1.5"])


# booksegm's CPU default until 0.1 (commit 90882fe), the baseline `bench accuracy` measures against
PREVIOUS_DEFAULT = {
    "model.backbone": "resnet50", "model.norm": "batch", "model.fpn_channels": 256, "model.box_head_dim": 1024,
    "model.mask_head_convs": 4, "model.mask_head_channels": 256, "model.box_batch_size_per_image": 32,
    "model.box_positive_fraction": 0.25, "model.maskness_scoring": False, "model.box_nms_thresh": 0.5,
    "model.tta_scales": [1.0], "model.tta_hflip": False,
    "model.anchors.sizes": [12, 24, 48, 96, 192], "model.anchors.ratios": [0.18, 0.38, 1.8], "data.batch_size": 2,
    "data.augment.vflip": 0.5, "data.augment.rotate_p": 0.5, "data.augment.scale_p": 0.0,
    "data.synthetic.num_images": 240, "train.optimizer": "adamw", "train.lr": 0.0004, "train.warmup_steps": 20,
    "train.batch_threads": 1,
    "trainer.max_epochs": 2, "trainer.check_val_every_n_epoch": 1, "callbacks.ema": None,
}


def test_cpu_default_v1_still_composes_the_previous_default():
    # a change to today's default must not leak into the baseline it is measured against
    assert select_values(compose_config("+experiment=cpu_default_v1"), PREVIOUS_DEFAULT) == PREVIOUS_DEFAULT
