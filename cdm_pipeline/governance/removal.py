"""Removing landed rows on purpose (retention, erasure) without losing count of them.

A landed row lives in ``raw.<source>`` and in exactly one of ``staging.<source>`` or
``quarantine.rejected_rows``, all three knowing it by its file hash and line number. It is removed
from the three together, and the file's ledger row counts it as ``purged_rows`` (retention) or
``erased_rows`` (erasure), so that every loaded file balances at rest, every night:

    row_count = raw + purged_rows + erased_rows      and      raw = staged + quarantined

(``sql/warehouse/rows_accounted.sql``). Nothing leaves the landed tables any other way.
"""

from __future__ import annotations

import re
from datetime import datetime

import duckdb

from cdm_pipeline.ingest.reader import ROW_NUMBER
from cdm_pipeline.registry import SourceSpec
from cdm_pipeline.warehouse import quote_ident, sql_text, table_exists

LEDGER_COLUMN = {"purged": "purged_rows", "erased": "erased_rows"}
LEAVING = "_leaving_rows"


def remove_landed_rows(
    conn: duckdb.DuckDBPyConnection,
    source: str,
    rows_sql: str,
    params: dict,
    cause: str,
    now: datetime,
) -> int:
    """Remove the landed rows of ``source`` that ``rows_sql`` names (it yields ``file_sha256,
    row_number``) from raw, staging and quarantine, counting them in the ledger under ``cause``
    ('purged' or 'erased'). Returns how many landed rows went."""
    column = LEDGER_COLUMN[cause]
    conn.execute(
        f"create or replace temp table {LEAVING} as "
        f"select distinct file_sha256, row_number from ({rows_sql})",
        params,
    )
    raw = f"raw.{quote_ident(source)}"
    matches = f"t._file_sha256 = d.file_sha256 and t.{ROW_NUMBER} = d.row_number"
    conn.execute(
        f"update raw.file_ledger l set {column} = coalesce(l.{column}, 0) + c.n, purged_at = $now "
        f"from (select t._file_sha256 as sha, count(*) as n from {raw} t join {LEAVING} d on {matches} "
        "group by 1) c where l.source = $source and l.status = 'loaded' and l.file_sha256 = c.sha",
        {"now": now, "source": source},
    )
    (removed,) = conn.execute(f"delete from {raw} t using {LEAVING} d where {matches}").fetchall()[
        0
    ]
    if table_exists(conn, "staging", source):
        conn.execute(
            f"delete from staging.{quote_ident(source)} t using {LEAVING} d where {matches}"
        )
    conn.execute(
        f"delete from quarantine.rejected_rows q using {LEAVING} d where q.source = $source "
        "and q.file_sha256 = d.file_sha256 and q.row_number = d.row_number",
        {"source": source},
    )
    conn.execute(f"drop table {LEAVING}")
    return removed


def landed_rows_where(source: str, raw_condition: str, quarantine_condition: str) -> str:
    """SQL naming the landed rows of ``source`` whose raw row meets ``raw_condition`` or whose
    quarantine row meets ``quarantine_condition`` (``$source`` is the source name)."""
    return (
        f"select _file_sha256 as file_sha256, {ROW_NUMBER} as row_number "
        f"from raw.{quote_ident(source)} where {raw_condition} "
        "union select file_sha256, row_number from quarantine.rejected_rows "
        f"where source = $source and ({quarantine_condition})"
    )


def unbalanced_files(conn: duckdb.DuckDBPyConnection, source: SourceSpec) -> list[dict]:
    """Loaded files of ``source`` whose rows do not add up (see the module docstring)."""
    if not table_exists(conn, "raw", source.name):
        return []
    staging = (
        f"staging.{quote_ident(source.name)}"
        if table_exists(conn, "staging", source.name)
        else f"(select * from raw.{quote_ident(source.name)} limit 0)"
    )
    query = (
        sql_text("warehouse/rows_accounted")
        .replace("raw_table", f"raw.{quote_ident(source.name)}")
        .replace("staging_table", staging)
    )
    cursor = conn.execute(query, {"source": source.name})
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def used_params(sql: str, params: dict) -> dict:
    """DuckDB refuses a parameter the statement does not use: pass only those it names."""
    return {k: v for k, v in params.items() if re.search(rf"\${k}\b", sql)}


def anonymise_rows(
    conn: duckdb.DuckDBPyConnection, source: SourceSpec, condition: str, params: dict | None = None
) -> None:
    """Empty the identity columns of the raw and staged rows meeting ``condition``."""
    for schema in ("raw", "staging"):
        if not table_exists(conn, schema, source.name):
            continue
        sets = [f"{quote_ident(c)} = null" for c in source.identity_columns]
        sets += ["_extra = null"] if schema == "raw" else []
        statement = (
            f"update {schema}.{quote_ident(source.name)} set {', '.join(sets)} where {condition}"
        )
        conn.execute(statement, used_params(statement, params or {}))
