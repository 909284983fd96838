"""Serving: the analytics views and the analyst file (``cdm_pipeline.governance.analyst``), and the
night's last step, which publishes the draft the run wrote all at once (``cdm_pipeline.publish``)."""

import time
from pathlib import Path

import dagster as dg
import duckdb
from dagster_duckdb import DuckDBResource

from cdm_pipeline.defs.keys import ANALYST_DB, ANALYTICS, PRIVACY_LOG, PUBLISHED, SERVE_GROUP
from cdm_pipeline.defs.metadata import table_metadata, tally_metadata
from cdm_pipeline.defs.resources import DUCKDB_TAGS, OWNER, PipelineResource, WarehouseResource
from cdm_pipeline.governance.analyst import (
    create_analytics_views,
    export_analyst_database,
    file_columns,
    pii_values_in,
    staged_analyst_file,
)
from cdm_pipeline.publish import publish, rows_deleted_in_run, table_counts
from cdm_pipeline.warehouse import audit, transaction

ANALYTICS_PII_CHECK = "no_pii_columns_in_analytics"
ANALYST_DB_PII_CHECK = "no_pii_in_analyst_database"
PUBLISHED_CHECK = "published_is_tonights_night"
# Tables whose row counts are compared before and after the rename.
COUNTED = ("mart.customers", "mart.customer_xref", "identity.match_pairs", "raw.file_ledger")


def analytics_assets() -> dg.AssetsDefinition:
    @dg.asset(
        op_tags=DUCKDB_TAGS,
        key=ANALYTICS,
        deps=[PRIVACY_LOG],
        group_name=SERVE_GROUP,
        owners=[OWNER],
        kinds={"duckdb", "sql"},
        description="The analytics schema: views over the mart with PII removed and customers pseudonymised "
        "(customer_key = keyed hash of customer_id, stable across runs so joins work).",
        check_specs=[
            dg.AssetCheckSpec(
                ANALYTICS_PII_CHECK,
                asset=ANALYTICS,
                blocking=True,
                description="No analytics view exposes a PII column name.",
            )
        ],
    )
    def _analytics(context: dg.AssetExecutionContext, warehouse: DuckDBResource):
        with warehouse.get_connection() as conn, transaction(conn):
            views, exposed = create_analytics_views(conn)
            shown = table_metadata(conn, "analytics.customers")
        return dg.MaterializeResult(
            metadata={"views": views, **shown},
            check_results=[
                dg.AssetCheckResult(
                    check_name=ANALYTICS_PII_CHECK,
                    passed=not exposed,
                    metadata={"pii_columns": dg.MetadataValue.json(exposed)},
                )
            ],
        )

    return _analytics


def analyst_database_asset() -> dg.AssetsDefinition:
    @dg.asset(
        op_tags=DUCKDB_TAGS,
        key=ANALYST_DB,
        deps=[ANALYTICS],
        group_name=SERVE_GROUP,
        owners=[OWNER],
        kinds={"duckdb"},
        description="A separate DuckDB file (analyst.duckdb in the exports folder) holding only the "
        "pseudonymised analytics tables, for analysts who must not see PII. DuckDB has no users: "
        "the boundary is the file. Written beside its place and checked there; put in place when "
        "the night is published.",
        check_specs=[
            dg.AssetCheckSpec(
                ANALYST_DB_PII_CHECK,
                asset=ANALYST_DB,
                blocking=True,
                description="No text value in the analyst database is a name, email, phone or "
                "street held in the warehouse.",
            )
        ],
    )
    def _analyst_db(
        context: dg.AssetExecutionContext, warehouse: DuckDBResource, pipeline: PipelineResource
    ):
        target = Path(pipeline.exports_dir) / "analyst.duckdb"
        staged = staged_analyst_file(target)
        with warehouse.get_connection() as conn:
            counts = export_analyst_database(conn, staged)
            leaked = pii_values_in(conn, staged)
            audit(
                conn,
                context.run.run_id,
                "exported",
                "analyst database",
                sum(counts.values()),
                str(target.name),
            )
        schema = dg.TableSchema(
            columns=[dg.TableColumn(name=n, type=k) for n, k in file_columns(staged)]
        )
        if leaked:  # never where analysts read it; the night is not published either
            staged.unlink()
        return dg.MaterializeResult(
            metadata={
                "path": str(target),
                **tally_metadata(counts, "table", "rows"),
                "dagster/column_schema": schema,
            },
            check_results=[
                dg.AssetCheckResult(
                    check_name=ANALYST_DB_PII_CHECK,
                    passed=leaked == 0,
                    metadata={"pii_values_found": leaked},
                )
            ],
        )

    return _analyst_db


def published_warehouse_asset(upstream: list[dg.AssetKey]) -> dg.AssetsDefinition:
    @dg.asset(
        key=PUBLISHED,
        deps=upstream,
        op_tags=DUCKDB_TAGS,
        group_name=SERVE_GROUP,
        owners=[OWNER],
        kinds={"duckdb"},
        description="The night, published: the draft every step wrote replaces the warehouse "
        "file readers open, in one rename, and tonight's analyst file takes its place. Runs only "
        "when every step before it succeeded and no blocking check failed, so readers see the "
        "last good night or this one, never a mix. After an erasure or a retention purge the "
        "draft is first copied into a fresh file: no deleted value stays readable in it. A run "
        "that does not reach this step (a partial selection, a failure) publishes nothing.",
        check_specs=[
            dg.AssetCheckSpec(
                PUBLISHED_CHECK,
                asset=PUBLISHED,
                description="What readers open now holds tonight's tables: the row counts of "
                "the customers, the xref, the match pairs and the file ledger in the published "
                "file equal the draft's before the rename.",
            )
        ],
    )
    def _published(
        context: dg.AssetExecutionContext,
        warehouse: WarehouseResource,
        pipeline: PipelineResource,
    ) -> dg.MaterializeResult:
        with warehouse.get_connection() as conn:
            deleted = rows_deleted_in_run(conn, context.run.run_id)
            drafted = table_counts(conn, COUNTED)
        started = time.perf_counter()
        target = Path(warehouse.database)
        publish(target, deleted > 0, warehouse.connection_config.get("memory_limit"))
        with duckdb.connect(str(target), read_only=True) as conn:
            published = table_counts(conn, COUNTED)
        analyst = Path(pipeline.exports_dir) / "analyst.duckdb"
        staged = staged_analyst_file(analyst)
        if staged.exists():
            staged.replace(analyst)
        return dg.MaterializeResult(
            metadata={
                "path": str(target),
                "bytes": target.stat().st_size,
                "rewritten_after_deletes": deleted > 0,
                "rows_deleted_tonight": int(deleted),
                "seconds": round(time.perf_counter() - started, 2),
            },
            check_results=[
                dg.AssetCheckResult(
                    check_name=PUBLISHED_CHECK,
                    passed=published == drafted,
                    metadata={f"{t} rows": n for t, n in published.items()},
                )
            ],
        )

    return _published


def upstream_of_publish(assets: list) -> list[dg.AssetKey]:
    """Every asset the night builds (the publish step waits for all of them)."""
    keys = []
    for definition in assets:
        keys += list(definition.keys)
    return [k for k in keys if k != PUBLISHED]
