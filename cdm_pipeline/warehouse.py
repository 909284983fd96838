"""DuckDB helpers shared by every stage: opening the file, loading SQL from ``sql/``, quoting.

Values always travel as parameters. Identifiers cannot be parameters, so the few that come from
configuration (source and column names in ``sources.yaml``) go through ``quote_ident``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache

import duckdb
import polars as pl

from cdm_pipeline.settings import bundled

SQL_DIR = bundled("sql")
SCHEMAS = ("raw", "staging", "quarantine", "identity", "mart", "governance", "analytics")


def quote_ident(name: str) -> str:
    """Quote an identifier for DuckDB, doubling embedded quotes."""
    return '"' + name.replace('"', '""') + '"'


@cache
def sql_text(name: str) -> str:
    """The text of ``sql/<name>.sql``; names may contain folders (``mart/customers``)."""
    return (SQL_DIR / f"{name}.sql").read_text(encoding="utf-8")


def ensure_schemas(conn: duckdb.DuckDBPyConnection) -> None:
    conn.execute("set enable_progress_bar = false")  # keeps run logs readable
    for schema in SCHEMAS:
        conn.execute(f"create schema if not exists {schema}")


@contextmanager
def transaction(conn: duckdb.DuckDBPyConnection) -> Iterator[duckdb.DuckDBPyConnection]:
    """All or nothing: a failure rolls back so the previous good tables stay as they were."""
    conn.execute("begin transaction")
    try:
        yield conn
    except BaseException:
        conn.execute("rollback")
        raise
    conn.execute("commit")


def table_exists(conn: duckdb.DuckDBPyConnection, schema: str, table: str) -> bool:
    rows = conn.execute(
        "select 1 from information_schema.tables where table_schema = ? and table_name = ?",
        [schema, table],
    ).fetchall()
    return bool(rows)


def replace_table(
    conn: duckdb.DuckDBPyConnection, schema: str, table: str, frame: pl.DataFrame
) -> None:
    """Swap in a new version of a table; callers wrap it in ``transaction`` for atomicity."""
    name = f"{quote_ident(schema)}.{quote_ident(table)}"
    conn.register("_replacement", frame.to_arrow())
    try:
        conn.execute(f"create or replace table {name} as select * from _replacement")
    finally:
        conn.unregister("_replacement")


def append_table(
    conn: duckdb.DuckDBPyConnection, schema: str, table: str, frame: pl.DataFrame
) -> None:
    """Append rows by column name, creating the table from the frame's shape the first time."""
    name = f"{quote_ident(schema)}.{quote_ident(table)}"
    conn.register("_appended", frame.to_arrow())
    try:
        if not table_exists(conn, schema, table):
            conn.execute(f"create table {name} as select * from _appended limit 0")
        conn.execute(f"insert into {name} by name select * from _appended")
    finally:
        conn.unregister("_appended")


def audit(
    conn: duckdb.DuckDBPyConnection,
    run_id: str | None,
    action: str,
    target: str,
    rows: int,
    detail: str | None = None,
) -> None:
    """One row in governance.audit_log: what was done to which table, how many rows (no PII)."""
    conn.execute(
        "insert into governance.audit_log values (?, ?, ?, ?, ?, current_localtimestamp())",
        [run_id, action, target, rows, detail],
    )
