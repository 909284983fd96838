"""Retention: rows older than their source's retention period are purged every night."""

from __future__ import annotations

from datetime import datetime, timedelta

import duckdb

from cdm_pipeline.governance.removal import landed_rows_where, remove_landed_rows
from cdm_pipeline.ingest.reader import ROW_NUMBER
from cdm_pipeline.registry import SourceSpec
from cdm_pipeline.warehouse import quote_ident, table_exists


def apply_retention(
    conn: duckdb.DuckDBPyConnection, sources: dict[str, SourceSpec], retention: dict, now: datetime
) -> dict[str, int]:
    """Delete expired rows (call inside a transaction); returns landed rows purged per table.

    A staged row whose event is older than its source's ``retention_days`` goes (a newer version
    of the same record stays); a quarantined row goes after ``quarantine_days`` with its raw copy. Both are counted in the ledger (``removal``)."""
    purged: dict[str, int] = {}
    for source in sources.values():
        days = source.retention_days or retention.get("default_source_days")
        if not days or not table_exists(conn, "staging", source.name):
            continue
        event_at = quote_ident(source.event_at)
        rows = (
            f"select _file_sha256 as file_sha256, {ROW_NUMBER} as row_number "
            f"from staging.{quote_ident(source.name)} "
            f"where try_cast({event_at} as timestamp) < $cutoff"
        )
        n = remove_landed_rows(
            conn,
            source.name,
            rows,
            {"cutoff": now - timedelta(days=int(days))},
            "purged",
            now,
        )
        if n:
            purged[f"staging.{source.name}"] = n
    days = retention.get("quarantine_days")
    if days and table_exists(conn, "quarantine", "rejected_rows"):
        cutoff = now - timedelta(days=int(days))
        for source in sources.values():
            if not table_exists(conn, "raw", source.name):
                continue
            rows = landed_rows_where(source.name, "false", "quarantined_at < $cutoff")
            n = remove_landed_rows(
                conn, source.name, rows, {"cutoff": cutoff, "source": source.name}, "purged", now
            )
            if n:
                purged[f"quarantine.rejected_rows ({source.name})"] = n
        # Rejected rows of a source no longer registered have no ledger to balance.
        (n,) = conn.execute(
            "delete from quarantine.rejected_rows where quarantined_at < ? "
            "and source not in (select unnest(?))",
            [cutoff, list(sources)],
        ).fetchall()[0]
        if n:
            purged["quarantine.rejected_rows (unregistered sources)"] = n
    return purged
