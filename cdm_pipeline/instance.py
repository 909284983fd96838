"""The Dagster instance that ``cdm run`` and ``cdm ui`` share, so CLI runs show up in the UI."""

from __future__ import annotations

import os
from pathlib import Path

import dagster as dg

WRITTEN_BY_CDM = "# Written by cdm"
DAGSTER_YAML = f"""\
{WRITTEN_BY_CDM} (rewritten when cdm's settings change; remove this line to keep your own).
# DuckDB has one writer: the queue admits one pipeline run at a time.
run_queue:
  max_concurrent_runs: 1
  tag_concurrency_limits:
    - key: "cdm/warehouse"
      limit: 1
# A run stuck starting or cancelling is marked failed. Dagster's default run launcher cannot tell
# that a started run's process died; the cdm_dead_runs sensor (and every cdm run) does that.
run_monitoring:
  enabled: true
  start_timeout_seconds: 180
  cancel_timeout_seconds: 180
  poll_interval_seconds: 60
telemetry:
  enabled: false
"""


def dagster_home() -> Path:
    """``$DAGSTER_HOME`` if set, else ``.dagster_home`` in the working directory (created)."""
    home = Path(os.environ.get("DAGSTER_HOME") or Path.cwd() / ".dagster_home").resolve()
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    current = config.read_text(encoding="utf-8") if config.exists() else None
    if current is None or (current.startswith(WRITTEN_BY_CDM) and current != DAGSTER_YAML):
        config.write_text(DAGSTER_YAML, encoding="utf-8")
    nux = home / ".nux" / "nux.yaml"
    if not nux.exists():
        nux.parent.mkdir(exist_ok=True)
        nux.write_text("seen: 1\n", encoding="utf-8")
    os.environ["DAGSTER_HOME"] = str(home)
    return home


def shared_instance() -> dg.DagsterInstance:
    dagster_home()
    return dg.DagsterInstance.get()


IN_PROGRESS = [
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
]
WAREHOUSE_TAG = "cdm/warehouse_file"
# The id ``cdm run`` holds the warehouse's run lock under (the run's own id when it runs in
# process): the run's step processes recognise their launcher's lock by it.
NIGHT_TAG = "cdm/night"


def run_pid(instance: dg.DagsterInstance, run_id: str) -> int | None:
    """The process that started the run (its run worker; step processes come and go), or None
    while it has not started."""
    started = instance.get_records_for_run(
        run_id, of_type=dg.DagsterEventType.RUN_START, limit=1
    ).records
    event = started[0].event_log_entry.dagster_event if started else None
    return event.pid if event is not None else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def settle_dead_runs(instance: dg.DagsterInstance) -> list[str]:
    """Mark failed every run still recorded as in progress whose process has died (kill -9, a
    crash, a reboot): otherwise the queue, which admits one run, waits for it forever. Returns
    the run ids settled."""
    settled = []
    for run in instance.get_runs(filters=dg.RunsFilter(statuses=IN_PROGRESS)):
        pid = run_pid(instance, run.run_id)
        if pid is not None and not _alive(pid):
            instance.report_run_failed(run, f"the run's process (pid {pid}) is gone: marked failed")
            settled.append(run.run_id)
    return settled


def running_on(instance: dg.DagsterInstance, warehouse: Path) -> list[tuple[str, int | None]]:
    """``(run_id, pid)`` of live runs writing ``warehouse`` (or not saying which file)."""
    target = str(Path(warehouse).resolve())
    return [
        (run.run_id, run_pid(instance, run.run_id))
        for run in instance.get_runs(filters=dg.RunsFilter(statuses=IN_PROGRESS))
        if run.tags.get(WAREHOUSE_TAG, target) == target
    ]
