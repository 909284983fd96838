"""Validate the rows of newly landed files and write staging and quarantine in one transaction."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

import duckdb
import polars as pl

from cdm_pipeline.ingest.reader import ROW_NUMBER
from cdm_pipeline.registry import SourceSpec
from cdm_pipeline.validate.contracts import split, to_typed
from cdm_pipeline.warehouse import quote_ident, table_exists, transaction

# Landed rows are validated in slices of about this many (bounded memory at any file size).
VALIDATE_SLICE_ROWS = 1_000_000


@dataclass
class ValidationSummary:
    files: int = 0
    rows_in: int = 0
    rows_staged: int = 0
    rows_quarantined: int = 0
    failed_checks: dict[str, int] = field(default_factory=dict)


def validate_new_files(
    conn: duckdb.DuckDBPyConnection, source: SourceSpec, run_id: str
) -> ValidationSummary:
    """Validate every loaded file not validated yet. ``staging.<source>`` keeps every valid row
    version (history); readers take the latest version per record id from ``staging.<source>_current``."""
    raw = f"raw.{quote_ident(source.name)}"
    pending = [
        r[0]
        for r in conn.execute(
            "select file_sha256 from raw.file_ledger where source = ? and status = 'loaded' and validated_at is null",
            [source.name],
        ).fetchall()
    ]
    summary = ValidationSummary(files=len(pending))
    if not pending:
        _ensure_current_view(conn, source)
        return summary
    conn.register("pending_files", pl.DataFrame({"sha": pending}).to_arrow())
    try:
        rows = conn.execute(
            f"select count(*) from {raw} where _file_sha256 in (select sha from pending_files)"
        ).fetchall()[0][0]
        # Slices by a hash of the record id, so that every row of an id in a file is in one
        # slice (the unique-in-file check sees them together), in file order.
        slices = max(1, -(-rows // VALIDATE_SLICE_ROWS))
        query = (
            f"select * from {raw} where _file_sha256 in (select sha from pending_files) "
            f"and coalesce(hash({quote_ident(source.record_id)}), 0) % ? = ? "
            f"order by _file_sha256, {ROW_NUMBER}"
        )
        now = datetime.now()
        with transaction(conn):
            for number in range(slices):
                landed = conn.sql(query, params=[slices, number]).pl()
                _stage_slice(conn, source, landed, summary, now, run_id)
            conn.executemany(
                "update raw.file_ledger set validated_at = ? where source = ? and file_sha256 = ?",
                [[now, source.name, sha] for sha in pending],
            )
            _ensure_current_view(conn, source)
    finally:
        conn.unregister("pending_files")
    return summary


def _stage_slice(
    conn: duckdb.DuckDBPyConnection,
    source: SourceSpec,
    landed: pl.DataFrame,
    summary: ValidationSummary,
    now: datetime,
    run_id: str,
) -> None:
    """Validate landed rows: the valid ones typed into staging, the rest into quarantine."""
    valid, rejected = split(landed, source)
    typed = to_typed(valid, source)
    quarantine = rejected.select(
        pl.lit(source.name).alias("source"),
        pl.col("_source_file").alias("source_file"),
        pl.col("_file_sha256").alias("file_sha256"),
        pl.col(ROW_NUMBER).cast(pl.Int64).alias("row_number"),
        pl.col(source.record_id).alias("record_id"),
        pl.col("failed_checks"),
        pl.col("raw_row"),
        pl.lit(now).alias("quarantined_at"),
        pl.lit(run_id).alias("run_id"),
    )
    staging = f"staging.{quote_ident(source.name)}"
    conn.register("typed_rows", typed.to_arrow())
    if not table_exists(conn, "staging", source.name):
        conn.execute(f"create table {staging} as select * from typed_rows limit 0")
    conn.execute(f"insert into {staging} by name select * from typed_rows")
    conn.unregister("typed_rows")
    conn.register("rejected_rows", quarantine.to_arrow())
    conn.execute("insert into quarantine.rejected_rows by name select * from rejected_rows")
    conn.unregister("rejected_rows")
    summary.rows_in += landed.height
    summary.rows_staged += typed.height
    summary.rows_quarantined += quarantine.height
    for reasons in quarantine["failed_checks"].to_list():
        for reason in reasons.split("; "):
            summary.failed_checks[reason] = summary.failed_checks.get(reason, 0) + 1


def _ensure_current_view(conn: duckdb.DuckDBPyConnection, source: SourceSpec) -> None:
    """``staging.<source>_current``: one row per record id, the latest version by event time."""
    if not table_exists(conn, "staging", source.name):
        return
    conn.execute(
        f"create or replace view staging.{quote_ident(source.name + '_current')} as "
        + current_rows_sql(source)
    )


def current_rows_sql(source: SourceSpec, where: str = "true") -> str:
    """The latest version of each record id among the staged rows meeting ``where``. A reader
    after a few ids filters here: the ``_current`` view ranks every row before it filters."""
    return (
        f"select * from staging.{quote_ident(source.name)} where {where} "
        f"qualify row_number() over (partition by {quote_ident(source.record_id)} "
        f"order by {quote_ident(source.event_at)} desc nulls last, _loaded_at desc, {ROW_NUMBER} desc) = 1"
    )
