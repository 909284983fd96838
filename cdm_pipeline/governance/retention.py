"""Retention: rows older than their source's retention period are purged every night."""

from __future__ import annotations

from datetime import datetime, timedelta

import duckdb

from cdm_pipeline.registry import SourceSpec
from cdm_pipeline.warehouse import quote_ident, table_exists


def mark_purged_files(
    conn: duckdb.DuckDBPyConnection, raw_table: str, condition: str, now: datetime, params=None
) -> None:
    """Note in the ledger which files lose rows on purpose, so the raw = staged + quarantined
    accounting check stops expecting them."""
    conn.execute(
        f"update raw.file_ledger set purged_at = $now where file_sha256 in "
        f"(select distinct _file_sha256 from {raw_table} where {condition})",
        {"now": now, **(params or {})},
    )


def apply_retention(
    conn: duckdb.DuckDBPyConnection, sources: dict[str, SourceSpec], retention: dict, now: datetime
) -> dict[str, int]:
    """Delete expired rows (call inside a transaction); returns rows purged per table."""
    purged: dict[str, int] = {}
    for source in sources.values():
        days = source.retention_days or retention.get("default_source_days")
        if not days or not table_exists(conn, "staging", source.name):
            continue
        cutoff = now - timedelta(days=int(days))
        staging = f"staging.{quote_ident(source.name)}"
        record_id, event_at = quote_ident(source.record_id), quote_ident(source.event_at)
        expired = [
            r[0]
            for r in conn.execute(
                f"select distinct {record_id} from {staging} where {event_at} < ?", [cutoff]
            ).fetchall()
        ]
        if not expired:
            continue
        conn.execute("create or replace temp table expired_ids (id varchar)")
        conn.executemany("insert into expired_ids values (?)", [[i] for i in expired])
        mark_purged_files(
            conn,
            f"raw.{quote_ident(source.name)}",
            f"{record_id} in (select id from expired_ids)",
            now,
        )
        for schema in ("staging", "raw"):
            result = conn.execute(
                f"delete from {schema}.{quote_ident(source.name)} where {record_id} in (select id from expired_ids)"
            ).fetchall()
            purged[f"{schema}.{source.name}"] = result[0][0]
        conn.execute("drop table expired_ids")
    days = retention.get("quarantine_days")
    if days and table_exists(conn, "quarantine", "rejected_rows"):
        conn.execute(
            "update raw.file_ledger set purged_at = ? where file_sha256 in "
            "(select file_sha256 from quarantine.rejected_rows where quarantined_at < ?)",
            [now, now - timedelta(days=int(days))],
        )
        result = conn.execute(
            "delete from quarantine.rejected_rows where quarantined_at < ?",
            [now - timedelta(days=int(days))],
        ).fetchall()
        purged["quarantine.rejected_rows"] = result[0][0]
    return purged
