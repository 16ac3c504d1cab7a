"""Does ``booksegm data suggest`` pick photos worth labelling? ``python -m booksegm.bench suggest [--k 20 ...]``.

On the synthetic generator, from one weak model:

1. the start model: the default recipe (``booksegm train``, its 240 rendered photos, seed 0) cut
   to ``--start-epochs``, validated on the fixed validation set below;
2. an unlabelled pool (``--pool`` photos rendered from seed ``--pool-seed``) and a validation set
   (``--val`` photos, seed ``--val-seed``), both 256x192 by default, as the default set; with
   ``--packed-share`` that share of their bookcases is seen close up with packed rows
   (``data.synthetic.packed_share``), which the start model never saw: photos of a user's own
   shelves, some like what the model knows and some not;
3. ``booksegm data suggest`` ranks the pool with the start model; its top ``--k`` photos are one
   pick, and for each seed ``--k`` photos drawn at random from the pool are another;
4. the start model is fine-tuned on each pick (its labels, as the generator drew them) for the same
   number of epochs with the run's ``seed`` set to the seed, and validated on the validation set.

Prints each fine-tune's validation mask AP, the suggested pick's against the random one's per seed
and their means, and how many books each pick holds (labelling them is the cost). Every step
writes into ``--out``; a step whose result is there already (the start checkpoint, a
fine-tune's ``metrics.json``) is read instead of run again, so delete ``--out`` to start over, or
give another ``--name`` with other ``--suggest-args`` to compare another ranking with the same
start model and random picks (only its suggest and fine-tunes run). Asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import numpy as np

from booksegm.config import ConfigError
from booksegm.data.formats.options import ReaderOptions
from booksegm.data.formats.via import read_via
from booksegm.data.synthetic import generate_dataset
from booksegm.data.synthetic.writer import render_settings, rendered_otherwise


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m booksegm.bench suggest", description=__doc__.splitlines()[0])
    parser.add_argument("--k", type=int, default=20, help="photos picked for labelling, by suggest and at random")
    parser.add_argument("--pool", type=int, default=200, help="unlabelled photos rendered to pick from")
    parser.add_argument("--val", type=int, default=60, help="validation photos every model is scored on")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2],
                        help="seeds of the random picks and of the fine-tunes (one of each per seed)")
    parser.add_argument("--start-epochs", type=int, default=10, help="epochs of the default recipe for the start model")
    parser.add_argument("--finetune-epochs", type=int, default=20, help="epochs over the k photos of each fine-tune")
    parser.add_argument("--finetune-lr", type=float, default=0.001, help="peak LR of each fine-tune")
    parser.add_argument("--pool-seed", type=int, default=1, help="render seed of the pool (the start set's is 0)")
    parser.add_argument("--val-seed", type=int, default=2, help="render seed of the validation set")
    parser.add_argument("--width", type=int, default=256, help="pool and validation photo width, px (the default's)")
    parser.add_argument("--height", type=int, default=192, help="pool and validation photo height, px")
    parser.add_argument("--packed-share", type=float, default=0.0,
                        help="share of the pool's and validation's bookcases rendered close up with packed rows "
                             "(the start model's set has none)")
    parser.add_argument("--suggest-args", default="",
                        help="more options for booksegm data suggest, in one string (e.g. '--aggregate sum')")
    parser.add_argument("--name", default="suggested",
                        help="the suggested pick's name in the table and the files: another name with other "
                             "--suggest-args adds a pick beside the runs already in --out")
    parser.add_argument("--out", type=Path, default=Path("outputs/bench_suggest"), help="every set, pick and run")
    parser.add_argument("overrides", nargs="*", help="booksegm.train overrides added to every training run")
    args = parser.parse_args(argv)
    if args.k < 1 or args.pool < args.k or args.val < 1 or min(args.start_epochs, args.finetune_epochs) < 1:
        raise ConfigError("need 1 <= --k <= --pool, --val >= 1 and at least one epoch for each run")
    if not 0.0 <= args.packed_share <= 1.0:
        raise ConfigError(f"--packed-share must be in [0, 1], got {args.packed_share}")
    if not args.name.isidentifier() or args.name == "random":
        raise ConfigError(f"--name {args.name!r}: a word of letters, digits and _, not 'random'")
    return args


def rendered(folder: Path, count: int, seed: int, args: argparse.Namespace) -> dict:
    """A synthetic set in ``folder`` (rendered once), as its VIA entries with absolute image paths,
    so that a file naming them reads from anywhere."""
    json_path = folder / "via_region_data.json"
    if json_path.is_file():
        changed = rendered_otherwise(folder, render_settings(count, seed, args.width, args.height, "photo",
                                                              args.packed_share, None, None))
        if changed:
            raise ConfigError(f"{folder} was rendered with other settings ({changed}): give another --out, or delete it")
    else:
        generate_dataset(folder, count, seed=seed, width=args.width, height=args.height, progress=False,
                         packed_share=args.packed_share)
    entries = json.loads(json_path.read_text(encoding="utf-8"))
    for entry in entries.values():
        entry["filename"] = str((folder / "images" / entry["filename"]).resolve())
    return entries


def write_entries(entries: dict, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(entries), encoding="utf-8")
    return path


def run(command: list[str], log: Path) -> None:
    """A booksegm command in its own process, its output in ``log``."""
    print(f"  $ {' '.join(command[1:])}", flush=True)
    with open(log, "w", encoding="utf-8") as out:
        result = subprocess.run(command, check=False, stdout=out, stderr=subprocess.STDOUT,
                                env={**os.environ, "HYDRA_FULL_ERROR": "0"})
    if result.returncode != 0:
        raise ConfigError(f"{command[2]} failed (exit code {result.returncode}): see {log}")


def train(run_dir: Path, overrides: list[str], common: list[str]) -> dict:
    """``booksegm train`` into ``run_dir`` (unless it finished there before): its last validation, wall time."""
    metrics = run_dir / "metrics.json"
    if not metrics.is_file():
        run_dir.mkdir(parents=True, exist_ok=True)
        run([sys.executable, "-m", "booksegm.train", f"hydra.run.dir={run_dir}", *overrides, *common],
            run_dir.with_suffix(".log"))
    summary = json.loads(metrics.read_text())
    return {**summary["last"], "wall_s": summary["wall_time_s"]}


def suggested(start: Path, pool: Path, args: argparse.Namespace, out: Path) -> list[str]:
    """The file names ``booksegm data suggest`` puts in its project, most unsure first."""
    project = out / f"{args.name}_via.json"
    if not project.is_file():
        run([sys.executable, "-m", "booksegm.data", "suggest", str(pool), "--ckpt", str(start), "-k", str(args.k),
             "--out", str(project), *args.suggest_args.split()], out / f"{args.name}.log")
    return [record.file_name for record in read_via(project, ReaderOptions(image_root=pool)).records]


def book_count(entries: dict) -> int:
    return sum(len(entry["regions"]) for entry in entries.values())


def format_table(rows: list[dict], name: str) -> str:
    header = ["seed", name, "random", "difference", f"books {name}", "books random"]
    lines = [[str(r["seed"]), f"{r[name]:.4f}", f"{r['random']:.4f}", f"{r[name] - r['random']:+.4f}",
              str(r[f"books_{name}"]), str(r["books_random"])] for r in rows]
    mean = {key: statistics.mean(r[key] for r in rows) for key in (name, "random", "books_random")}
    lines.append(["mean", f"{mean[name]:.4f}", f"{mean['random']:.4f}", f"{mean[name] - mean['random']:+.4f}",
                  str(rows[0][f"books_{name}"]), f"{mean['books_random']:.1f}"])
    widths = [max(len(row[i]) for row in [header, *lines]) for i in range(len(header))]
    text = ["  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths)))
            for row in [header, *lines]]
    text.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(text)


def main(argv=None) -> int:
    args = parse_args(argv)
    out = args.out.resolve()
    pool = rendered(out / "pool", args.pool, args.pool_seed, args)
    val_json = write_entries(rendered(out / "val", args.val, args.val_seed, args), out / "val_via.json")
    print(f"suggest bench: pool of {args.pool} photos (seed {args.pool_seed}, {book_count(pool)} books), "
          f"validation {args.val} photos (seed {args.val_seed}), {args.packed_share:.0%} of their bookcases packed, "
          f"k={args.k}, seeds {args.seeds}", flush=True)

    epochs = args.start_epochs
    start_run = out / "start"
    start = train(start_run, [f"trainer.max_epochs={epochs}", f"trainer.check_val_every_n_epoch={epochs}",
                              f"data.val_annotations={val_json}"], args.overrides)
    start_ckpt = start_run / "checkpoints" / "last.ckpt"
    print(f"start model: the default recipe for {epochs} epochs, val mask AP {start['val/mask_AP']:.4f}", flush=True)

    by_name = {Path(entry["filename"]).name: key for key, entry in pool.items()}
    picks = {args.name: suggested(start_ckpt, out / "pool" / "images", args, out)}
    rows = []
    for seed in args.seeds:
        picks["random"] = list(np.random.default_rng(seed).choice(sorted(by_name), args.k, replace=False))
        row = {"seed": seed}
        for arm, names in picks.items():
            entries = {by_name[name]: pool[by_name[name]] for name in names}
            annotations = write_entries(entries, out / "picks" / f"{arm}_seed{seed}.json")
            metrics = train(out / "finetune" / f"{arm}_seed{seed}", [
                f"model.weights={start_ckpt}", "data.format=via", f"data.root={annotations.parent}",
                f"data.annotations={annotations.name}", "data.images=null", f"data.val_annotations={val_json}",
                f"seed={seed}", f"train.lr={args.finetune_lr}", "train.warmup_steps=10",
                f"trainer.max_epochs={args.finetune_epochs}", f"trainer.check_val_every_n_epoch={args.finetune_epochs}",
            ], args.overrides)
            row[arm], row[f"books_{arm}"] = metrics["val/mask_AP"], book_count(entries)
            print(f"  {arm} seed {seed}: {book_count(entries)} books, val mask AP {metrics['val/mask_AP']:.4f} "
                  f"({metrics['wall_s']:.0f} s)", flush=True)
        rows.append(row)
    print(f"\nval mask AP after fine-tuning on {args.k} photos for {args.finetune_epochs} epochs "
          f"(start model: {start['val/mask_AP']:.4f})")
    print(format_table(rows, args.name))
    return 0
