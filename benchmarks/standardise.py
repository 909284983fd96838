"""Standardising speed: records per second of ``standardise_records`` on the generator's clean
person export, on one core and on every core, in one process (the one-core run is the reference).

    .venv/bin/python benchmarks/standardise.py --records 1000000 [--repeat 3]

Prints the median seconds and records/s of each, their ratio, and checks both give the same
values. Figures go to benchmarks/out/standardise_<records>.json too.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import polars as pl

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cdm_pipeline.demo.person_file import generate_person_file  # noqa: E402
from cdm_pipeline.standardise import fields  # noqa: E402
from cdm_pipeline.standardise.records import standardise_records  # noqa: E402

REGIONS = ("US", "GB", "DE", "FR")


def canonical(records: int) -> pl.DataFrame:
    landing, _ = generate_person_file(records, "clean", Path(tempfile.mkdtemp(prefix="cdm-std-")))
    raw = pl.read_csv(landing / "partner_people" / "partner_people.csv", infer_schema=False)
    return raw.select(
        record_key=pl.lit("partner:") + pl.col("ref"),
        source=pl.lit("partner"),
        source_record_id="ref",
        trust_rank=pl.lit(5),
        event_at=pl.lit(None, pl.Datetime),
        first_name="given",
        last_name="family",
        email="email",
        phone="mobile",
        street="address",
        city="town",
        state="region",
        postal_code="zip",
        country="country",
        birth_date="dob",
    )


def timed(frame: pl.DataFrame, parallel_from: int, repeat: int) -> tuple[float, pl.DataFrame]:
    fields.PARALLEL_FROM = parallel_from
    seconds, out = [], None
    for _ in range(repeat):
        started = time.perf_counter()
        out = standardise_records(frame, "US", REGIONS)
        seconds.append(time.perf_counter() - started)
    return statistics.median(seconds), out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    frame = canonical(args.records)
    timed(frame.head(50_000), 1, 1)  # start the worker processes once, outside the timings
    one_core, reference = timed(frame, 10**12, args.repeat)
    every_core, fast = timed(frame, 20_000, args.repeat)
    figures = {
        "records": frame.height,
        "one_core_seconds": round(one_core, 2),
        "one_core_records_per_second": round(frame.height / one_core),
        "every_core_seconds": round(every_core, 2),
        "every_core_records_per_second": round(frame.height / every_core),
        "speedup": round(one_core / every_core, 2),
        "same_values": reference.equals(fast),
    }
    print(json.dumps(figures, indent=2))
    out = ROOT / "benchmarks" / "out" / f"standardise_{args.records}.json"
    out.write_text(json.dumps(figures, indent=2))
    return 0 if figures["same_values"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
