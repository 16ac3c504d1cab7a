"""Sweep report: ``python -m booksegm.sweep_report MULTIRUN_DIR [--out DIR]``.

Reads every job of a Hydra multirun (``<job>/.hydra/overrides.yaml`` and the ``metrics.json``
that ``booksegm.train`` writes), prints the overrides that differ between jobs with each job's
best validation mask AP, box AP and wall time, best first, and writes the table as
``sweep_report.csv`` and a bar chart ``sweep_report.png``. When the sweep varies ``data.fold``
(k-fold cross-validation), it also prints mean ± std over folds of every other setting, and
writes ``sweep_kfold.csv``.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import statistics
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from booksegm.errors import UserError, cli_errors

MASK_AP, BOX_AP = "val/mask_AP", "val/box_AP"
FOLD_KEY = "data.fold"


@dataclass
class Job:
    name: str  # the job's folder name (Hydra's job number)
    path: Path
    overrides: dict[str, str]  # key (with any +/~ prefix) -> value, as typed
    mask_ap: float | None = None  # best over the run's validations
    box_ap: float | None = None
    best_epoch: int | None = None  # the validation with the best mask AP
    wall_time_s: float | None = None
    status: str = "ok"
    settings: tuple[str, ...] = field(default=())  # the overrides that differ between jobs


def read_job(path: Path) -> Job:
    overrides = yaml.safe_load((path / ".hydra" / "overrides.yaml").read_text()) or []
    job = Job(path.name, path, dict(o.split("=", 1) if "=" in o else (o, "") for o in overrides))
    metrics_path = path / "metrics.json"
    if not metrics_path.is_file():
        job.status = "no metrics.json (failed or still running)"
        return job
    summary = json.loads(metrics_path.read_text())
    validations = [v for v in summary.get("validations", []) if finite(v.get(MASK_AP))]
    if validations:
        best = max(validations, key=lambda v: v[MASK_AP])
        job.mask_ap, job.best_epoch = best[MASK_AP], best.get("epoch")
        job.box_ap = max((v[BOX_AP] for v in validations if finite(v.get(BOX_AP))), default=None)
    else:
        job.status = "no validation"
    job.wall_time_s = summary.get("wall_time_s")
    return job


def read_sweep(multirun_dir: Path) -> list[Job]:
    """Every job folder under ``multirun_dir`` (those holding ``.hydra/overrides.yaml``)."""
    paths = sorted({p.parent.parent for p in multirun_dir.rglob(".hydra/overrides.yaml")}, key=natural_key)
    jobs = [read_job(p) for p in paths]
    varying = varying_keys(jobs)
    for job in jobs:
        job.settings = tuple(f"{key}={job.overrides.get(key, '')}" for key in varying)
    return jobs


def varying_keys(jobs: list[Job]) -> list[str]:
    keys = sorted({key for job in jobs for key in job.overrides})
    return [key for key in keys if len({job.overrides.get(key) for job in jobs}) > 1]


def common_overrides(jobs: list[Job]) -> list[str]:
    varying = set(varying_keys(jobs))
    return [f"{k}={v}" for k, v in jobs[0].overrides.items() if k not in varying] if jobs else []


def ranked(jobs: list[Job]) -> list[Job]:
    """Best mask AP first; jobs without a result last, in job order."""
    return sorted(jobs, key=lambda j: (j.mask_ap is None, -(j.mask_ap or 0.0), natural_key(j.path)))


def kfold_groups(jobs: list[Job]) -> list[dict]:
    """Mean ± std over folds of each combination of the other varying overrides."""
    varying = varying_keys(jobs)
    if FOLD_KEY not in varying:
        return []
    groups: dict[tuple[str, ...], list[Job]] = {}
    for job in jobs:
        groups.setdefault(tuple(s for s in job.settings if not s.startswith(FOLD_KEY + "=")), []).append(job)
    rows = []
    for setting, members in groups.items():
        done = [j for j in members if j.mask_ap is not None]
        rows.append({
            "setting": " ".join(setting) or "(all jobs)",
            "folds": len(done),
            "of": len(members),
            **mean_std("mask_AP", [j.mask_ap for j in done]),
            **mean_std("box_AP", [j.box_ap for j in done if j.box_ap is not None]),
        })
    return sorted(rows, key=lambda r: -(r["mask_AP_mean"] if finite(r["mask_AP_mean"]) else -1.0))


def mean_std(name: str, values: list[float]) -> dict[str, float]:
    mean = statistics.fmean(values) if values else math.nan
    std = statistics.stdev(values) if len(values) > 1 else (0.0 if values else math.nan)
    return {f"{name}_mean": mean, f"{name}_std": std}


# -- output -----------------------------------------------------------------------------------

def format_table(jobs: list[Job]) -> str:
    keys = varying_keys(jobs)
    header = ["rank", "job", *short_names(keys), "mask AP", "box AP", "best epoch", "wall time"]
    rows = []
    for rank, job in enumerate(ranked(jobs), 1):
        rows.append([
            str(rank) if job.mask_ap is not None else "-", job.name,
            *(short_value(job.overrides.get(k, "")) for k in keys),
            fmt(job.mask_ap), fmt(job.box_ap), "" if job.best_epoch is None else str(job.best_epoch),
            fmt_duration(job.wall_time_s) + ("" if job.status == "ok" else f"  {job.status}"),
        ])
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    numeric = {0, len(header) - 4, len(header) - 3, len(header) - 2}  # right-aligned columns
    lines = []
    for row in [header, *rows]:
        cells = [c.rjust(w) if i in numeric else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths))]
        lines.append("  ".join(cells).rstrip())
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def format_kfold(rows: list[dict]) -> str:
    lines = [f"k-fold cross-validation ({FOLD_KEY}): mean ± std over folds"]
    for r in rows:
        lines.append(
            f"  {r['setting']}: mask AP {r['mask_AP_mean']:.4f} ± {r['mask_AP_std']:.4f}, "
            f"box AP {r['box_AP_mean']:.4f} ± {r['box_AP_std']:.4f} ({r['folds']} of {r['of']} folds)"
        )
    return "\n".join(lines)


def write_csv(jobs: list[Job], path: Path) -> None:
    keys = varying_keys(jobs)
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["job", *keys, "mask_AP", "box_AP", "best_epoch", "wall_time_s", "status", "overrides", "dir"])
        for job in ranked(jobs):
            writer.writerow([
                job.name, *(job.overrides.get(k, "") for k in keys), job.mask_ap, job.box_ap, job.best_epoch,
                job.wall_time_s, job.status, " ".join(f"{k}={v}" for k, v in job.overrides.items()), job.path,
            ])


def write_kfold_csv(rows: list[dict], path: Path) -> None:
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def plot(jobs: list[Job], path: Path) -> None:
    """Horizontal bars of best mask and box AP per job, best at the top."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = [j for j in ranked(jobs) if j.mask_ap is not None][::-1]
    keys = varying_keys(jobs)
    settings = [" ".join(f"{n}={short_value(j.overrides.get(k, ''))}" for n, k in zip(short_names(keys), keys))
                for j in done]
    labels = ["\n".join(textwrap.wrap(f"job {j.name}: {s}", 44)) for j, s in zip(done, settings)]
    rows = max(max((label.count("\n") + 1 for label in labels), default=1), 2)
    fig, ax = plt.subplots(figsize=(9, 1.2 + 0.22 * rows * max(len(done), 1)))
    y = range(len(done))
    ax.barh([i + 0.2 for i in y], [j.mask_ap for j in done], height=0.4, label="mask AP")
    ax.barh([i - 0.2 for i in y], [j.box_ap or 0.0 for j in done], height=0.4, label="box AP")
    ax.set_yticks(list(y), labels, fontsize=8)
    ax.set_xlim(left=0)
    ax.set_xlabel("best validation AP (COCO, IoU 0.50:0.95)")
    ax.set_title(path.parent.name)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# -- helpers ----------------------------------------------------------------------------------

