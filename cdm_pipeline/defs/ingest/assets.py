"""One ``raw.<source>`` asset per registered source, with its checks."""

from datetime import datetime
from pathlib import Path

import dagster as dg
from dagster_duckdb import DuckDBResource

from cdm_pipeline.defs.keys import INGEST_GROUP
from cdm_pipeline.defs.metadata import source_column_schema, table_metadata
from cdm_pipeline.defs.resources import DUCKDB_TAGS, OWNER, PipelineResource
from cdm_pipeline.ingest.load import (
    last_delivery,
    load_new_files,
    open_rejections,
    recent_loads,
    record_load,
)
from cdm_pipeline.quality import robust_z
from cdm_pipeline.registry import SourceSpec
from cdm_pipeline.warehouse import audit

NO_REJECTED_FILES_CHECK = "no_rejected_files"
ROW_COUNT_ANOMALY_CHECK = "row_count_anomaly"
DELIVERED_RECENTLY_CHECK = "delivered_recently"


def raw_asset(source: SourceSpec) -> dg.AssetsDefinition:
    key = dg.AssetKey(["raw", source.name])

    @dg.asset(
        op_tags=DUCKDB_TAGS,
        key=key,
        group_name=INGEST_GROUP,
        owners=[OWNER],
        kinds={"duckdb", source.format},
        description=(
            f"`raw.{source.name}`: rows of `{source.path}` as landed (text), one load per file "
            f"content hash, with file name, sha256, row number and load time."
        ),
        metadata={
            "dagster/column_schema": source_column_schema(source, typed=False),
            "source_path": source.path,
        },
        check_specs=[
            dg.AssetCheckSpec(
                NO_REJECTED_FILES_CHECK,
                asset=key,
                description="No landing file of this source is rejected (unreadable, empty, wrong "
                "encoding, missing columns, outside the landing folder) and still open: fails on "
                "every run until the file is replaced or a steward acknowledges it "
                "(`cdm acknowledge-file`). Not blocking: the source's other files and every other "
                "source flow on.",
            ),
            dg.AssetCheckSpec(
                ROW_COUNT_ANOMALY_CHECK,
                asset=key,
                blocking=True,
                description="Rows landed this run are within a robust z-score of this source's "
                "own history (an error, which stops the night, once there are "
                "`quality.anomaly_min_history` past loads; a warning before). Nothing landed "
                "tonight is a warning with its count.",
            ),
            dg.AssetCheckSpec(
                DELIVERED_RECENTLY_CHECK,
                asset=key,
                description="The source delivered a file that loaded within "
                "`quality.max_days_without_delivery` days (a warning: a feed that stopped).",
            ),
        ],
    )
    def _raw(
        context: dg.AssetExecutionContext, warehouse: DuckDBResource, pipeline: PipelineResource
    ):
        config = pipeline.config()
        quality = config["quality"]
        with warehouse.get_connection() as conn:
            summary = load_new_files(
                conn,
                source,
                Path(pipeline.landing_dir),
                context.run.run_id,
                tuple(config["standardise"]["phone_regions"]),
                config["ingest"]["max_field_chars"],
                config["ingest"]["control_characters"],
            )
            history = recent_loads(conn, source.name, quality["anomaly_history_runs"])
            record_load(conn, context.run.run_id, source.name, summary.rows_loaded, datetime.now())
            still_open = open_rejections(conn, source.name)
            fresh = _delivered_recently(conn, source.name, quality, datetime.now())
            shown = table_metadata(conn, f"raw.{source.name}", set(source.identity_columns))
            audit(
                conn,
                context.run.run_id,
                "ingested",
                f"raw.{source.name}",
                summary.rows_loaded,
                f"{summary.files_loaded} files loaded, {summary.files_rejected} rejected",
            )
        for message in summary.rejections:
            context.log.error(f"rejected landing file for {source.name}: {message}")
        anomaly = _row_count_anomaly(summary.rows_loaded, history, quality)
        return dg.MaterializeResult(
            metadata={
                "files_seen": summary.files_seen,
                "files_loaded": summary.files_loaded,
                "files_skipped_already_loaded": summary.files_skipped,
                "files_rejected": summary.files_rejected,
                "rows_loaded": summary.rows_loaded,
                "rows_suppressed_erased_people": summary.rows_suppressed,
                **shown,
            },
            check_results=[
                dg.AssetCheckResult(
                    check_name=NO_REJECTED_FILES_CHECK,
                    passed=not still_open,
                    severity=dg.AssetCheckSeverity.ERROR,
                    metadata={
                        "rejected_files_open": len(still_open),
                        "rejected_tonight": summary.files_rejected,
                        "reasons": dg.MetadataValue.md(
                            "\n".join(f"- {reason}" for _, reason in still_open) or "none"
                        ),
                    },
                ),
                anomaly,
                fresh,
            ],
        )

    return _raw


def _row_count_anomaly(rows: int, history: list[int], quality: dict) -> dg.AssetCheckResult:
    """Nothing landed: a warning with its count. Too short a history: judged from what there
    is once there are two loads, and said so. Otherwise a robust z-score (an error)."""
    metadata: dict = {"rows_loaded": rows, "history_runs": len(history)}
    if rows == 0:
        metadata["note"] = "nothing landed tonight"
        return dg.AssetCheckResult(
            check_name=ROW_COUNT_ANOMALY_CHECK,
            passed=False,
            severity=dg.AssetCheckSeverity.WARN,
            metadata=metadata,
        )
    if len(history) < 2:
        metadata["note"] = "the source's first loads: no history to compare with"
        return dg.AssetCheckResult(
            check_name=ROW_COUNT_ANOMALY_CHECK, passed=True, metadata=metadata
        )
    z = robust_z(rows, history)
    metadata["robust_z"] = round(z, 2)
    judged = len(history) >= quality["anomaly_min_history"]
    if not judged:
        metadata["note"] = f"{len(history)} past loads: a warning until there are enough"
    return dg.AssetCheckResult(
        check_name=ROW_COUNT_ANOMALY_CHECK,
        passed=abs(z) <= quality["anomaly_max_z"],
        severity=dg.AssetCheckSeverity.ERROR if judged else dg.AssetCheckSeverity.WARN,
        metadata=metadata,
    )


def _delivered_recently(conn, source: str, quality: dict, now: datetime) -> dg.AssetCheckResult:
    """Days since this source last delivered a file that loaded (from the file ledger)."""
    last = last_delivery(conn, source)
    limit = quality["max_days_without_delivery"]
    days = None if last is None else (now - last).total_seconds() / 86400
    return dg.AssetCheckResult(
        check_name=DELIVERED_RECENTLY_CHECK,
        passed=days is not None and days <= limit,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "days_since_last_delivery": round(days, 1) if days is not None else -1,
            "max_days_without_delivery": limit,
        },
    )
