"""Resources, chosen in one place from the environment (see ``cdm_pipeline.settings``)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
import duckdb
from dagster_duckdb import DuckDBResource

from cdm_pipeline.config import load_config
from cdm_pipeline.registry import SourceSpec, load_registry
from cdm_pipeline.settings import Settings, load_settings

OWNER = "team:customer-data"
# Every op that opens the DuckDB file carries this tag; the parallel job lets one such op run at
# a time (DuckDB has one writer), while the comparison shards run side by side.
DUCKDB_TAGS = {"cdm/duckdb": "file"}


_QUOTED_VALUE = re.compile(r"'[^']*'|\"(?![A-Za-z_][A-Za-z0-9_.]{0,63}\")[^\"]*\"")


def redact(message: str) -> str:
    """A database error without the data values it quotes ('x@y.com' in a conversion error,
    "order_id: O-1" in a key violation); quoted identifiers ("first_name") stay, for debugging."""
    return _QUOTED_VALUE.sub("<value>", message)


class WarehouseResource(DuckDBResource):
    """The DuckDB warehouse. Unlike its parent it closes the connection when the block fails
    (the parent leaves it open, and the next open in the process is refused), and its errors
    carry no data values: an exception's text reaches Dagster's event log and the terminal."""

    @contextmanager
    def get_connection(self) -> Iterator[duckdb.DuckDBPyConnection]:
        # One writer at a time, said at once: the parent retries a held lock for ~100 s in
        # silence; another process holding the file is an answer, not a hiccup.
        try:
            conn = duckdb.connect(
                self.database,
                read_only=False,
                config={"custom_user_agent": "dagster", **self.connection_config},
            )
        except duckdb.IOException as exc:
            if "lock" not in str(exc).lower():
                raise _sanitised(exc) from None
            holder = re.search(r"PID (\d+)", str(exc))
            raise WarehouseBusy(
                f"the warehouse {self.database} is open by another process"
                + (f" (pid {holder.group(1)})" if holder else "")
                + ": one writer at a time"
            ) from None
        try:
            yield conn
        except duckdb.Error as exc:
            raise _sanitised(exc) from None
        finally:
            conn.close()


class WarehouseBusy(RuntimeError):
    """Another process holds the DuckDB file."""


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
        "warehouse": WarehouseResource(database=str(settings.warehouse_path)),
        "pipeline": PipelineResource(
            landing_dir=str(settings.landing_dir),
            sources_path=str(settings.sources_path),
            config_path=str(settings.pipeline_config_path),
            overrides_path=str(settings.overrides_path),
            exports_dir=str(settings.exports_dir),
            work_dir=str(settings.work_path),
        ),
    }
