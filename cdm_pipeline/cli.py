"""``cdm``: generate demo data, run the pipeline through Dagster, open the UI, serve requests.

Every command drives the same Definitions the UI shows, on the same Dagster instance.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cdm", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser("demo", help="generate seeded demo landing files (and their truth)")
    demo.add_argument("--people", type=int, default=3000)
    demo.add_argument("--seed", type=int, default=7)
    demo.add_argument("--days", type=int, default=2, help="daily files per source")
    demo.add_argument(
        "--out", type=Path, default=Path("data"), help="writes OUT/landing and OUT/demo/truth"
    )

    run = commands.add_parser(
        "run", help="materialise every asset through Dagster and print a summary"
    )
    _location_args(run)

    ui = commands.add_parser("ui", help="start the Dagster UI (dagster dev) on this project")
    _location_args(ui)
    ui.add_argument("--host", default="127.0.0.1")
    ui.add_argument("--port", type=int, default=3000)

    args = parser.parse_args(argv)
    if args.command == "demo":
        return _demo(args)
    _apply_locations(args)
    if args.command == "run":
        return _run()
    return _ui(args)


def _location_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--landing", type=Path, help="landing folder (default data/landing)")
    parser.add_argument(
        "--warehouse", type=Path, help="DuckDB file (default data/warehouse/cdm.duckdb)"
    )
    parser.add_argument("--sources", type=Path, help="source registry (default data/sources.yaml)")
    parser.add_argument(
        "--config", type=Path, help="pipeline settings (default data/pipeline.yaml)"
    )


def _apply_locations(args: argparse.Namespace) -> None:
    """Pass locations through the environment so the Definitions (and the UI) see the same ones."""
    for flag, variable in (
        ("landing", "CDM_LANDING"),
        ("warehouse", "CDM_WAREHOUSE"),
        ("sources", "CDM_SOURCES"),
        ("config", "CDM_CONFIG"),
    ):
        value = getattr(args, flag, None)
        if value is not None:
            os.environ[variable] = str(Path(value).resolve())


def _demo(args: argparse.Namespace) -> int:
    from cdm_pipeline.demo.generator import generate

    started = time.perf_counter()
    paths = generate(people=args.people, seed=args.seed, out=args.out, days=args.days)
    elapsed = time.perf_counter() - started
    print(
        f"demo data for {args.people} people written to {paths.landing} "
        f"(truth in {paths.truth}) in {elapsed:.1f}s ({args.people / elapsed:,.0f} people/s)"
    )
    return 0


def _run() -> int:
    from cdm_pipeline.definitions import defs
    from cdm_pipeline.defs.jobs import NIGHTLY_JOB
    from cdm_pipeline.instance import shared_instance
    from cdm_pipeline.settings import load_settings

    settings = load_settings()
    started = time.perf_counter()
    result = defs.resolve_job_def(NIGHTLY_JOB).execute_in_process(
        instance=shared_instance(),
        raise_on_error=False,
        run_config={"loggers": {"console": {"config": {"log_level": "WARNING"}}}},
    )
    elapsed = time.perf_counter() - started
    evaluations = result.get_asset_check_evaluations()
    failed = [e for e in evaluations if not e.passed]
    print(
        f"run {result.run_id} {'succeeded' if result.success else 'FAILED'} in {elapsed:.1f}s; "
        f"{len(evaluations) - len(failed)}/{len(evaluations)} checks passed"
    )
    for e in failed:
        print(f"  check failed: {'/'.join(e.asset_key.path)} {e.check_name} ({e.severity.value})")
    _print_summary(settings.warehouse_path)
    return 0 if result.success and not failed else 1


def _print_summary(warehouse: Path) -> None:
    import duckdb

    from cdm_pipeline.warehouse import quote_ident

    if not warehouse.exists():
        return
    with duckdb.connect(str(warehouse)) as conn:
        tables = conn.execute(
            "select schema_name, table_name from duckdb_tables() order by 1, 2"
        ).fetchall()
        print(f"warehouse {warehouse}:")
        for schema, table in tables:
            (count,) = conn.execute(
                f"select count(*) from {quote_ident(schema)}.{quote_ident(table)}"
            ).fetchone()
            print(f"  {schema + '.' + table:<42} {count:>10,} rows")


def _ui(args: argparse.Namespace) -> int:
    from cdm_pipeline.instance import dagster_home

    dagster_home()
    command = [
        sys.executable,
        "-m",
        "dagster",
        "dev",
        "-m",
        "cdm_pipeline.definitions",
        "-h",
        args.host,
        "-p",
        str(args.port),
    ]
    print(f"Dagster UI on http://{args.host}:{args.port} (Ctrl-C stops it)")
    return subprocess.call(command)


if __name__ == "__main__":
    sys.exit(main())
