"""Two `cdm run` started at the same instant on one warehouse, N times over.

    .venv/bin/python benchmarks/concurrent_runs.py [--times 50] [--people 200]

Every time exactly one run must write (it succeeds) and the other be refused naming the holder
(exit 2), and the published warehouse must open and hold one whole night (its customers equal
the first night's: the landing does not change). Prints a line per round and a summary.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import duckdb

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def cdm(home: Path, landing: Path, warehouse: Path) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CDM_")}
    env["DAGSTER_HOME"] = str(home)
    command = [sys.executable, "-m", "cdm_pipeline.cli", "run", f"--landing={landing}"]
    return subprocess.Popen(
        [*command, f"--warehouse={warehouse}"],
        env=env,
        cwd=home.parent,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def customers(warehouse: Path) -> list[tuple]:
    with duckdb.connect(str(warehouse), read_only=True) as conn:
        return conn.execute(
            "select record_key, customer_id from mart.customer_xref order by 1"
        ).fetchall()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--times", type=int, default=50)
    parser.add_argument("--people", type=int, default=200)
    args = parser.parse_args()
    from cdm_pipeline.demo.generator import generate
    from cdm_pipeline.instance import DAGSTER_YAML

    root = Path(tempfile.mkdtemp(prefix="cdm-concurrent-"))
    landing = generate(people=args.people, seed=3, out=root / "demo", days=1).landing
    home = root / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(DAGSTER_YAML)
    warehouse = root / "w.duckdb"
    first = cdm(home, landing, warehouse)
    out, err = first.communicate()
    if "succeeded" not in out:
        print(out, err)
        return 1
    expected = customers(warehouse)
    good = 0
    for number in range(1, args.times + 1):
        started = time.perf_counter()
        pair = [cdm(home, landing, warehouse), cdm(home, landing, warehouse)]
        results = [p.communicate() for p in pair]
        codes = sorted(p.returncode for p in pair)
        refused = [err for (_, err), p in zip(results, pair, strict=True) if p.returncode == 2]
        one_wrote = (
            codes[1] == 2
            and codes[0] in (0, 1)
            and "succeeded"
            in "".join(out for (out, _), p in zip(results, pair, strict=True) if p.returncode != 2)
        )
        named = bool(refused) and "is being written by run" in refused[0]
        whole = customers(warehouse) == expected
        ok = one_wrote and named and whole
        good += ok
        print(
            f"round {number:3d}: exit codes {codes}, one wrote {one_wrote}, holder named {named}, "
            f"warehouse whole {whole} ({time.perf_counter() - started:.1f} s)",
            flush=True,
        )
    print(f"{good} of {args.times} rounds: exactly one run wrote, the other was refused naming it")
    return 0 if good == args.times else 1


if __name__ == "__main__":
    sys.exit(main())
