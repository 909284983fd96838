"""Resources, chosen in one place from the environment (see ``cdm_pipeline.locations``)."""

from __future__ import annotations

import fcntl
import os
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
import duckdb
from dagster_duckdb import DuckDBResource
from pydantic import PrivateAttr

from cdm_pipeline.instance import NIGHT_TAG
from cdm_pipeline.locations import Settings, load_settings
from cdm_pipeline.pipeline_config import load_config
from cdm_pipeline.publish import (
    WarehouseBusy,
    acquire_run_lock,
    draft_path,
    held_by_another_process,
    held_here,
    holds_run_lock,
    release_run_lock,
    start_draft,
)
from cdm_pipeline.registry import SourceSpec, load_registry

OWNER = "team:customer-data"
# Every op that opens the DuckDB file carries this tag; the parallel job lets one such op run at
# a time (DuckDB has one writer), while the comparison shards run side by side.
DUCKDB_TAGS = {"cdm/duckdb": "file"}
# DuckDB's own default is 80 % of the machine, most of it a cache of blocks it wrote; polars works
# in the same process. Above this DuckDB evicts its cache and spills to disk (measured at 10M
# records: appending 68M scored pairs grew the process by 3.7 GB by default, 0.1 GB at 1 GB).
# ``CDM_DUCKDB_MEMORY_LIMIT`` overrides it ("8GB", "25%").
DUCKDB_MEMORY_LIMIT = "4GB"


def duckdb_memory_limit() -> str:
    """The limit every DuckDB of the night runs under (and the benchmarks' comparators)."""
    return os.environ.get("CDM_DUCKDB_MEMORY_LIMIT", DUCKDB_MEMORY_LIMIT)


_QUOTED_VALUE = re.compile(r"'[^']*'|\"(?![A-Za-z_][A-Za-z0-9_.]{0,63}\")[^\"]*\"")


def redact(message: str) -> str:
    """A database error without the data values it quotes ('x@y.com' in a conversion error,
    "order_id: O-1" in a key violation); quoted identifiers ("first_name") stay, for debugging."""
    return _QUOTED_VALUE.sub("<value>", message)


class WarehouseResource(DuckDBResource):
    """The DuckDB warehouse. ``database`` is the published file readers open; a run writes a
    draft of it and publishes the draft at its end (``cdm_pipeline.publish``), so readers never
    break a night and a night is seen all at once or not at all. Unlike its parent it closes
    the connection when the block fails (the parent leaves it open, and the next open in the
    process is refused), and its errors carry no data values (an exception's text reaches
    Dagster's event log and the terminal). One run writes a warehouse at a time: the run lock
    is taken before the run's first step (or by ``cdm run`` before it starts); steps of one
    run, in whatever processes or Dask workers, take turns on ``<warehouse>.writer``."""

    _run_id: str | None = PrivateAttr(default=None)
    _locked_here: bool = PrivateAttr(default=False)

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        run = context.run
        self._run_id = run.run_id if run is not None else None
        if run is None or not self._local():
            return
        published = self._published()
        night = run.tags.get(NIGHT_TAG, run.run_id)
        if not held_here(published) and not holds_run_lock(published, night):
            try:
                acquire_run_lock(published, night)  # refused here, before any step
                self._locked_here = True
            except WarehouseBusy:
                if not holds_run_lock(published, night):  # not another step of this run
                    raise

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        if self._locked_here:
            release_run_lock(self._published())
            self._locked_here = False

    @property
    def draft(self) -> Path:
        """Where this run writes (the published file itself outside a run)."""
        return draft_path(self._published()) if self._run_id else self._published()

    def _published(self) -> Path:
        return Path(self.database).resolve()

    def _local(self) -> bool:
        return self.database not in ("", ":memory:") and ":" not in self.database.split("/")[0]

    @contextmanager
    def get_connection(self) -> Iterator[duckdb.DuckDBPyConnection]:
        if not self._local():
            with self._connection(self.database) as conn:
                yield conn
            return
        with _writer_turn(Path(self.database + ".writer"), self._run_id):
            path = self._published()
            if self._run_id:
                path = start_draft(path, self._run_id)
            with self._connection(str(path)) as conn:
                yield conn

    @contextmanager
    def _connection(self, database: str) -> Iterator[duckdb.DuckDBPyConnection]:
        # One writer at a time, said at once: the parent retries a held lock for ~100 s in
        # silence; another process holding the file is an answer, not a hiccup.
        try:
            conn = duckdb.connect(
                database,
                read_only=False,
                config={"custom_user_agent": "dagster", **self.connection_config},
            )
        except duckdb.IOException as exc:
            busy = held_by_another_process(exc, database, "(one writer at a time)")
            raise (busy or _sanitised(exc)) from None
        try:
            yield conn
        except duckdb.Error as exc:
            raise _sanitised(exc) from None
        finally:
            conn.close()


@contextmanager
def _writer_turn(path: Path, run_id: str | None) -> Iterator[None]:
    """Hold the warehouse's writer lock (an OS file lock, released if the process dies). A step
    of the run that holds it waits its turn; anyone else is refused at once."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(handle)
            if run_id is None or holder != run_id:
                raise WarehouseBusy(
                    f"the warehouse {path.with_suffix('')} is being written by run "
                    f"{holder or '(unknown)'}: one writer at a time"
                ) from None
            fcntl.flock(handle, fcntl.LOCK_EX)  # a step of this run: wait for its turn
        try:
            handle.seek(0)
            handle.truncate()
            handle.write(run_id or "")
            handle.flush()
            yield
        finally:
            handle.seek(0)
            handle.truncate()
            handle.flush()
            fcntl.flock(handle, fcntl.LOCK_UN)


def _holder(handle) -> str:
    """The run id the lock's holder wrote (it writes right after taking the lock)."""
    for _ in range(50):
        handle.seek(0)
        text = handle.read().strip()
        if text:
            return text
        time.sleep(0.01)
    return ""


def _sanitised(exc: duckdb.Error) -> duckdb.Error:
    message = redact(str(exc))
    try:
        return type(exc)(message)
    except TypeError:
        return duckdb.Error(f"{type(exc).__name__}: {message}")


class PipelineResource(dg.ConfigurableResource):
    """Where the landing files, the registry, the settings and the steward files live."""

    landing_dir: str
    sources_path: str
    config_path: str
    overrides_path: str
    exports_dir: str
    work_dir: str

    def run_work_dir(self, run_id: str) -> Path:
        return Path(self.work_dir) / run_id

    def registry(self) -> dict[str, SourceSpec]:
        return load_registry(Path(self.sources_path))

    def config(self) -> dict:
        return load_config(Path(self.config_path))


def build_resources(settings: Settings | None = None) -> dict[str, object]:
    settings = settings or load_settings()
    settings.warehouse_path.parent.mkdir(parents=True, exist_ok=True)
    return {
        "warehouse": WarehouseResource(
            database=str(settings.warehouse_path),
            connection_config={"memory_limit": duckdb_memory_limit()},
        ),
        "pipeline": PipelineResource(
            landing_dir=str(settings.landing_dir),
            sources_path=str(settings.sources_path),
            config_path=str(settings.pipeline_config_path),
            overrides_path=str(settings.overrides_path),
            exports_dir=str(settings.exports_dir),
            work_dir=str(settings.work_path),
        ),
    }
