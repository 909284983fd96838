"""The nightly job, its schedule, the new-file sensor, and the run settings they share."""

import hashlib
from pathlib import Path

import dagster as dg

from cdm_pipeline.defs.resources import DUCKDB_TAGS
from cdm_pipeline.ingest.load import landing_files
from cdm_pipeline.ingest.reader import file_sha256
from cdm_pipeline.instance import WAREHOUSE_TAG, settle_dead_runs
from cdm_pipeline.registry import SourceSpec

NIGHTLY_JOB = "cdm_nightly"
PARALLEL_JOB = "cdm_nightly_parallel"
DASK_JOB = "cdm_nightly_dask"

# DuckDB allows one writer: steps run one after another in one process, and the run queue admits
# one run of this job at a time (tag concurrency limit in the instance's dagster.yaml).
RUN_TAGS = {"cdm/warehouse": "duckdb"}


def nightly_job():
    return dg.define_asset_job(
        NIGHTLY_JOB,
        selection=dg.AssetSelection.all(),
        executor_def=dg.in_process_executor,
        tags=RUN_TAGS,
        description="Ingest, validate, standardise, resolve, build the customer 360 and apply governance.",
    )


def parallel_job():
    """The same assets under Dagster's multiprocess executor: the resolver's comparison shards
    run side by side, while steps that open the DuckDB file take turns (one at a time). On a
    cluster, swap the executor for ``k8s_job_executor`` or ``celery_executor`` and keep the tag
    limit; the work folder (``CDM_WORK_DIR``) must then be shared storage."""
    return dg.define_asset_job(
        PARALLEL_JOB,
        selection=dg.AssetSelection.all(),
        executor_def=dg.multiprocess_executor.configured(
            {
                "tag_concurrency_limits": [{"key": next(iter(DUCKDB_TAGS)), "limit": 1}],
                # Steps fork from a server that has imported the pipeline once, instead of each
                # spawning an interpreter that imports it again (2-4 s a step on this machine).
                # Modules only: the Definitions are built in each step, from its environment.
                "start_method": {"forkserver": {"preload_modules": ["cdm_pipeline.defs.build"]}},
            }
        ),
        tags=RUN_TAGS,
        description="The nightly job with the resolver's comparisons in parallel processes.",
    )


def dask_job():
    """The same assets on a Dask cluster (``dagster-dask``): each step a Dask task on a worker
    process; the comparison shards run side by side, and every step that opens the warehouse
    takes its turn on the warehouse's writer lock (one writer per run). Launch config picks the
    cluster: ``{"cluster": {"local": {"n_workers": 2}}}`` on this machine, or
    ``{"cluster": {"existing": {"address": "tcp://scheduler:8786"}}}`` for a real one, whose
    workers must share the work folder (``CDM_WORK_DIR``), the warehouse file and the Dagster
    instance storage."""
    from dagster_dask import dask_executor

    return dg.define_asset_job(
        DASK_JOB,
        selection=dg.AssetSelection.all(),
        executor_def=dask_executor,
        tags=RUN_TAGS,
        description="The nightly job on a Dask cluster (local by default).",
        config={"execution": {"config": {"cluster": {"local": {"n_workers": 2}}}}},
    )


def nightly_schedule(cron: str, timezone: str, warehouse: Path) -> dg.ScheduleDefinition:
    @dg.schedule(
        name="cdm_nightly_schedule",
        job_name=NIGHTLY_JOB,
        cron_schedule=cron,
        execution_timezone=timezone,
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description="The full pipeline every night. A night killed mid-run (its process gone) is "
        "marked failed first, so the one-run queue does not wait for it forever.",
    )
    def _nightly(context: dg.ScheduleEvaluationContext):
        for run_id in settle_dead_runs(context.instance):
            context.log.warning(f"run {run_id} had died: marked failed")
        return dg.RunRequest(tags={WAREHOUSE_TAG: str(Path(warehouse).resolve())})

    return _nightly


def new_files_sensor(sources: dict[str, SourceSpec], landing_dir: Path) -> dg.SensorDefinition:
    """Start a run when a landing file with unseen content appears (off by default)."""

    @dg.sensor(
        name="cdm_new_landing_files",
        job_name=NIGHTLY_JOB,
        minimum_interval_seconds=300,
        default_status=dg.DefaultSensorStatus.STOPPED,
        description="Runs the pipeline when new landing files arrive. Turn on in the UI.",
    )
    def _sensor(context: dg.SensorEvaluationContext):
        hashes = sorted(
            file_sha256(path)
            for source in sources.values()
            for path in landing_files(landing_dir, source)
        )
        # A content hash, the same in every process (Python's hash() of strings is salted per
        # process, so a restarted daemon saw "new" files every time).
        fingerprint = hashlib.sha256("\n".join(hashes).encode()).hexdigest()
        if hashes and fingerprint != context.cursor:
            context.update_cursor(fingerprint)
            return dg.RunRequest(run_key=fingerprint)
        return dg.SkipReason("no new landing files")

    return _sensor


def dead_runs_sensor() -> dg.SensorDefinition:
    """Mark failed, every minute, a run whose process died (kill -9, a crash, a reboot): the
    queue admits one run, and would otherwise wait for the dead one forever. Dagster's own run
    monitoring cannot see this with the default run launcher. The check is by process id, so it
    holds where runs run on the daemon's machine (the default launcher)."""

    @dg.sensor(
        name="cdm_dead_runs",
        minimum_interval_seconds=60,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Marks failed the runs whose process has died, so the next one can start.",
    )
    def _sensor(context: dg.SensorEvaluationContext):
        settled = settle_dead_runs(context.instance)
        for run_id in settled:
            context.log.warning(f"run {run_id} had died: marked failed")
        return dg.SkipReason(f"{len(settled)} dead run(s) marked failed")

    return _sensor
