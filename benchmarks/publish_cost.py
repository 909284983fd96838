"""What a night's draft costs: the copy of the published warehouse a night starts from, and the
fresh rewrite it is published as after an erasure or a purge (``cdm_pipeline.publish``).

    .venv/bin/python benchmarks/publish_cost.py --records 1000000 [--repeat 3] [--parallel]
    .venv/bin/python benchmarks/publish_cost.py --warehouse path/to/cdm.duckdb

With ``--records`` it first builds a warehouse from the generator's clean profile (the whole
night through Dagster). Prints the file's size and the median seconds of each; the rewrite as the
publish makes it (``copy_into_fresh_file``: tables two at a time, under the night's memory limit)
beside the one-statement ``copy from database`` under DuckDB's defaults it replaced, with the
peak RSS of each (this process, above its start).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import duckdb

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench import PeakRss  # noqa: E402

from cdm_pipeline.defs.resources import duckdb_memory_limit  # noqa: E402
from cdm_pipeline.publish import copy_into_fresh_file  # noqa: E402


def build(records: int, workdir: Path, parallel: bool = False) -> Path:
    from bench import run_pipeline

    from cdm_pipeline.demo.datasets import build as build_dataset

    dataset = build_dataset("clean", workdir / "data", records)
    figures: dict = {}
    settings = run_pipeline(
        workdir, dataset.landing, figures, "night", dataset.sources, parallel=parallel
    )
    night = figures["night"]
    print(
        f"night of {records:,} records: {night['seconds']} s, success {night.get('success')}, "
        f"peak {night.get('peak_above_start_mb')} MB above start"
    )
    return settings.warehouse_path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--records", type=int)
    parser.add_argument("--warehouse", type=Path)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--parallel", action="store_true", help="the night as cdm run --parallel")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="cdm-publish-"))
    warehouse = args.warehouse or build(args.records, workdir, args.parallel)
    size = warehouse.stat().st_size
    limit = duckdb_memory_limit()
    ways = {
        "publish": lambda night, fresh: copy_into_fresh_file(night, fresh, memory_limit=limit),
        "copy from database": one_statement_copy,
    }
    copies: list[float] = []
    seconds: dict[str, list[float]] = {way: [] for way in ways}
    peaks: dict[str, list[float]] = {way: [] for way in ways}
    fresh = workdir / "fresh.duckdb"
    for _ in range(args.repeat):
        target = workdir / "copy.duckdb"
        started = time.perf_counter()
        shutil.copyfile(warehouse, target)
        copies.append(time.perf_counter() - started)
        for way, rewrite in ways.items():
            fresh.unlink(missing_ok=True)
            started = time.perf_counter()
            with PeakRss() as rss:
                rewrite(target, fresh)
            seconds[way].append(time.perf_counter() - started)
            peaks[way].append(rss.peak_above_start_mb)
        target.unlink()
    print(
        f"warehouse {size / 1e9:.2f} GB: draft copy median {statistics.median(copies):.1f} s; "
        f"fresh rewrite (fresh file {fresh.stat().st_size / 1e9:.2f} GB), {args.repeat} runs:"
    )
    for way in ways:
        print(
            f"  {way}: median {statistics.median(seconds[way]):.1f} s, peak "
            f"{max(peaks[way]) / 1024:.2f} GB above start"
        )
    ratio = statistics.median(seconds["publish"]) / statistics.median(seconds["copy from database"])
    print(f"  publish / copy from database: {ratio:.2f}")
    shutil.rmtree(workdir, ignore_errors=True)
    return 0


def one_statement_copy(night: Path, fresh: Path) -> None:
    """The rewrite before ``copy_into_fresh_file``: one statement, DuckDB's default limits."""
    with duckdb.connect() as conn:
        conn.execute("attach ? as night (read_only)", [str(night)])
        conn.execute("attach ? as fresh", [str(fresh)])
        conn.execute("copy from database night to fresh")


if __name__ == "__main__":
    sys.exit(main())
