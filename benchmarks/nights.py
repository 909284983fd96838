"""The nights a user runs: the demo's seven channels with privacy requests, a first night and the
night after it, each one a ``cdm run`` as a user starts it.

    .venv/bin/python benchmarks/nights.py --people 100000 --days 50 [--seed 23] [--empty-night]

Generates the demo with ``--days`` daily files per source, lands the files of every day but the
last (hard links) and runs ``cdm run``: the first night. Then it lands the last day's files and
runs again: the delta night (about 1/days of the files, with that day's privacy requests). With
``--empty-night`` it runs once more with nothing new: what a night costs that only the clock
changes (retention still runs). Prints, per night, the wall time and its share of the first
night's, the peak RSS of the process tree (``cdm run`` and its workers), the warehouse file's
size and the longest steps (from the run's Dagster event log). Figures go to
``benchmarks/out/nights_<people>.json`` too.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import dagster as dg
import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench import PeakRss  # noqa: E402

from cdm_pipeline.demo.generator import generate  # noqa: E402


def land(generated: Path, landing: Path, days: slice) -> int:
    """Hard-link the files of ``days`` (by name order: one a day) of every source into the
    landing folder; returns how many."""
    count = 0
    for source in sorted(p for p in generated.iterdir() if p.is_dir()):
        target = landing / source.name
        target.mkdir(parents=True, exist_ok=True)
        for path in sorted(source.iterdir())[days]:
            os.link(path, target / path.name)
            count += 1
    return count


def run_night(workdir: Path, label: str, figures: dict) -> None:
    """``cdm run`` on the work folder's landing folder and warehouse, measured from outside."""
    env = os.environ | {"DAGSTER_HOME": str(workdir / "dagster_home")}
    cdm = Path(sys.executable).with_name("cdm")
    command = [str(cdm), "run", "--landing", str(workdir / "landing")]
    command += ["--warehouse", str(workdir / "warehouse" / "cdm.duckdb")]
    started = time.perf_counter()
    process = psutil.Popen(
        command, env=env, cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    with PeakRss(root=process) as rss:
        output, _ = process.communicate()
    wall = time.perf_counter() - started
    summary = [line for line in output.splitlines() if line.startswith("run ")]
    figures[label] = {
        "exit_code": process.returncode,
        "summary": summary[-1] if summary else output[-500:],
        "wall_seconds": round(wall, 1),
        "peak_rss_mb": round(rss.peak_mb),
        "warehouse_mb": round((workdir / "warehouse" / "cdm.duckdb").stat().st_size / 2**20),
        "steps_seconds": step_seconds(workdir / "dagster_home"),
    }


def step_seconds(home: Path) -> dict[str, float]:
    """Each step's duration in the newest run of the Dagster instance at ``home``, longest first."""
    with dg.DagsterInstance.from_config(str(home)) as instance:
        (run,) = instance.get_runs(limit=1)
        stats = instance.get_run_step_stats(run.run_id)
    durations = {s.step_key: round((s.end_time or 0) - (s.start_time or 0), 2) for s in stats}
    return dict(sorted(durations.items(), key=lambda item: -item[1]))


def report(figures: dict, nights: list[str]) -> None:
    first = figures[nights[0]]["wall_seconds"]
    print(f"{figures['people']:,} people, {figures['days']} daily files per source")
    print(
        "| night | files landed | wall s | share of the first | peak RSS MB | file MB | longest steps (s) |"
    )
    print("|---|---|---|---|---|---|---|")
    for night in nights:
        f = figures[night]
        longest = ", ".join(f"{k} {v}" for k, v in list(f["steps_seconds"].items())[:6])
        print(
            f"| {night} | {f['files_landed']} | {f['wall_seconds']} | "
            f"{f['wall_seconds'] / first:.0%} | {f['peak_rss_mb']} | {f['warehouse_mb']} | {longest} |"
        )
        if f["exit_code"]:
            print(f"  {night} failed: {f['summary']}")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--people", type=int, default=100_000)
    parser.add_argument("--days", type=int, default=50)
    parser.add_argument("--seed", type=int, default=23)
    parser.add_argument("--empty-night", action="store_true")
    parser.add_argument("--keep", action="store_true", help="keep the work folder to look into")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="cdm-nights-"))
    figures: dict = {"people": args.people, "days": args.days, "seed": args.seed}
    (workdir / "warehouse").mkdir()
    started = time.perf_counter()
    generated = generate(args.people, args.seed, workdir / "demo", args.days).landing
    figures["generate_seconds"] = round(time.perf_counter() - started, 1)
    nights = [("first", slice(0, args.days - 1)), ("delta", slice(args.days - 1, args.days))]
    if args.empty_night:
        nights.append(("empty", slice(0, 0)))
    for label, days in nights:
        landed = land(generated, workdir / "landing", days)
        run_night(workdir, label, figures)
        figures[label]["files_landed"] = landed
        print(f"{label}: {figures[label]['summary']}", flush=True)
    out = ROOT / "benchmarks" / "out" / f"nights_{args.people}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(figures, indent=2))
    report(figures, [label for label, _ in nights])
    if args.keep:
        print(f"kept {workdir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    return 1 if any(figures[label]["exit_code"] for label, _ in nights) else 0


if __name__ == "__main__":
    raise SystemExit(main())
