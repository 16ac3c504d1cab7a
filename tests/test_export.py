"""Export: each format loads back and matches the eager model, with and without detections."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from support import compose_config

from booksegm.cli.export import (
    TORCHVISION_RECIPE,
    ExportConfig,
    compare,
    eager_detector,
    export,
    load_exported,
)
from booksegm.config import ConfigError, to_dataclass
from booksegm.data.synthetic import render_scene
from booksegm.inference import load_model, prepare_image, set_detection_limits
from booksegm.model.tta import TTAMaskRCNN
from booksegm.training.module import BookSegmModule

TINY_MODEL = {"backbone": "resnet18", "rpn_pre_nms_top_n_test": 50, "rpn_post_nms_top_n_test": 20,
              "box_detections_per_img": 10}
SIZE = 96  # the run validated on 96 px squares


def write_checkpoint(run: Path, model: dict) -> Path:
    """A Lightning checkpoint of an untrained model, in a run folder whose config resized to 96 px."""
    (run / ".hydra").mkdir(parents=True)
    resize = f"{{mode: square, min_dim: {SIZE}, max_dim: {SIZE}}}"
    (run / ".hydra" / "config.yaml").write_text(f"data:\n  resize: {resize}\n")
    torch.manual_seed(0)
    module = BookSegmModule(model=model, optim={}, class_names=["book"])
    trainer = pl.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False)
    trainer.strategy.connect(module)
    trainer.save_checkpoint(run / "checkpoints" / "tiny.ckpt")
    return run / "checkpoints" / "tiny.ckpt"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return write_checkpoint(tmp_path_factory.mktemp("run"), TINY_MODEL)


@pytest.fixture(scope="module")
def images(checkpoint) -> dict[str, torch.Tensor]:
    """Model inputs: a book scene and a flat grey picture, 96 px as validation sized them."""
    loaded = load_model(checkpoint)
    scene = render_scene(np.random.default_rng(1), 128, 96)[0]
    grey = np.full((SIZE, SIZE, 3), 128, np.uint8)
    return {"scene": prepare_image(scene, loaded.resize)[0], "grey": prepare_image(grey, loaded.resize)[0]}


@pytest.fixture(scope="module")
def score_threshold(checkpoint, images) -> float:
    """Halfway between the best scores on the two pictures: the untrained model then detects
    something on one of them and nothing on the other."""
    loaded = load_model(checkpoint)
    set_detection_limits(loaded.model, 0.0, None)
    with torch.no_grad():
        best = [loaded.model([image])[0]["scores"].max().item() for image in images.values()]
    assert abs(best[0] - best[1]) > 1e-3
    return (best[0] + best[1]) / 2


@pytest.fixture(scope="module")
def reference(checkpoint, score_threshold):
    loaded = load_model(checkpoint)
    set_detection_limits(loaded.model, score_threshold, None)
    return eager_detector(loaded)


@pytest.fixture(scope="module")
def exported(checkpoint, score_threshold, tmp_path_factory) -> dict[str, tuple[Path, str]]:
    """Each format exported once by the export command: (file, what it printed)."""
    folder = tmp_path_factory.mktemp("exported")
    files = {}
    for format in ("state_dict", "torchscript", "onnx"):
        output, printed = folder / f"books.{format}", io.StringIO()
        with contextlib.redirect_stdout(printed):
            assert export(ExportConfig(ckpt_path=str(checkpoint), format=format, output=str(output),
                                       score_threshold=score_threshold, timing_runs=1)).ok
        files[format] = output, printed.getvalue()
    return files


@pytest.mark.parametrize("format", ["state_dict", "torchscript", "onnx"])
def test_export_matches_the_eager_model_with_and_without_detections(format, exported, images, reference):
    output, printed = exported[format]
    assert f"{format}: wrote {output}" in printed and "parity with the eager model" in printed
    assert re.search(rf"inference on CPU: eager [\d.]+ ms, {format} [\d.]+ ms", printed)  # timings of both
    detector = load_exported(format, output)
    counts = []
    with torch.no_grad():
        for image in images.values():
            parity = compare(reference(image), detector(image))
            assert parity.ok, f"{format}: {parity}"
            counts.append(parity.detections)
    assert min(counts) == 0 and max(counts) > 0  # one picture with detections, one without


@pytest.mark.parametrize("format", ["torchscript", "onnx"])
def test_maskness_scoring_and_the_mask_threshold_travel_with_the_exported_model(format, images, tmp_path):
    checkpoint = write_checkpoint(tmp_path / "run", {**TINY_MODEL, "maskness_scoring": True, "maskness_power": 2.0,
                                                     "mask_threshold": 0.45})
    output = tmp_path / f"books.{format}"
    with contextlib.redirect_stdout(io.StringIO()):
        assert export(ExportConfig(ckpt_path=str(checkpoint), format=format, output=str(output),
                                   score_threshold=0.0, timing_runs=1)).ok
    loaded = load_model(checkpoint)
    set_detection_limits(loaded.model, 0.0, None)
    with torch.no_grad():
        reference = eager_detector(loaded)(images["scene"])
        parity = compare(reference, load_exported(format, output)(images["scene"]))
    assert parity.ok and parity.detections > 0, parity
    assert reference["scores"].max() < 0.2  # class score ~0.5 x maskness² ~0.25: the rescoring ran


def test_a_state_dict_keeps_tta_and_a_graph_runs_one_view_with_a_warning(tmp_path, caplog):
    checkpoint = write_checkpoint(tmp_path / "run", {**TINY_MODEL, "tta_scales": [1.0, 1.25], "tta_hflip": True})
    assert isinstance(load_model(checkpoint).model, TTAMaskRCNN)
    outputs = {}
    for format in ("state_dict", "torchscript"):
        outputs[format] = tmp_path / f"books.{format}"
        with caplog.at_level(logging.WARNING), contextlib.redirect_stdout(io.StringIO()):
            assert export(ExportConfig(ckpt_path=str(checkpoint), format=format, output=str(outputs[format]),
                                       score_threshold=0.0, timing_runs=1)).ok
    assert "the torchscript graph runs the image as given, without model.tta_scales=[1.0, 1.25]" in caplog.text
    assert "state_dict graph" not in caplog.text
    assert isinstance(load_model(outputs["state_dict"]).model, TTAMaskRCNN)
    image = torch.rand(3, 96, 96)
    one_view = load_model(checkpoint, test_time_augmentation=False)
    set_detection_limits(one_view.model, 0.0, None)
    with torch.no_grad():
        parity = compare(one_view.model([image])[0], load_exported("torchscript", outputs["torchscript"])(image))
    assert parity.ok and parity.detections > 0, parity  # the graph is the single view


def test_onnx_is_opset_17_and_takes_any_image_size(exported, images, reference):
    import onnx

    output, _ = exported["onnx"]
    assert onnx.load(str(output)).opset_import[0].version >= 17
    detector = load_exported("onnx", output)
    others = [torch.rand(3, 64, 128, generator=torch.Generator().manual_seed(0)), images["grey"][:, :64, :]]
    with torch.no_grad():
        parities = [compare(reference(image), detector(image)) for image in others]
    assert all(p.ok for p in parities), parities
    assert any(p.detections for p in parities)


def test_state_dict_loads_with_torchvision_alone(exported, images, reference, tmp_path):
    """The README recipe, in a process where importing booksegm would fail."""
    weights, _ = exported["state_dict"]
    spec = json.loads(weights.with_suffix(".json").read_text())
    assert spec["maskrcnn"]["min_size"] == spec["maskrcnn"]["max_size"] == SIZE  # 96 px in: no resizing
    torch.save(list(images.values()), tmp_path / "images.pt")
    script = "\n".join([
        "import sys",
        "sys.modules['booksegm'] = None  # any import of booksegm now fails",
        TORCHVISION_RECIPE.format(spec=str(weights.with_suffix(".json")), weights=str(weights)),
        "with torch.no_grad():",
        "    outputs = [model([image])[0] for image in torch.load('images.pt')]",
        "torch.save(outputs, 'outputs.pt')",
    ])
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                            env={**os.environ, "OMP_NUM_THREADS": "1"}, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    with torch.no_grad():
        parities = [compare(reference(image), output)
                    for image, output in zip(images.values(), torch.load(tmp_path / "outputs.pt"), strict=True)]
    assert all(p.ok for p in parities), parities
    assert min(p.detections for p in parities) == 0 < max(p.detections for p in parities)


def test_the_readme_shows_the_recipe_the_test_runs():
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert TORCHVISION_RECIPE.format(spec="last.json", weights="last.pth") in readme


def test_a_file_that_is_not_a_checkpoint_is_named(tmp_path):
    bad = tmp_path / "notes.ckpt"
    bad.write_text("not a checkpoint")
    with pytest.raises(ValueError, match="notes.ckpt: not a readable PyTorch checkpoint"):
        export(ExportConfig(ckpt_path=str(bad), format="onnx"))


def test_export_config_composes(checkpoint):
    cfg = compose_config(f"ckpt_path={checkpoint}", "format=torchscript", config_name="export")
    settings = to_dataclass(ExportConfig, {k: cfg[k] for k in ExportConfig.__dataclass_fields__})
    settings.validate()
    assert settings.output_path() == checkpoint.with_name("tiny.torchscript.pt")


@pytest.mark.parametrize("existing", ["books.pth", "books.json"])  # a state dict is written with its JSON
def test_an_existing_output_is_refused_before_the_model_is_loaded(existing, tmp_path):
    (tmp_path / existing).write_text("earlier")
    with pytest.raises(ConfigError, match=f"{tmp_path / existing} exists: .*overwrite=true"):
        # no such checkpoint: the refusal comes before the model is loaded
        export(ExportConfig(ckpt_path=str(tmp_path / "none.ckpt"), format="state_dict",
                            output=str(tmp_path / "books.pth")))
    assert (tmp_path / existing).read_text() == "earlier"


@pytest.mark.parametrize("ckpt, output", [
    ("m.ckpt", "m.ckpt"),  # a Lightning checkpoint replaced by its state dict would no longer resume
    ("m.pth", None),  # a state dict's default output is itself
    ("m.ckpt", "link.ckpt"),  # the same file through a link
])
def test_export_never_writes_over_the_model_it_exports(ckpt, output, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / ckpt).write_bytes(b"the model")
    (tmp_path / "link.ckpt").symlink_to(tmp_path / ckpt)
    with pytest.raises(ConfigError, match=r"is the model being exported .*overwrite=true never replaces the input"):
        # refused before the model is loaded: the file need not even be one
        export(ExportConfig(ckpt_path=str(tmp_path / ckpt), format="state_dict", output=output, overwrite=True))
    assert (tmp_path / ckpt).read_bytes() == b"the model"


def test_overwrite_replaces_an_existing_output(checkpoint, tmp_path):
    output = tmp_path / "books.pth"
    output.write_text("earlier")
    export(ExportConfig(ckpt_path=str(checkpoint), format="state_dict", output=str(output), overwrite=True,
                        timing_runs=1))
    assert load_model(output).class_names == ["book"]


def test_the_command_refuses_an_existing_output_in_one_line(checkpoint, tmp_path):
    output = tmp_path / "books.onnx"
    output.write_text("earlier")
    result = subprocess.run(
        [sys.executable, "-m", "booksegm.export", f"ckpt_path={checkpoint}", f"output={output}"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1", "BOOKSEGM_ROOT": str(tmp_path)}, check=False,
    )
    assert result.returncode != 0
    assert f"booksegm: error: {output} exists: " in result.stderr and "overwrite=true" in result.stderr
    assert "Traceback" not in result.stderr and output.read_text() == "earlier"
