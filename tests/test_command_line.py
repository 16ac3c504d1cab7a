"""Hydra's command line as Hydra users write it, for every Hydra command: overrides before or after
the flags (--cfg job|hydra|all, --resolve, --info, --help, --hydra-help, -m/--multirun first or last).

Every form runs in one Python process (one torch import for all of them, a few seconds), each through
``booksegm COMMAND ARGS`` as a user types it; the multirun forms sweep two jobs that each stop at once
on a missing checkpoint, so a form that Hydra parsed reaches the command's own one-line error."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
from support import train_env

MARK = {"train": ("seed=7", "seed: 7"), **{c: ("score_threshold=0.37", "score_threshold: 0.37")
                                           for c in ("evaluate", "predict", "export")}}
BASE = {"train": ["+experiment=anchors_16_256"], "evaluate": ["ckpt_path=/no/such.ckpt"],
        "predict": ["ckpt_path=/no/such.ckpt", "input=/no/photos"],
        "export": ["ckpt_path=/no/such.ckpt", "format=onnx"]}
SWEEP = {"train": ["seed=1,2", "ckpt_path=/no/such.ckpt"],
         **{c: [*BASE[c], "score_threshold=0.5,0.6"] for c in ("evaluate", "predict", "export")}}
FORMS = {  # name: (flags before the overrides, flags after them, overrides: one run | a sweep | none)
    "cfg job last": ([], ["--cfg", "job"], "run"),
    "cfg job first": (["--cfg", "job"], [], "run"),
    "cfg hydra": ([], ["--cfg", "hydra"], "run"),
    "cfg all resolve": ([], ["--cfg", "all", "--resolve"], "run"),
    "resolve first": (["--resolve", "-c", "job"], [], "run"),
    "info last": ([], ["--info"], "run"),
    "info first": (["--info", "config"], [], "run"),
    "help last": ([], ["--help"], "run"),
    "hydra-help": (["--hydra-help"], [], "none"),  # Hydra composes only its own config here: no overrides
    "multirun first": (["-m"], [], "sweep"),
    "multirun last": ([], ["--multirun"], "sweep"),
}
CASES = [(command, form) for command in BASE for form in FORMS]


def argv(command: str, form: str) -> list[str]:
    before, after, kind = FORMS[form]
    overrides = {"run": [*BASE[command], MARK[command][0]], "sweep": SWEEP[command], "none": []}[kind]
    return [command, *before, *overrides, *after]


# each command line through booksegm's own dispatcher, in this one process; what it printed and its exit code
RUN_ALL = """
import contextlib, io, json, sys
from booksegm.cli.main import main
results = {}
for key, args in json.loads(sys.argv[1]).items():
    out, err, code = io.StringIO(), io.StringIO(), 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main(args)
        except SystemExit as exit:
            code = exit.code if isinstance(exit.code, int) else 1
        except Exception as error:  # what would be a traceback
            code, err = 1, io.StringIO(f"{type(error).__name__}: {error}")
    results[key] = {"code": code, "stdout": out.getvalue(), "stderr": err.getvalue()}
print(json.dumps(results))
"""


@pytest.fixture(scope="module")
def ran(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("command_line")
    lines = {f"{command}/{form}": argv(command, form) for command, form in CASES}
    result = subprocess.run([sys.executable, "-c", RUN_ALL, json.dumps(lines)], cwd=root, env=train_env(root),
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.splitlines()[-1])


@pytest.mark.parametrize("command, form", CASES)
def test_hydra_flags_and_overrides_in_any_order(ran, command, form):
    result = ran[f"{command}/{form}"]
    shown = f"booksegm {' '.join(argv(command, form))}\n{result['stderr'][-2000:]}"
    assert "unrecognized arguments" not in result["stderr"], shown
    if FORMS[form][2] == "sweep":  # the jobs launched; the first stops on its missing file, in one line
        assert result["code"] == 1 and "#0 : " in result["stdout"], shown
        assert re.fullmatch(r"booksegm: error: \S*/no/\S+: no such [a-z ]+", result["stderr"].splitlines()[-1]), shown
        return
    assert result["code"] == 0, shown
    marker = MARK[command][1]
    expected = {
        "cfg job last": [marker], "cfg job first": [marker], "resolve first": [marker],
        "cfg hydra": ["run:", "- " + MARK[command][0]], "cfg all resolve": ["hydra:", marker],
        "info last": ["Defaults List", marker], "info first": [marker],
        "help last": ["powered by Hydra", marker], "hydra-help": ["Hydra (1."],
    }[form]
    assert all(text in result["stdout"] for text in expected), f"{shown}\n{result['stdout'][-3000:]}"
    if "resolve" in form:
        assert "${" not in result["stdout"], result["stdout"][-3000:]
