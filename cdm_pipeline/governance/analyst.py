"""What analysts may read: the pseudonymised ``analytics`` views and the analyst file made of them.

DuckDB has no users, so the boundary is a file: ``analyst.duckdb`` holds only the views' tables,
and is checked for identifying values before anyone can open it.
"""

from __future__ import annotations

from pathlib import Path

import duckdb

from cdm_pipeline.golden.build import CUSTOMER_PII
from cdm_pipeline.governance.keys import secret_key
from cdm_pipeline.warehouse import quote_ident, sql_text

ANALYTICS_TABLES = ("customers", "orders", "interactions", "survey_responses", "consent_ledger")
# What no analytics view may show by name: the golden record's personal columns, and the ids and
# free text that lead back to a person.
PII_COLUMN_NAMES = CUSTOMER_PII | {"full_name", "customer_id", "comment", "postal_code"}


def create_analytics_views(conn: duckdb.DuckDBPyConnection) -> tuple[int, list[str]]:
    """(Re)create the ``analytics`` views (``sql/analytics/views.sql``); returns how many views
    there are and the ``view.column`` names among them that are PII by name (none is allowed)."""
    secret_key(conn)
    conn.execute(sql_text("analytics/views"))
    columns = conn.execute(
        "select table_name, column_name from information_schema.columns "
        "where table_schema = 'analytics'"
    ).fetchall()
    exposed = sorted({f"{t}.{c}" for t, c in columns if c in PII_COLUMN_NAMES})
    return len({t for t, _ in columns}), exposed


def export_analyst_database(conn: duckdb.DuckDBPyConnection, target: Path) -> dict[str, int]:
    """Write the analytics views as plain tables into a new DuckDB file ``target`` (replaced
    if it exists). The caller checks it (``pii_values_in``) before putting it where analysts
    read it: a night's analyst file is put in place when the night is published."""
    target.parent.mkdir(parents=True, exist_ok=True)
    target.unlink(missing_ok=True)
    conn.execute("attach ? as analyst_export (read_only false)", [str(target)])
    try:
        counts = {}
        for table in ANALYTICS_TABLES:
            conn.execute(
                f"create table analyst_export.{quote_ident(table)} as select * from analytics.{quote_ident(table)}"
            )
            counts[table] = conn.execute(
                f"select count(*) from analyst_export.{quote_ident(table)}"
            ).fetchall()[0][0]
    finally:
        conn.execute("detach analyst_export")
    return counts


def staged_analyst_file(target: Path) -> Path:
    """Where a night writes the analyst file until the night is published."""
    return target.with_name(f".{target.stem}.night{target.suffix}")


def pii_values_in(conn: duckdb.DuckDBPyConnection, analyst_file: Path) -> int:
    """How many text values in the analyst database equal an email, phone, full name or street held
    in the warehouse."""
    conn.execute("attach ? as analyst_check (read_only)", [str(analyst_file)])
    try:
        columns = conn.execute(
            "select table_name, column_name from information_schema.columns where table_catalog = 'analyst_check' "
            "and data_type = 'VARCHAR'"
        ).fetchall()
        if not columns:
            return 0
        # The analyst side's distinct values are few (masked): the warehouse's identifying
        # values are streamed past them, not gathered into a set of their own.
        texts = " union all ".join(
            f"select lower({quote_ident(column)}) as v from analyst_check.{quote_ident(table)}"
            for table, column in columns
        )
        conn.execute(
            "create or replace temp table analyst_values as "
            f"select v, count(*) as occurrences from ({texts}) where length(v) > 3 group by v"
        )
        # Identifying values only: emails, phones, full names and street addresses. A single first
        # or last name is no identifier on its own (and collides with place names: "Chester").
        return conn.execute(
            "with identifying as ("
            "select unnest([email, phone, street, first_name || ' ' || last_name]) as v from mart.customers "
            "union all select unnest([email_raw, phone_raw, full_name_raw, email, phone_e164, street_raw, "
            "first_name || ' ' || last_name]) from identity.person_records), "
            "found as (select distinct a.v from identifying i join analyst_values a on a.v = lower(trim(i.v))) "
            "select coalesce(sum(occurrences), 0) from analyst_values where v in (select v from found) "
            # Cities are allowed in the analyst database; Faker-like "West Michael" is a city too.
            "and v not in (select lower(trim(city_raw)) from identity.person_records where city_raw is not null)"
        ).fetchall()[0][0]
    finally:
        conn.execute("drop table if exists analyst_values")
        conn.execute("detach analyst_check")


def file_columns(path: Path) -> list[tuple[str, str]]:
    """Every table's columns in a DuckDB file: (``table.column``, type)."""
    with duckdb.connect(str(path), read_only=True) as db:
        return db.execute(
            "select table_name || '.' || column_name, lower(data_type) "
            "from information_schema.columns order by table_name, ordinal_position"
        ).fetchall()
