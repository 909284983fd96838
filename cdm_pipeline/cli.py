"""``cdm``: generate demo data, run the pipeline through Dagster, open the UI, serve requests.

Every command drives the same Definitions the UI shows, on the same Dagster instance.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from cdm_pipeline.locations import UsageError


def main(argv: list[str] | None = None) -> int:
    from cdm_pipeline.pipeline_config import ConfigError
    from cdm_pipeline.registry import RegistryError

    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    argv = [a for a in argv if a != "--debug"]
    try:
        return _main(argv)
    except (UsageError, RegistryError, ConfigError) as exc:
        if debug:
            raise
        for line in str(exc).splitlines():
            print(f"cdm: {line}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C: a step's transaction rolls back; no traceback to read
        if debug:
            raise
        print("cdm: stopped (Ctrl-C)", file=sys.stderr)
        return 130


def _main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="cdm", description=__doc__, epilog="--debug anywhere shows tracebacks."
    )
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
    run.add_argument(
        "--resolve",
        choices=["auto", "full", "retrain"],
        default="auto",
        help="auto: incremental with the stored model (the nightly default); full: re-resolve "
        "every record with it; retrain: learn the model again, then re-resolve everything",
    )
    run.add_argument(
        "--parallel",
        action="store_true",
        help="run cdm_nightly_parallel: the resolver's comparison shards in parallel processes",
    )

    ui = commands.add_parser("ui", help="start the Dagster UI (dagster dev) on this project")
    _location_args(ui)
    ui.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default 127.0.0.1: this machine only)",
    )
    ui.add_argument("--port", type=int, default=3000, help="port (default 3000)")

    subject = commands.add_parser(
        "export-subject", help="write one JSON with everything held about a person"
    )
    who = subject.add_mutually_exclusive_group(required=True)
    who.add_argument("--email")
    who.add_argument("--phone")
    subject.add_argument(
        "--out",
        type=Path,
        help="JSON file (default <warehouse>_exports/subject_access/<customer>.json)",
    )
    _location_args(subject)

    analyst = commands.add_parser(
        "export-analyst-db", help="write the pseudonymised analyst database"
    )
    analyst.add_argument(
        "--out", type=Path, help="DuckDB file (default <warehouse>_exports/analyst.duckdb)"
    )
    _location_args(analyst)

    evaluate = commands.add_parser(
        "evaluate",
        help="score the warehouse's customers against your labelled sample (pairwise and "
        "B-cubed precision/recall/F1, link methods, precision/recall by threshold)",
    )
    evaluate.add_argument(
        "--truth",
        type=Path,
        required=True,
        help="CSV with source, source_record_id and one entity id column",
    )
    _location_args(evaluate)

    acknowledge = commands.add_parser(
        "acknowledge-file",
        help="a steward accepts a rejected landing file that will not be replaced: its source's "
        "no_rejected_files check stops failing",
    )
    acknowledge.add_argument("source", help="source name in the sources file")
    acknowledge.add_argument("file", help="the rejected file's name, as the check lists it")
    _location_args(acknowledge)

    args = parser.parse_args(argv)
    if args.command == "demo":
        return _demo(args)
    _apply_locations(args)
    _check_locations(args)
    if args.command == "acknowledge-file":
        return _acknowledge(args.source, args.file)
    if args.command == "run":
        from cdm_pipeline.night import run_night

        return run_night(args.resolve, args.parallel)
    if args.command == "export-subject":
        return _export_subject(args)
    if args.command == "export-analyst-db":
        return _export_analyst_db(args)
    if args.command == "evaluate":
        return _evaluate(args.truth)
    from cdm_pipeline.ui import run_ui

    return run_ui(args.host, args.port)


def _check_locations(args: argparse.Namespace) -> None:
    """Refuse, before anything runs, a location that cannot be right: a landing folder that is
    not there (a typo would otherwise be a quiet night with nothing landed), a sources or config
    file that is missing or broken, an output that would overwrite the warehouse."""
    from cdm_pipeline.locations import load_settings
    from cdm_pipeline.pipeline_config import load_config
    from cdm_pipeline.registry import load_registry

    settings = load_settings()
    if args.command in ("run", "ui") and not settings.landing_dir.is_dir():
        raise UsageError(
            f"landing folder {settings.landing_dir} does not exist (cdm demo writes one; "
            "--landing names yours)"
        )
    if not settings.sources_path.is_file():
        raise UsageError(f"sources file {settings.sources_path} does not exist")
    load_registry(settings.sources_path)
    load_config(settings.pipeline_config_path)
    if args.command in ("export-subject", "export-analyst-db", "evaluate", "acknowledge-file"):
        if not settings.warehouse_path.is_file():
            raise UsageError(
                f"warehouse {settings.warehouse_path} does not exist: run cdm run first"
            )
    out = getattr(args, "out", None)
    if out is not None and Path(out).resolve() == settings.warehouse_path.resolve():
        raise UsageError(f"--out {out} is the warehouse itself; choose another file")


def _acknowledge(source: str, file_name: str) -> int:
    import duckdb

    from cdm_pipeline.defs.resources import redact
    from cdm_pipeline.ingest.load import acknowledge_rejection
    from cdm_pipeline.locations import load_settings
    from cdm_pipeline.publish import WarehouseBusy, run_lock
    from cdm_pipeline.registry import load_registry

    settings = load_settings()
    if source not in load_registry(settings.sources_path):
        raise UsageError(f"no source '{source}' in {settings.sources_path}")
    try:  # a write to the published file: not while a night runs, nor while a reader has it
        with (
            run_lock(settings.warehouse_path, holder="cdm acknowledge-file"),
            duckdb.connect(str(settings.warehouse_path)) as conn,
        ):
            n = acknowledge_rejection(conn, source, file_name)
    except (WarehouseBusy, duckdb.IOException) as exc:
        raise UsageError(f"cannot write the warehouse now: {redact(str(exc))}") from None
    if not n:
        raise UsageError(f"no open rejected file '{file_name}' for source '{source}'")
    print(f"acknowledged {file_name} ({source}); its check passes from the next run")
    return 0


def _evaluate(truth_path: Path) -> int:
    import duckdb

    from cdm_pipeline.evaluation import evaluate_warehouse, read_truth
    from cdm_pipeline.locations import load_settings

    settings = load_settings()
    try:
        truth = read_truth(truth_path)
    except (OSError, ValueError) as exc:  # a missing, unreadable or wrongly shaped file
        print(f"cdm evaluate: {exc}", file=sys.stderr)
        return 2
    with duckdb.connect(str(settings.warehouse_path), read_only=True) as conn:
        report = evaluate_warehouse(conn, truth)
    print("\n".join(report.lines()))
    return 0


def _export_subject(args: argparse.Namespace) -> int:
    import duckdb

    from cdm_pipeline.governance.access import (
        subject_document,
        uncertain_records,
        write_document,
    )
    from cdm_pipeline.governance.matching import match_requests
    from cdm_pipeline.governance.requests import PrivacyRequest
    from cdm_pipeline.locations import load_settings
    from cdm_pipeline.pipeline_config import load_config
    from cdm_pipeline.registry import load_registry

    settings = load_settings()
    config = load_config(settings.pipeline_config_path)
    standardise = config["standardise"]
    regions = tuple(standardise["phone_regions"])
    sources = load_registry(settings.sources_path)
    request = PrivacyRequest("cli", "cli", "access", args.email, args.phone)
    # One person's document is a few key lookups: DuckDB's block cache (by default up to 80 % of
    # the machine) is capped, so a million-person warehouse costs well under a gigabyte.
    limit = {"memory_limit": os.environ.get("CDM_EXPORT_MEMORY_LIMIT", "300MB")}
    with duckdb.connect(str(settings.warehouse_path), read_only=True, config=limit) as conn:
        matches = match_requests(conn, [request], regions, exact=True)
        customers = sorted(set(matches["customer_id"].drop_nulls()))
        if len(customers) != 1:
            print(
                f"no export: the identifier matches {len(customers)} customers; a steward must decide"
            )
            return 2
        # As a night's access request: records joined by weaker links wait for a steward.
        uncertain = uncertain_records(conn, matches, config)
        document = subject_document(conn, customers[0], sources, standardise, uncertain)
    path = args.out or settings.exports_dir / "subject_access" / f"{customers[0]}.json"
    write_document(document, path)
    print(f"wrote {path} ({len(document['source_records'])} source records)")
    return 0


def _export_analyst_db(args: argparse.Namespace) -> int:
    import duckdb

    from cdm_pipeline.governance.analyst import (
        export_analyst_database,
        pii_values_in,
        staged_analyst_file,
    )
    from cdm_pipeline.locations import load_settings

    settings = load_settings()
    target = args.out or settings.exports_dir / "analyst.duckdb"
    staged = staged_analyst_file(target)
    with duckdb.connect(str(settings.warehouse_path), read_only=True) as conn:
        counts = export_analyst_database(conn, staged)
        leaked = pii_values_in(conn, staged)
    if leaked:
        staged.unlink()
        print(f"not written: {leaked} values equal PII held in the warehouse", file=sys.stderr)
        return 1
    staged.replace(target)
    print(f"wrote {target}: " + ", ".join(f"{t} {n:,}" for t, n in counts.items()))
    return 0


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
        if value is None:
            continue
        if flag == "warehouse" and not Path(value).resolve().parent.is_dir():
            raise UsageError(
                f"--warehouse {value}: the folder {Path(value).resolve().parent} does not exist "
                "(create it first: a typo here would start an empty warehouse)"
            )
        os.environ[variable] = str(Path(value).resolve())


def _demo(args: argparse.Namespace) -> int:
    try:
        from cdm_pipeline.demo.generator import generate
    except ModuleNotFoundError as exc:
        raise UsageError(
            f"cdm demo needs {exc.name}: pip install -e '.[demo]' in a checkout of cdm-pipeline, "
            f"or pip install {exc.name}"
        ) from None

    started = time.perf_counter()
    paths = generate(people=args.people, seed=args.seed, out=args.out, days=args.days)
    elapsed = time.perf_counter() - started
    print(
        f"demo data for {args.people} people written to {paths.landing} "
        f"(truth in {paths.truth}) in {elapsed:.1f}s ({args.people / elapsed:,.0f} people/s)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
