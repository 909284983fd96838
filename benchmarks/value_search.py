"""What the search for erased emails and phones costs on a warehouse: the scan behind the scrub
step and the `erasure_complete` check (``cdm_pipeline.governance.scrub._find_hit_values``), which
reads every text column of the warehouse each night.

    .venv/bin/python benchmarks/value_search.py --warehouse path/to/cdm.duckdb [--repeat 3]

Times the search as the pipeline runs it beside the form it replaced (one union of every column,
read once per kind of identifier, the pattern tested on every value), alternating in one process,
and prints the medians, their ratio and whether both found the same values. It works on a copy
of the warehouse (the search needs the warehouse's key, which it creates when missing).
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

from cdm_pipeline.governance import scrub  # noqa: E402
from cdm_pipeline.governance.keys import secret_key  # noqa: E402


def earlier_search(
    conn: duckdb.DuckDBPyConnection, key: str, columns: list[tuple[str, str, str]]
) -> None:
    """The search before f2145f1, into the same temporary table."""
    conn.execute(
        f"create or replace temp table {scrub.HIT_VALUES} as "
        f"with distinct_values as ({' union '.join(scrub.column_values(columns))}), "
        f"{scrub._HITS_AMONG}",
        {"key": key},
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--warehouse", type=Path, required=True)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="cdm-value-search-"))
    copy = workdir / "copy.duckdb"
    shutil.copyfile(args.warehouse, copy)
    conn = duckdb.connect(str(copy))
    key = secret_key(conn)
    columns = scrub._varchar_columns(conn, scrub.SCANNED_SCHEMAS)
    ways = {
        "pipeline": lambda: scrub._find_hit_values(conn, key, columns),
        "earlier": lambda: earlier_search(conn, key, columns),
    }
    seconds: dict[str, list[float]] = {way: [] for way in ways}
    found: dict[str, set] = {}
    for _ in range(args.repeat):
        for way, search in ways.items():
            started = time.perf_counter()
            search()
            seconds[way].append(time.perf_counter() - started)
            found[way] = {
                v for (v,) in conn.execute(f"select v from {scrub.HIT_VALUES}").fetchall() if v
            }
    size = args.warehouse.stat().st_size
    print(f"warehouse {size / 1e9:.2f} GB, {len(columns)} text columns, {args.repeat} rounds")
    for way, times in seconds.items():
        print(
            f"  {way:9} median {statistics.median(times):6.1f} s  ({', '.join(f'{t:.1f}' for t in times)})"
        )
    ratio = statistics.median(seconds["pipeline"]) / statistics.median(seconds["earlier"])
    print(f"  ratio pipeline / earlier: {ratio:.2f}")
    print(
        f"  values found: {len(found['pipeline'])} and {len(found['earlier'])}, same: "
        f"{found['pipeline'] == found['earlier']}"
    )
    conn.close()
    shutil.rmtree(workdir, ignore_errors=True)
    return 0 if found["pipeline"] == found["earlier"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
