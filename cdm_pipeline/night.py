"""``cdm run``: one night under the run lock, through the same Definitions the UI shows, and what
it tells the person who ran it (checks, tables, where to look next)."""

from __future__ import annotations

import sys
import time
import uuid
from pathlib import Path

from cdm_pipeline.locations import UsageError


def run_night(resolve_mode: str = "auto", parallel: bool = False) -> int:
    # A second writer is refused before the pipeline's own modules (pandera, polars, the
    # asset graph) are imported: the answer comes in about a second.
    from cdm_pipeline.instance import running_on, settle_dead_runs, shared_instance
    from cdm_pipeline.locations import load_settings
    from cdm_pipeline.publish import WarehouseBusy, acquire_run_lock, release_run_lock

    settings = load_settings()
    instance = shared_instance()
    for run_id in settle_dead_runs(instance):
        print(f"run {run_id} had died (its process is gone): marked failed")
    # The run lock, before anything else: of two runs started at the same instant exactly one
    # gets it; the other is refused here, naming the holder, having done nothing.
    night = str(uuid.uuid4())  # the run's id, given to Dagster below
    try:
        acquire_run_lock(settings.warehouse_path, night, holder="cdm run")
    except WarehouseBusy as exc:
        raise UsageError(str(exc)) from None
    busy = running_on(instance, settings.warehouse_path)
    if busy:  # a run the UI or the schedule started, between its queue and its first step
        release_run_lock(settings.warehouse_path)
        run_id, pid = busy[0]
        raise UsageError(
            f"run {run_id} (pid {pid}) is writing {settings.warehouse_path}: one run at a "
            "time; run again when it ends (or stop it in the UI)"
        )
    try:
        return _run_locked(settings, instance, night, resolve_mode, parallel)
    finally:
        release_run_lock(settings.warehouse_path)


def _run_locked(settings, instance, night: str, resolve_mode: str, parallel: bool) -> int:

    import dagster as dg

    from cdm_pipeline.defs.build import build_definitions
    from cdm_pipeline.defs.jobs import NIGHTLY_JOB
    from cdm_pipeline.defs.progress import PROGRESS_LOGGER
    from cdm_pipeline.defs.resolve.assets import resolve_run_config
    from cdm_pipeline.instance import NIGHT_TAG, WAREHOUSE_TAG

    tags = {WAREHOUSE_TAG: str(settings.warehouse_path.resolve()), NIGHT_TAG: night}
    started = time.perf_counter()
    run_config = {
        "loggers": {"console": {"config": {"log_level": "WARNING"}}, PROGRESS_LOGGER: {}},
        **resolve_run_config(resolve_mode.upper()),
    }
    if parallel:  # steps in their own processes, which rebuild the job from the environment
        from cdm_pipeline.definitions import parallel_job  # builds the module's Definitions

        result = dg.execute_job(
            dg.reconstructable(parallel_job),
            instance=instance,
            run_config=run_config,
            raise_on_error=False,
            tags=tags,
        )
    else:
        # Built now, from this call's locations (a module-level Definitions would keep the
        # locations of the first call in a long-lived process).
        result = (
            build_definitions(settings)
            .resolve_job_def(NIGHTLY_JOB)
            .execute_in_process(
                instance=instance,
                raise_on_error=False,
                run_config=run_config,
                tags=tags,
                run_id=night,
            )
        )
    elapsed = time.perf_counter() - started
    evaluations = result.get_asset_check_evaluations()
    failed = [e for e in evaluations if not e.passed]
    errors = [e for e in failed if e.severity.value == "ERROR"]
    print(
        f"run {result.run_id} {'succeeded' if result.success else 'FAILED'} in {elapsed:.1f}s; "
        f"{len(evaluations) - len(failed)}/{len(evaluations)} checks passed"
    )
    for event in result.all_events:
        if event.is_step_failure and event.step_failure_data is not None:
            error = event.step_failure_data.error
            cause = error.cause or error
            message = (cause.message or "").strip().splitlines()
            print(f"  STEP FAILED: {event.step_key}: {message[0] if message else cause.cls_name}")
    for e in failed:
        label = "CHECK FAILED" if e.severity.value == "ERROR" else "warning"
        print(f"  {label}: {'/'.join(e.asset_key.path)} {e.check_name}")
    try:
        _print_summary(settings.warehouse_path)
        _print_next_steps(settings, result.run_id)
    except Exception as exc:  # the summary must never hide the run's own outcome
        print(f"  (no table summary: {type(exc).__name__})")
    return 0 if result.success and not errors else 1


def _print_summary(warehouse: Path) -> None:
    import duckdb

    from cdm_pipeline.warehouse import quote_ident

    if not warehouse.exists():
        return
    with duckdb.connect(str(warehouse), read_only=True) as conn:
        tables = conn.execute(
            "select schema_name, table_name from duckdb_tables() order by 1, 2"
        ).fetchall()
        print(f"warehouse {warehouse}:")
        for schema, table in tables:
            ((count,),) = conn.execute(
                f"select count(*) from {quote_ident(schema)}.{quote_ident(table)}"
            ).fetchall()
            print(f"  {schema + '.' + table:<42} {count:>10,} rows")


def _print_next_steps(settings, run_id: str) -> None:
    """Where the night's output is and what a person does next."""
    import duckdb

    from cdm_pipeline.locations import bundled

    with duckdb.connect(str(settings.warehouse_path), read_only=True) as conn:
        ((exported, waiting),) = conn.execute(
            "select count(*) filter (where run_id = $run and status = 'exported'), "
            "count(*) filter (where status = 'needs_steward' and latest) from (select *, "
            "row_number() over (partition by source, request_id order by processed_at desc) = 1 "
            "as latest from governance.privacy_request_log)",
            {"run": run_id},
        ).fetchall()
    queries = bundled("sql") / "queries"
    analyst = settings.exports_dir / "analyst.duckdb"
    # Commands that run as printed: this interpreter and this cdm, venv activated or not.
    cdm = Path(sys.executable).with_name("cdm")
    cdm_command = str(cdm) if cdm.exists() else f"{sys.executable} -m cdm_pipeline.cli"
    query = (
        f"import duckdb; print(duckdb.connect({str(settings.warehouse_path)!r}, read_only=True)"
        ".sql('select count(*) from mart.customers'))"
    )
    print("next:")
    print(f"  watch and re-run it in the UI:  {cdm_command} ui   (http://127.0.0.1:3000)")
    print(f'  query the warehouse:            {sys.executable} -c "{query}"')
    print(
        f"  ready-made queries ($params):   {queries}/ ({len(list(queries.glob('*.sql')))} files)"
    )
    if analyst.exists():
        print(f"  pseudonymised analyst copy:     {analyst}")
    if exported:
        print(
            f"  subject-access files tonight:   {exported} in {settings.exports_dir / 'subject_access'}"
        )
    if waiting:
        print(
            f"  privacy requests for a steward: {waiting} (governance.privacy_request_log, "
            "status needs_steward)"
        )
