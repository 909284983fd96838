"""The Dagster instance that ``cdm run`` and ``cdm ui`` share, so CLI runs show up in the UI."""

from __future__ import annotations

import os
from pathlib import Path

import dagster as dg

DAGSTER_YAML = """\
# Written by cdm. DuckDB has one writer: the queue admits one pipeline run at a time.
run_queue:
  max_concurrent_runs: 1
  tag_concurrency_limits:
    - key: "cdm/warehouse"
      limit: 1
telemetry:
  enabled: false
"""


def dagster_home() -> Path:
    """``$DAGSTER_HOME`` if set, else ``.dagster_home`` in the working directory (created)."""
    home = Path(os.environ.get("DAGSTER_HOME") or Path.cwd() / ".dagster_home").resolve()
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    if not config.exists():
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
