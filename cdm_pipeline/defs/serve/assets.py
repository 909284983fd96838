"""The night's last step: publish the draft the run wrote, all at once (``cdm_pipeline.publish``)."""

import time
from pathlib import Path

import dagster as dg
import duckdb

from cdm_pipeline.defs.governance.assets import staged_analyst_file
from cdm_pipeline.defs.resources import DUCKDB_TAGS, OWNER, PipelineResource, WarehouseResource
from cdm_pipeline.publish import publish

PUBLISHED = dg.AssetKey(["serve", "published_warehouse"])
PUBLISHED_CHECK = "published_is_tonights_night"
# Tables whose row counts are compared before and after the rename.
COUNTED = ("mart.customers", "mart.customer_xref", "identity.match_pairs", "raw.file_ledger")
# Actions that delete rows: after them the night is copied into a fresh file before it is
# published, so that no deleted value stays readable in the file's free blocks.
DELETING_ACTIONS = ("erased", "purged")


def published_warehouse_asset(upstream: list[dg.AssetKey]) -> dg.AssetsDefinition:
    @dg.asset(
        key=PUBLISHED,
        deps=upstream,
        op_tags=DUCKDB_TAGS,
        group_name="serve",
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
            deleted = conn.execute(
                "select coalesce(sum(row_count), 0) from governance.audit_log "
                f"where run_id = ? and action in ({', '.join('?' * len(DELETING_ACTIONS))})",
                [context.run.run_id, *DELETING_ACTIONS],
            ).fetchall()[0][0]
            drafted = _counts(conn)
        started = time.perf_counter()
        target = Path(warehouse.database)
        publish(target, rewrite=deleted > 0)
        with duckdb.connect(str(target), read_only=True) as conn:
            published = _counts(conn)
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


def _counts(conn) -> dict[str, int]:
    found = {
        f"{schema}.{table}"
        for schema, table in conn.execute(
            "select table_schema, table_name from information_schema.tables"
        ).fetchall()
    }
    return {
        table: conn.execute(f"select count(*) from {table}").fetchall()[0][0]
        for table in COUNTED
        if table in found
    }


def upstream_of_publish(assets: list) -> list[dg.AssetKey]:
    """Every asset the night builds (the publish step waits for all of them)."""
    keys = []
    for definition in assets:
        keys += list(definition.keys)
    return [k for k in keys if k != PUBLISHED]
