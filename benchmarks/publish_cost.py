"""What a night's draft costs: the copy of the published warehouse a night starts from, and the
fresh rewrite it is published as after an erasure or a purge (``cdm_pipeline.publish``).

    .venv/bin/python benchmarks/publish_cost.py --records 1000000 [--repeat 3] [--parallel]
    .venv/bin/python benchmarks/publish_cost.py --warehouse path/to/cdm.duckdb

With ``--records`` it first builds a warehouse from the generator's clean profile (the whole
night through Dagster). Prints the file's size and the median seconds of each.
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
    copies, rewrites = [], []
    for _ in range(args.repeat):
        target = workdir / "copy.duckdb"
        started = time.perf_counter()
        shutil.copyfile(warehouse, target)
        copies.append(time.perf_counter() - started)
        fresh = workdir / "fresh.duckdb"
        fresh.unlink(missing_ok=True)
        started = time.perf_counter()
        with duckdb.connect() as conn:
            conn.execute("attach ? as night (read_only)", [str(target)])
            conn.execute("attach ? as fresh", [str(fresh)])
            conn.execute("copy from database night to fresh")
        rewrites.append(time.perf_counter() - started)
        target.unlink()
    print(
        f"warehouse {size / 1e9:.2f} GB: draft copy median {statistics.median(copies):.1f} s, "
        f"fresh rewrite median {statistics.median(rewrites):.1f} s "
        f"(fresh file {fresh.stat().st_size / 1e9:.2f} GB), {args.repeat} runs"
    )
    shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
