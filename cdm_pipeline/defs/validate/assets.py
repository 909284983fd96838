"""One ``staging.<source>`` asset per registered source: the pandera contract applied to new rows."""

import dagster as dg
from dagster_duckdb import DuckDBResource

from cdm_pipeline.defs.keys import VALIDATE_GROUP
from cdm_pipeline.defs.metadata import source_column_schema, table_metadata
from cdm_pipeline.defs.resources import DUCKDB_TAGS, OWNER, PipelineResource
from cdm_pipeline.governance.removal import unbalanced_files
from cdm_pipeline.registry import SourceSpec
from cdm_pipeline.validate.stage import validate_new_files
from cdm_pipeline.warehouse import audit

ROWS_ACCOUNTED_CHECK = "rows_accounted"
QUARANTINE_RATE_CHECK = "quarantine_rate"


def staging_asset(source: SourceSpec) -> dg.AssetsDefinition:
    key = dg.AssetKey(["staging", source.name])

    @dg.asset(
        op_tags=DUCKDB_TAGS,
        key=key,
        deps=[dg.AssetKey(["raw", source.name])],
        group_name=VALIDATE_GROUP,
        owners=[OWNER],
        kinds={"duckdb", "pandera", "polars"},
        description=(
            f"`staging.{source.name}`: rows of `raw.{source.name}` that pass the `{source.name}` pandera "
            f"contract, typed. Keeps every valid version; `staging.{source.name}_current` has one row "
            f"per `{source.record_id}` (latest by `{source.event_at}`). Failing rows go to "
            "`quarantine.rejected_rows` with their failed checks."
        ),
        metadata={"dagster/column_schema": source_column_schema(source, typed=True)},
        check_specs=[
            dg.AssetCheckSpec(
                ROWS_ACCOUNTED_CHECK,
                asset=key,
                blocking=True,
                description="For every file: landed rows = raw + purged + erased, and raw = staged + quarantined "
                "(nothing lost, at rest too).",
            ),
            dg.AssetCheckSpec(
                QUARANTINE_RATE_CHECK,
                asset=key,
                blocking=True,
                description="The share of this run's rows sent to quarantine is under the configured limit.",
            ),
        ],
    )
    def _staging(
        context: dg.AssetExecutionContext, warehouse: DuckDBResource, pipeline: PipelineResource
    ):
        quality = pipeline.config()["quality"]
        limit, minimum = quality["max_quarantine_rate"], quality["min_rows_for_rates"]
        with warehouse.get_connection() as conn:
            summary = validate_new_files(conn, source, context.run.run_id)
        # Counted on a fresh connection: with DuckDB 2.0.0 we saw a connection that had just
        # committed ~200k inserted rows read 0 of them back (a new connection sees them all).
        with warehouse.get_connection() as conn:
            unbalanced = unbalanced_files(conn, source)
            shown = table_metadata(conn, f"staging.{source.name}", set(source.identity_columns))
            audit(
                conn,
                context.run.run_id,
                "quarantined",
                "quarantine.rejected_rows",
                summary.rows_quarantined,
                f"source={source.name}",
            )
        rate = summary.rows_quarantined / summary.rows_in if summary.rows_in else 0.0
        reasons = sorted(summary.failed_checks.items(), key=lambda kv: -kv[1])
        return dg.MaterializeResult(
            metadata={
                **shown,
                "files_validated": summary.files,
                "rows_in": summary.rows_in,
                "rows_staged": summary.rows_staged,
                "rows_quarantined": summary.rows_quarantined,
                "quarantine_reasons": dg.MetadataValue.md(
                    "| check | rows |\n|---|---|\n"
                    + "\n".join(f"| {r} | {n} |" for r, n in reasons)
                    if reasons
                    else "none"
                ),
            },
            check_results=[
                dg.AssetCheckResult(
                    check_name=ROWS_ACCOUNTED_CHECK,
                    passed=not unbalanced,
                    severity=dg.AssetCheckSeverity.ERROR,
                    metadata={
                        "unbalanced_files": len(unbalanced),
                        "examples": dg.MetadataValue.json(unbalanced[:5]),
                    },
                ),
                dg.AssetCheckResult(
                    check_name=QUARANTINE_RATE_CHECK,
                    # A handful of rows says nothing about an export's health: judge from `minimum` up.
                    passed=rate <= limit or summary.rows_in < minimum,
                    severity=dg.AssetCheckSeverity.ERROR,
                    metadata={
                        "quarantine_rate": round(rate, 4),
                        "limit": limit,
                        "rows_in": summary.rows_in,
                        "judged_from_rows": minimum,
                    },
                ),
            ],
        )

    return _staging