def finite(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def short_names(keys: list[str]) -> list[str]:
    """Override keys shortened to their last part where that stays unambiguous."""
    lasts = [key.lstrip("+~").rsplit(".", 1)[-1] for key in keys]
    return [last if lasts.count(last) == 1 else key for key, last in zip(keys, lasts)]


def short_value(value: str) -> str:
    """A float override as 4 significant digits (Optuna writes 17); anything else as typed."""
    try:
        number = float(value)
    except ValueError:
        return value
    return value if number.is_integer() or len(value) <= 8 else f"{number:.4g}"


def fmt(value: float | None) -> str:
    return "" if value is None else f"{value:.4f}"


def fmt_duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes}m {secs:02d}s" if minutes else f"{secs}s"


def natural_key(path: Path) -> tuple:
    return tuple(int(part) if part.isdigit() else part for part in path.parts)


@cli_errors(exit_code=2)  # a folder without jobs: one line, exit 2 (as argparse's)
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m booksegm.sweep_report", description=__doc__.splitlines()[0])
    parser.add_argument("multirun_dir", type=Path, help="a Hydra multirun folder (outputs/train/multiruns/<time>)")
    parser.add_argument("--out", type=Path, help="where the CSV and PNG go (default: MULTIRUN_DIR)")
    args = parser.parse_args(argv)

    jobs = read_sweep(args.multirun_dir)
    if not jobs:
        raise UserError(f"no Hydra jobs (*/.hydra/overrides.yaml) under {args.multirun_dir}")
    out = args.out or args.multirun_dir
    out.mkdir(parents=True, exist_ok=True)
    print(f"sweep {args.multirun_dir}: {len(jobs)} jobs, {sum(j.mask_ap is not None for j in jobs)} with results")
    common = common_overrides(jobs)
    if common:
        print("common overrides: " + " ".join(common))
    print(format_table(jobs))
    write_csv(jobs, out / "sweep_report.csv")
    plot(jobs, out / "sweep_report.png")
    written = [out / "sweep_report.csv", out / "sweep_report.png"]
    folds = kfold_groups(jobs)
    if folds:
        print(format_kfold(folds))
        write_kfold_csv(folds, out / "sweep_kfold.csv")
        written.append(out / "sweep_kfold.csv")
    print("wrote " + ", ".join(str(p) for p in written))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
