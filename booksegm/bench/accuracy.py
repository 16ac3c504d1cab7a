"""Accuracy benchmark: ``python -m booksegm.bench accuracy [--recipe NAME=OVERRIDES ...]``.

Trains each recipe with ``booksegm.train`` in turn (one at a time: each owns the cores), on the
same machine, back to back, and prints their validation mask AP, AP50, box AP, steps
and wall time side by side; ``learning_curve.png`` draws mask AP against training time for all of
them, from each run's TensorBoard log. Without ``--recipe`` it compares
the default (``python -m booksegm.train``) with the baseline it replaced
(``+experiment=cpu_default_v1``). ``--max-minutes`` or ``--max-steps`` cut every recipe short for a
fixed budget; a recipe's LR schedule still assumes its full length then.

``python -m booksegm.bench curves NAME=RUN_DIR ... --out learning_curve.png`` draws the same
picture for runs that already exist (notebooks/figures/learning_curve.png).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from booksegm.config import ConfigError
from booksegm.viz.curves import plot_learning_curves

DEFAULT_RECIPES = ("default=", "cpu_default_v1=+experiment=cpu_default_v1")
METRICS = ("val/mask_AP", "val/mask_AP50", "val/box_AP")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m booksegm.bench accuracy", description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", action="append", metavar="NAME=OVERRIDES",
                        help="a recipe: a name, '=', then booksegm.train overrides separated by spaces; repeatable "
                             f"(default: {' and '.join(repr(r) for r in DEFAULT_RECIPES)})")
    parser.add_argument("--max-minutes", type=float, help="stop each recipe after this many minutes of training")
    parser.add_argument("--max-steps", type=int, help="stop each recipe after this many optimizer steps")
    parser.add_argument("--out", type=Path, default=Path("outputs/bench_accuracy"), help="one run folder per recipe")
    parser.add_argument("overrides", nargs="*", help="booksegm.train overrides added to every recipe")
    return parser.parse_args(argv)


def parse_recipe(text: str) -> tuple[str, list[str]]:
    name, sep, overrides = text.partition("=")
    if not sep or not name or "/" in name:
        raise ConfigError(f"--recipe {text!r} is not NAME=OVERRIDES")
    return name, overrides.split()


def budget_overrides(args: argparse.Namespace) -> list[str]:
    overrides = []
    if args.max_minutes is not None:
        seconds = round(args.max_minutes * 60)
        overrides.append(f"+trainer.max_time=00:{seconds // 3600:02d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}")
    if args.max_steps is not None:
        overrides.append(f"+trainer.max_steps={args.max_steps}")
    return overrides


def run_recipe(name: str, overrides: list[str], run_dir: Path) -> dict:
    """One training run in its own process; its metrics.json, with the wall time seen from outside."""
    command = [sys.executable, "-m", "booksegm.train", f"hydra.run.dir={run_dir}", *overrides]
    print(f"[{name}] {' '.join(command[1:])}", flush=True)
    started = time.perf_counter()
    result = subprocess.run(command, env={**os.environ, "HYDRA_FULL_ERROR": "0"})
    wall = time.perf_counter() - started
    metrics_path = run_dir / "metrics.json"
    if result.returncode != 0 or not metrics_path.is_file():
        return {"name": name, "error": f"exit code {result.returncode}", "wall_s": wall}
    summary = json.loads(metrics_path.read_text())
    return {"name": name, "wall_s": wall, "last": summary.get("last", {})}


def format_table(results: list[dict]) -> str:
    header = ["recipe", "mask AP", "mask AP50", "box AP", "steps", "wall", "status"]
    rows = []
    for r in results:
        last = r.get("last") or {}
        rows.append([r["name"], *(fmt(last.get(m)) for m in METRICS), str(last.get("step", "-")),
                     f"{r['wall_s']:.0f} s", "failed: " + r["error"] if "error" in r else "ok"])
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    left = {0, len(header) - 1}  # names and status read left to right; figures align right
    lines = ["  ".join(c.ljust(w) if i in left else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))).rstrip()
             for row in [header, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def fmt(value) -> str:
    return "-" if value is None else f"{value:.4f}"


def learning_curve(run_dir: Path) -> list[tuple[float, float]]:
    """(minutes since the run's log began, validation mask AP) for each validation of a run."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    if not (run_dir / "tensorboard").is_dir():  # a run that failed before training
        return []
    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    if "val/mask_AP" not in events.Tags()["scalars"]:
        return []
    start = events.FirstEventTimestamp()
    return [((e.wall_time - start) / 60, e.value) for e in events.Scalars("val/mask_AP")]


def curves_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m booksegm.bench curves",
                                     description="learning curves of existing runs, from their TensorBoard logs")
    parser.add_argument("runs", nargs="+", metavar="NAME=RUN_DIR")
    parser.add_argument("--out", type=Path, default=Path("learning_curve.png"))
    args = parser.parse_args(argv)
    named = [text.partition("=") for text in args.runs]
    if any(not name or not sep for name, sep, _ in named):
        parser.error("each run is NAME=RUN_DIR")
    curves = {name: learning_curve(Path(run_dir)) for name, _, run_dir in named}
    for name, points in curves.items():
        print(f"{name}: " + (", ".join(f"{m:.1f} min {ap:.4f}" for m, ap in points) or "no validation logged"))
    print(f"learning curves: {plot_learning_curves(curves, args.out)}")
    return 0


def main(argv=None) -> int:
    args = parse_args(argv)
    recipes = [parse_recipe(text) for text in (args.recipe or DEFAULT_RECIPES)]
    common = [*args.overrides, *budget_overrides(args)]
    results = [run_recipe(name, [*overrides, *common], args.out.resolve() / name) for name, overrides in recipes]
    print(format_table(results))
    curves = {r["name"]: learning_curve(args.out.resolve() / r["name"]) for r in results}
    print(f"learning curves: {plot_learning_curves(curves, args.out / 'learning_curve.png')}")
    return 1 if any("error" in r for r in results) else 0
