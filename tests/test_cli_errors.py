"""A user's mistake reads the same from every command: one line ``booksegm: error: MESSAGE`` on
stderr, no traceback, exit 1 (2 for the argparse tools, as argparse's own errors), through
``booksegm.errors.cli_errors``; and every error a user can cause is a ``UserError``. Each bad input
here fails before data or a model is built, so the commands take seconds."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import sys

import pytest
from support import run_command

import booksegm
from booksegm.cli.anchors import main as anchors_main
from booksegm.cli.data import main as data_main
from booksegm.errors import UserError, cli_errors
from booksegm.training.interrupt import TrainingInterrupted

HYDRA_COMMANDS = ("train", "evaluate", "predict", "inventory", "export")
PHOTO_COMMANDS = ("predict", "inventory")  # these need an input
# raised and caught inside a reader, for one region it counts and skips: never reaches a user
INTERNAL = {"booksegm.data.records.SkipRegion", "booksegm.data.records.BadRegion"}


def assert_one_line(stderr: str, message: str) -> None:
    # other lines are Lightning's own notes ("Seed set to 42")
    lines = stderr.splitlines()
    assert "Traceback" not in stderr and lines[-1:] == [f"booksegm: error: {message}"], stderr[-3000:]
    assert sum("error" in line.lower() for line in lines) == 1, stderr[-3000:]


@pytest.mark.parametrize("command", HYDRA_COMMANDS)
def test_a_missing_checkpoint_is_the_same_line_from_every_command(command, tmp_path, synthetic_set):
    extra = [f"input={synthetic_set / 'images'}"] if command in PHOTO_COMMANDS else []
    result = run_command(command, tmp_path, "ckpt_path=/no/such.ckpt", *extra)
    assert result.returncode == 1, result.stderr[-3000:]
    assert_one_line(result.stderr, "/no/such.ckpt: no such checkpoint file")


@pytest.mark.parametrize("command, overrides, message", [
    ("train", ["data.val_fraction=2"], "data.val_fraction must be in [0, 1), got 2.0"),
    *[(command, ["ckpt_path=/no/such.ckpt", "score_threshold=2"], "score_threshold must lie in [0, 1], got 2.0")
      for command in ("evaluate", "predict", "export")],
])
def test_a_bad_config_value_is_one_line(command, overrides, message, tmp_path, synthetic_set):
    extra = [f"input={synthetic_set / 'images'}"] if command == "predict" else []
    result = run_command(command, tmp_path, *overrides, *extra)
    assert result.returncode == 1, result.stderr[-3000:]
    assert_one_line(result.stderr, message)


@pytest.mark.parametrize("run", [
    lambda path: data_main(["check", path]),
    lambda path: data_main(["convert", path, path + ".coco.json", "--to", "coco"]),
    lambda path: anchors_main([path]),
], ids=["data check", "data convert", "anchors"])
def test_the_argparse_tools_say_the_same_line_for_a_missing_file(run, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        run(str(tmp_path / "none.json"))
    assert exit_.value.code == 2
    assert capsys.readouterr().err == f"booksegm: error: {tmp_path / 'none.json'}: not found\n"


@pytest.mark.parametrize("signal_name, exit_code", [("SIGINT", 130), ("SIGTERM", 143)])
def test_an_error_with_its_own_exit_code_keeps_it(signal_name, exit_code, capsys):
    with pytest.raises(SystemExit) as exit_, cli_errors():
        raise TrainingInterrupted("stopped; resume with ckpt_path=last.ckpt", signal_name)
    assert exit_.value.code == exit_code
    assert capsys.readouterr().err == "booksegm: error: stopped; resume with ckpt_path=last.ckpt\n"


def test_other_exceptions_pass_through_with_their_traceback():
    with pytest.raises(KeyError), cli_errors():  # a bug is not the user's to fix: the traceback is wanted
        raise KeyError("bug")


def test_every_error_booksegm_defines_is_a_user_error():
    for module in pkgutil.walk_packages(booksegm.__path__, "booksegm."):
        importlib.import_module(module.name)
    defined = {f"{cls.__module__}.{cls.__qualname__}": cls for name in list(sys.modules) if name.startswith("booksegm.")
               for _, cls in inspect.getmembers(sys.modules[name], inspect.isclass)
               if issubclass(cls, BaseException) and cls.__module__ == name}
    assert {"booksegm.config.ConfigError", "booksegm.model.checkpoint_file.CheckpointError",
            "booksegm.training.interrupt.TrainingInterrupted"} < defined.keys()
    assert INTERNAL < defined.keys()
    assert sorted(name for name, cls in defined.items() if name not in INTERNAL and not issubclass(cls, UserError)) == []


def test_a_bad_synthetic_set_request_is_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        data_main(["synth", str(tmp_path / "set"), "--num-images", "-1"])
    assert stop.value.code == 2
    assert capsys.readouterr().err.strip() == (
        "booksegm: error: need num_images >= 0 and at least 32x32 pixels, got -1 images of 320x240")
