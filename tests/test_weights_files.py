"""Bad model files: each way a ``ckpt_path`` or ``model.weights`` file can be wrong is one line
from every command, before data or model are built, and no file is unpickled beyond tensors and
plain values (``torch.load(weights_only=True)``)."""

from __future__ import annotations

import os
import warnings
import zipfile
from pathlib import Path

import pytest
import torch
from PIL import Image
from support import TINY, compose_config

from booksegm.cli.evaluate import evaluate
from booksegm.cli.export import ExportConfig, export
from booksegm.cli.predict import PredictConfig, predict
from booksegm.cli.train import train
from booksegm.model.build import ModelConfig, build_maskrcnn
from booksegm.model.checkpoint_file import CheckpointError
from booksegm.model.weights import load_initial_weights


class Custom:
    """A class of this test module: unpickling it would import and run code outside torch."""


class RunsCommand:
    """Unpickled, it would run a shell command: os.system, whose module torch blocks outright."""

    def __reduce__(self):
        return os.system, ("echo unpickled",)


def checkpoint_bytes(path: Path) -> bytes:
    torch.save({"state_dict": {"model.w": torch.arange(1000.0)}, "epoch": 3}, path)
    return path.read_bytes()


def damage_data_pkl(path: Path) -> None:
    """Overwrite the local header of the archive's pickle: its directory still lists it."""
    data = bytearray(checkpoint_bytes(path))
    with zipfile.ZipFile(path) as archive:
        offset = next(i for i in archive.infolist() if i.filename.endswith("data.pkl")).header_offset
    data[offset : offset + 30] = b"\xff" * 30
    path.write_bytes(bytes(data))


def write_torchscript(path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit's deprecation notices
        torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), str(path))


# case -> (how to make the file at the path, what the message says)
CASES = {
    "missing": (lambda p: None, "no such checkpoint file"),
    "folder": (lambda p: p.mkdir(), "a folder, not a checkpoint file"),
    "empty": (lambda p: p.write_bytes(b""), "the file is empty"),
    "text": (lambda p: p.write_text("epoch: 3\nbest: last.ckpt\n"), "a text file"),
    "truncated": (lambda p: p.write_bytes(checkpoint_bytes(p)[:2000]), "truncated or corrupted"),
    "corrupted": (damage_data_pkl, "truncated or corrupted"),
    "torchscript": (write_torchscript, "a TorchScript export"),
    "custom_class": (lambda p: torch.save({"state_dict": {}, "hyper_parameters": Custom()}, p),
                     "refused: loading it would execute arbitrary code"),
    "os_system": (lambda p: torch.save({"state_dict": {}, "hyper_parameters": RunsCommand()}, p),
                  f"refused: loading it would execute arbitrary code (it pickles {os.system.__module__}.system"),
}


def run_evaluate(ckpt: Path, tmp_path: Path) -> None:
    overrides = [f"ckpt_path={ckpt}", f"paths.output_dir={tmp_path}", "device=cpu"]
    evaluate(compose_config(*overrides, config_name="evaluate"), overrides)


def run_predict(ckpt: Path, tmp_path: Path) -> None:
    Image.new("RGB", (32, 32)).save(tmp_path / "photo.png")
    predict(PredictConfig(ckpt_path=str(ckpt), input=str(tmp_path / "photo.png"), output_dir=str(tmp_path / "out"),
                          device="cpu"))


def run_export(ckpt: Path, tmp_path: Path) -> None:
    export(ExportConfig(ckpt_path=str(ckpt), format="state_dict", output=str(tmp_path / "out.pth")))


def run_train(ckpt: Path, tmp_path: Path) -> None:
    train(compose_config(*TINY, f"ckpt_path={ckpt}"))  # raises CheckpointError before data or model


def run_initial_weights(path: Path, tmp_path: Path) -> None:
    model = build_maskrcnn(ModelConfig(backbone="resnet18"), num_classes=2)
    load_initial_weights(model, str(path), "resnet18")


COMMANDS = {"evaluate": run_evaluate, "predict": run_predict, "export": run_export, "train": run_train,
            "model.weights": run_initial_weights}


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("case", CASES)
def test_a_bad_model_file_is_one_line_before_anything_is_built(case, command, tmp_path, monkeypatch):
    monkeypatch.setenv("BOOKSEGM_ROOT", str(tmp_path))
    monkeypatch.setenv("BOOKSEGM_CACHE", str(tmp_path / "cache"))
    make, says = CASES[case]
    path = tmp_path / "given.ckpt"
    make(path)
    with pytest.raises(CheckpointError) as info:
        COMMANDS[command](path, tmp_path)
    message = str(info.value)
    assert says in message and str(path) in message and "\n" not in message, message
    assert "weights_only=False" not in message  # torch's advice, unsafe on a file from elsewhere
    if case == "custom_class":
        assert "weights_only=True" in message and f"{Custom.__module__}.Custom" in message
    if command == "model.weights":
        assert message.startswith("model.weights: ")
    assert not (tmp_path / "cache").exists() and not (tmp_path / "out").exists()  # no data read, nothing written
