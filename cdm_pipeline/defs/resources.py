"""Resources, chosen in one place from the environment (see ``cdm_pipeline.settings``)."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
from dagster_duckdb import DuckDBResource

from cdm_pipeline.config import load_config
from cdm_pipeline.registry import SourceSpec, load_registry
from cdm_pipeline.settings import Settings, load_settings

OWNER = "team:customer-data"
# Every op that opens the DuckDB file carries this tag; the parallel job lets one such op run at
# a time (DuckDB has one writer), while the comparison shards run side by side.
DUCKDB_TAGS = {"cdm/duckdb": "file"}


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
        "warehouse": DuckDBResource(database=str(settings.warehouse_path)),
        "pipeline": PipelineResource(
            landing_dir=str(settings.landing_dir),
            sources_path=str(settings.sources_path),
            config_path=str(settings.pipeline_config_path),
            overrides_path=str(settings.overrides_path),
            exports_dir=str(settings.exports_dir),
            work_dir=str(settings.work_path),
        ),
    }
