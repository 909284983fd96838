"""Erasure against the generator's truth: no record of a person who made no request is deleted
or anonymised, and mart.customers never holds a customer without records, night after night.

    .venv/bin/python benchmarks/erasure_audit.py --people 200000

Generates the demo data at N people and runs two warehouses on it: one whose landing folder has
the privacy requests (two nights), one without them (the baseline). Every raw row of a record
whose person made no request must be in the first exactly as in the baseline, after each night.
Prints the rows that differ by source (0 is the bar), the requesters' records erased, and the
mart's customers without records; figures go to benchmarks/out/erasure_<people>.json too.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

import duckdb
import polars as pl

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench import run_pipeline  # noqa: E402

from cdm_pipeline.demo.generator import generate  # noqa: E402
from cdm_pipeline.registry import load_registry  # noqa: E402
from cdm_pipeline.settings import PACKAGE_DATA  # noqa: E402

VOLATILE = ("_loaded_at", "_run_id")


def raw_rows(warehouse: Path, keys: pl.DataFrame) -> pl.DataFrame:
    """``record_key, row_hash`` of every raw row of the given record keys."""
    sources = load_registry(PACKAGE_DATA / "sources.yaml")
    frames = []
    with duckdb.connect(str(warehouse), read_only=True) as conn:
        conn.register("wanted", keys.to_arrow())
        for source in sources.values():
            if source.role == "privacy_request":
                continue
            frames.append(
                conn.sql(
                    f"select '{source.name}:' || {source.record_id} as record_key, "
                    f"md5(to_json(r)::varchar) as row_hash from (select * exclude "
                    f"({', '.join(VOLATILE)}) from raw.{source.name}) r "
                    f"where '{source.name}:' || {source.record_id} in (select record_key from wanted)"
                ).pl()
            )
    return pl.concat(frames)


def customer_of(warehouse: Path) -> pl.DataFrame:
    with duckdb.connect(str(warehouse), read_only=True) as conn:
        return conn.sql("select record_key, customer_id from mart.customer_xref").pl()


def customers_without_records(warehouse: Path) -> int:
    with duckdb.connect(str(warehouse), read_only=True) as conn:
        return conn.execute(
            "select count(*) from mart.customers c where not exists "
            "(select 1 from mart.customer_xref x where x.customer_id = c.customer_id)"
        ).fetchall()[0][0]


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--people", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--keep", action="store_true", help="keep the warehouses to look into")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="cdm-erasure-audit-"))
    paths = generate(people=args.people, seed=args.seed, out=work / "with", days=2)
    baseline_landing = work / "without" / "landing"
    shutil.copytree(paths.landing, baseline_landing)
    for request_file in (baseline_landing / "privacy_requests").glob("*"):
        request_file.unlink()
    truth = pl.read_parquet(paths.truth / "records.parquet")
    requesters = set(truth.filter(pl.col("source") == "privacy_requests")["person_id"])
    records = truth.filter(pl.col("source") != "privacy_requests").with_columns(
        record_key=pl.col("source") + ":" + pl.col("record_id"),
        requester=pl.col("person_id").is_in(list(requesters)),
    )
    bystanders = records.filter(~pl.col("requester")).select("record_key")
    asked = records.filter(pl.col("requester")).select("record_key")

    figures: dict = {"people": args.people, "requesters": len(requesters)}
    baseline = run_pipeline(work / "without", baseline_landing, figures, label="baseline")
    expected = raw_rows(baseline.warehouse_path, bystanders)
    # Whom the resolver put together with a requester (a wrong merge erases a bystander too).
    linked = customer_of(baseline.warehouse_path).join(
        records.select("record_key", "requester"), on="record_key"
    )
    with_requester = set(
        linked.filter(
            pl.col("requester").any().over("customer_id") & pl.col("customer_id").is_not_null()
        )["record_key"]
    )
    for night in (1, 2):
        label = f"night_{night}"
        settings = run_pipeline(work / "with", paths.landing, figures, label=label)
        got = raw_rows(settings.warehouse_path, bystanders)
        changed = expected.join(got, on=["record_key", "row_hash"], how="anti")
        requester_rows = raw_rows(settings.warehouse_path, asked).height
        figures[label].update(
            {
                "bystander_rows_deleted_or_changed": changed.height,
                "by_source": dict(
                    changed.group_by(pl.col("record_key").str.split(":").list.first())
                    .len()
                    .iter_rows()
                ),
                "of_which_merged_with_a_requester": changed.filter(
                    pl.col("record_key").is_in(list(with_requester))
                )["record_key"].n_unique(),
                "changed_records": changed["record_key"].n_unique(),
                "requester_raw_rows_left": requester_rows,
                "customers_without_records": customers_without_records(settings.warehouse_path),
            }
        )
    with duckdb.connect(str(settings.warehouse_path), read_only=True) as conn:
        figures["privacy_request_log"] = dict(
            conn.execute(
                "select status, count(*) from governance.privacy_request_log group by 1"
            ).fetchall()
        )
    out = ROOT / "benchmarks" / "out" / f"erasure_{args.people}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(figures, indent=2, default=str))
    print(json.dumps(figures, indent=2, default=str))
    if args.keep:
        print(f"kept {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)
    bad = sum(figures[f"night_{n}"]["bystander_rows_deleted_or_changed"] for n in (1, 2))
    bad += sum(figures[f"night_{n}"]["customers_without_records"] for n in (1, 2))
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
