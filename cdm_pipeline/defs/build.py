"""Assemble the Definitions: one asset per source per early stage, then the shared stages."""

from __future__ import annotations

import dagster as dg

from cdm_pipeline.defs import jobs
from cdm_pipeline.defs.golden.assets import customer_360_assets
from cdm_pipeline.defs.governance.assets import privacy_assets, retention_asset
from cdm_pipeline.defs.ingest.assets import raw_asset
from cdm_pipeline.defs.progress import LOGGERS
from cdm_pipeline.defs.resolve.assets import (
    every_pair_compared,
    pair_comparisons_asset,
    resolve_assets,
)
from cdm_pipeline.defs.resources import build_resources
from cdm_pipeline.defs.serve.assets import (
    analyst_database_asset,
    analytics_assets,
    published_warehouse_asset,
    upstream_of_publish,
)
from cdm_pipeline.defs.standardise.assets import person_records_asset
from cdm_pipeline.defs.validate.assets import staging_asset
from cdm_pipeline.locations import Settings, load_settings
from cdm_pipeline.pipeline_config import load_config
from cdm_pipeline.registry import load_registry


def build_definitions(settings: Settings | None = None) -> dg.Definitions:
    settings = settings or load_settings()
    sources = load_registry(settings.sources_path)
    config = load_config(settings.pipeline_config_path)
    assets: list = []
    for source in sources.values():
        assets += [raw_asset(source), staging_asset(source)]
    assets += [
        retention_asset(sources),
        person_records_asset(sources),
        pair_comparisons_asset(config["resolve"]["shards"]),
        resolve_assets(),
        customer_360_assets(sources),
        *privacy_assets(sources),
        analytics_assets(),
        analyst_database_asset(),
    ]
    assets.append(published_warehouse_asset(upstream_of_publish(assets)))
    return dg.Definitions(
        assets=assets,
        asset_checks=[every_pair_compared],
        jobs=[jobs.nightly_job(), jobs.parallel_job(), jobs.dask_job()],
        schedules=[
            jobs.nightly_schedule(
                config["schedule"]["cron"],
                config["schedule"]["timezone"],
                settings.warehouse_path,
            )
        ],
        sensors=[jobs.new_files_sensor(sources, settings.landing_dir), jobs.dead_runs_sensor()],
        resources=build_resources(settings),
        loggers=LOGGERS,
    )
