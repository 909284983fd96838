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

from cdm_pipeline.locations import bundled

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
    """Append rows by column name, creating the table from the frame's shape the first time and
    adding the columns a newer version writes (earlier rows hold null there)."""
    name = f"{quote_ident(schema)}.{quote_ident(table)}"
    conn.register("_appended", frame.to_arrow())
    try:
        if not table_exists(conn, schema, table):
            conn.execute(f"create table {name} as select * from _appended limit 0")
        has = {
            row[0]
            for row in conn.execute(
                "select column_name from information_schema.columns "
                "where table_schema = ? and table_name = ?",
                [schema, table],
            ).fetchall()
        }
        for column, kind, *_ in conn.execute("describe _appended").fetchall():
            if column not in has:
                conn.execute(f"alter table {name} add column {quote_ident(column)} {kind}")
        conn.execute(f"insert into {name} by name select * from _appended")
    finally:
        conn.unregister("_appended")


class StagedTable:
    """A table built beside its live version, outside the run's transaction, and swapped in
    inside it (``swap``). DuckDB keeps every row a transaction inserted in memory until it
    commits; rows appended here are committed piece by piece, so a table of tens of millions of
    rows costs one piece of memory, and the live table still changes all at once. Use it as a
    context manager: the staged table is dropped on the way out, swapped in or not (a failed run
    leaves the previous good table and no half-built one)."""

    def __init__(self, conn: duckdb.DuckDBPyConnection, schema: str, table: str):
        self.conn = conn
        self.schema, self.table = schema, table
        self.name = f"{quote_ident(schema)}.{quote_ident('_' + table + '_new')}"
        self.created = False

    def __enter__(self) -> StagedTable:
        self.conn.execute(f"drop table if exists {self.name}")
        return self

    def __exit__(self, *exc) -> None:
        self.conn.execute(f"drop table if exists {self.name}")

    def append(self, frame: pl.DataFrame) -> None:
        self.conn.register("_staged", frame.to_arrow())
        try:
            if self.created:
                self.conn.execute(f"insert into {self.name} by name select * from _staged")
            else:
                self.conn.execute(f"create table {self.name} as select * from _staged")
                self.created = True
        finally:
            self.conn.unregister("_staged")

    def create_as(self, query: str, params: list | None = None) -> None:
        """Start the staged table from a query (of the live tables, say)."""
        self.conn.execute(f"create table {self.name} as {query}", params or [])
        self.created = True

    def swap(self, only: str | None = None) -> None:
        """Replace the live table by the staged one; call it inside the run's transaction.
        With ``only`` (a condition on the live rows) just the live rows it holds for are
        replaced by the staged ones: a night that changed few rows writes few."""
        live = f"{quote_ident(self.schema)}.{quote_ident(self.table)}"
        if only is not None:
            self.conn.execute(f"delete from {live} where {only}")
            if self.created:
                self.conn.execute(f"insert into {live} by name select * from {self.name}")
            return
        if not self.created:
            raise RuntimeError(f"nothing was staged for {self.schema}.{self.table}")
        self.conn.execute(f"drop table if exists {live}")
        self.conn.execute(f"alter table {self.name} rename to {quote_ident(self.table)}")


class ChangedRows:
    """Where a new version of a keyed table differs from the live one: its new and changed rows
    and the keys of the rows it drops or changes, found by DuckDB (a set difference of whole
    rows) outside the run's transaction and applied inside it (``apply``). A night that changes
    1 % of a table then writes 1 % of it, where a staged copy writes it all. Use ``of``: it
    returns None when the columns differ (a newer version of the table), and the caller stages
    a copy instead. The changed rows go to the end of the table."""

    def __init__(self, conn: duckdb.DuckDBPyConnection, schema: str, table: str, key: str):
        self.conn, self.key = conn, key
        self.live = f"{quote_ident(schema)}.{quote_ident(table)}"
        self.rows = quote_ident(f"_{table}_changed")
        self.gone = quote_ident(f"_{table}_dropped_keys")

    @classmethod
    def of(
        cls,
        conn: duckdb.DuckDBPyConnection,
        schema: str,
        table: str,
        key: str,
        frame: pl.DataFrame | str,
        stamp: str | None = None,
    ) -> ChangedRows | None:
        """``frame``: the new version, or the name of a table that holds it. ``stamp``: a
        column that says when a row was written, left out of the comparison (a row that changes
        in nothing else keeps its old stamp)."""
        if not table_exists(conn, schema, table):
            return None
        changes = cls(conn, schema, table, key)
        registered = not isinstance(frame, str)
        new_version = "_new_version" if registered else quote_ident(frame)
        if registered:
            conn.register(new_version, frame.to_arrow())
        try:
            new = conn.execute(f"describe {new_version}").fetchall()
            live = conn.execute(f"describe {changes.live}").fetchall()
            if sorted(c[:2] for c in new) != sorted(c[:2] for c in live):
                return None
            columns = ", ".join(quote_ident(c[0]) for c in live)
            compared = ", ".join(quote_ident(c[0]) for c in live if c[0] != stamp)
            key_column = quote_ident(key)
            conn.execute(
                f"create or replace temp table {changes.rows} as select {columns} "
                f"from {new_version} where {key_column} in (select {key_column} from "
                f"(select {compared} from {new_version} except select {compared} "
                f"from {changes.live}))"
            )
            conn.execute(
                f"create or replace temp table {changes.gone} as select {key_column} "
                f"from {changes.live} where {key_column} in (select {key_column} from "
                f"{changes.rows}) or {key_column} not in (select {key_column} from {new_version})"
            )
        finally:
            if registered:
                conn.unregister(new_version)
        return changes

    def counts(self) -> tuple[int, int]:
        """(rows written, rows deleted)."""
        return tuple(
            self.conn.execute(f"select count(*) from {t}").fetchall()[0][0]
            for t in (self.rows, self.gone)
        )

    def apply(self) -> None:
        """Change the live table; call it inside the run's transaction."""
        key = quote_ident(self.key)
        self.conn.execute(f"delete from {self.live} where {key} in (select {key} from {self.gone})")
        self.conn.execute(f"insert into {self.live} by name select * from {self.rows}")
        self.conn.execute(f"drop table {self.rows}")
        self.conn.execute(f"drop table {self.gone}")


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
