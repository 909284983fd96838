"""The mart's build, in the order the customer 360 step runs it: golden records slice by slice,
then the fact tables, the consent ledger and ``mart.customers`` (inside the step's transaction),
then what its blocking checks measure before the transaction commits."""

from __future__ import annotations

import duckdb
import polars as pl

from cdm_pipeline.golden.facts import FACTS, build_facts
from cdm_pipeline.golden.records import PERSON_RECORD_COLUMNS, candidates_from, golden_records
from cdm_pipeline.registry import SourceSpec
from cdm_pipeline.warehouse import StagedTable, quote_ident, sql_text, table_exists

# The golden record's columns that hold a person's own values (masked in the UI, never in the
# analytics views).
CUSTOMER_PII = {
    "first_name",
    "last_name",
    "email",
    "phone",
    "street",
    "unit",
    "birth_date",
    "latest_survey_comment",
}
# Each golden column of mart.customers and the attributes whose lineage names its winner (a
# country comes from the country attribute, or else from the winning address).
LINEAGE_OF_COLUMN = {
    "first_name": ("name",),
    "email": ("email",),
    "phone": ("phone",),
    "street": ("address",),
    "birth_date": ("birth_date",),
    "country": ("country", "address"),
}


# Customers are chosen for in slices of about this many records (by a hash of the customer
# id): memory stays bounded however many records the night holds.
GOLDEN_SLICE_RECORDS = 1_000_000
CANDIDATE_QUERY = f"""
select {", ".join(f"p.{c}" for c in PERSON_RECORD_COLUMNS)}, x.customer_id
from identity.person_records p join mart.customer_xref x using (record_key)
where x.customer_id is not null and hash(x.customer_id) % ? = ?
"""


def build_golden(
    conn: duckdb.DuckDBPyConnection,
    sources: dict[str, SourceSpec],
    rules: dict[str, list[str]],
    lineage: StagedTable,
    golden: StagedTable,
) -> int:
    """Survivorship for every customer, slice by slice, staged into ``golden`` (read by
    ``sql/mart/customers.sql`` as the view ``golden``) and ``lineage``; returns the lineage rows
    written."""
    linked = conn.execute(
        "select count(*) from mart.customer_xref where customer_id is not null"
    ).fetchall()[0][0]
    slices = max(1, -(-linked // GOLDEN_SLICE_RECORDS))
    declared = {"account_owner"} | {a for s in sources.values() for a in (s.attributes or {})}
    lineage_rows = 0
    for number in range(slices):
        part = conn.sql(CANDIDATE_QUERY, params=[slices, number]).pl()
        xref = part.select("record_key", "customer_id")
        values, chosen = golden_records(candidates_from(part), rules)
        values = values.join(_attributes(conn, sources, xref), on="customer_id", how="left")
        values = values.with_columns(
            pl.lit(None, dtype=pl.String).alias(a) for a in sorted(declared - set(values.columns))
        )
        lineage.append(chosen)
        golden.append(values)
        lineage_rows += chosen.height
    return lineage_rows


def _attributes(conn, sources: dict[str, SourceSpec], xref: pl.DataFrame) -> pl.DataFrame:
    """Descriptive attributes declared in the registry: the most recent non-null value wins."""
    frames = []
    conn.register("_slice_xref", xref.select("record_key", "customer_id").to_arrow())
    for source in sources.values():
        if not source.attributes or not table_exists(conn, "staging", source.name):
            continue
        for attribute, column in source.attributes.items():
            frames.append(
                conn.sql(
                    f"select x.customer_id, v.* from (select ? || ':' || {quote_ident(source.record_id)} as record_key, ? as attribute, "
                    f"cast({quote_ident(column)} as varchar) as value, try_cast({quote_ident(source.event_at)} as timestamp) as event_at "
                    f"from staging.{quote_ident(source.name + '_current')} where {quote_ident(column)} is not null) v "
                    "join _slice_xref x using (record_key) where x.customer_id is not null",
                    params=[source.name, attribute],
                ).pl()
            )
    conn.unregister("_slice_xref")
    if not frames:
        return pl.DataFrame(schema={"customer_id": pl.String})
    values = pl.concat(frames)
    latest = (
        values.sort("event_at", "record_key", descending=[True, False])
        .group_by("customer_id", "attribute")
        .first()
    )
    return latest.pivot(on="attribute", index="customer_id", values="value")


def build_customer_tables(
    conn: duckdb.DuckDBPyConnection,
    sources: dict[str, SourceSpec],
    currency_rates: dict,
    golden_table: str,
) -> dict[str, int]:
    """The fact tables, ``governance.consent_ledger`` and ``mart.customers`` (from the golden
    records ``build_golden`` staged in ``golden_table``, read by ``sql/mart/customers.sql`` as the
    view ``golden``); call inside the transaction that commits them. Returns each fact table's
    rows."""
    fact_rows = build_facts(conn, sources, currency_rates)
    conn.execute(
        f"create or replace table governance.consent_ledger as {sql_text('governance/consent_ledger')}"
    )
    conn.execute(f"create or replace temp view golden as select * from {golden_table}")
    conn.execute(f"create or replace table mart.customers as {sql_text('mart/customers')}")
    conn.execute("drop view golden")
    return fact_rows


def mart_problems(conn: duckdb.DuckDBPyConnection) -> dict[str, int]:
    """What the mart's blocking checks measure, counted before it is committed:
    ``duplicate_or_null_ids`` of mart.customers, ``dangling:<fact>`` rows of each fact table
    naming no customer, golden values with ``missing_lineage``, ``duplicate_states`` in the
    consent ledger."""
    problems = {
        "duplicate_or_null_ids": _count(
            conn,
            "select count(*) - count(distinct customer_id) "
            "+ count(*) filter (where customer_id is null) from mart.customers",
        )
    }
    for fact in FACTS:
        problems[f"dangling:{fact}"] = _count(
            conn,
            f"select count(*) from mart.{quote_ident(fact)} f where f.customer_id is not null "
            "and not exists (select 1 from mart.customers c where c.customer_id = f.customer_id)",
        )
    problems["missing_lineage"] = sum(
        _count(
            conn,
            f"select count(*) from mart.customers c where c.{quote_ident(column)} is not null "
            "and not exists (select 1 from mart.customer_attribute_lineage l "
            "where l.customer_id = c.customer_id and list_contains(?, l.attribute))",
            [list(attributes)],
        )
        for column, attributes in LINEAGE_OF_COLUMN.items()
    )
    problems["duplicate_states"] = _count(
        conn,
        "select count(*) - count(distinct (customer_id, purpose)) from governance.consent_ledger",
    )
    return problems


def residual_duplicates(conn: duckdb.DuckDBPyConnection) -> int:
    """Customer pairs sharing name and birth date, or name and email: possible missed merges."""
    return _count(conn, sql_text("mart/residual_duplicates"))


def row_count(conn: duckdb.DuckDBPyConnection, table: str) -> int:
    return _count(conn, f"select count(*) from {table}")


def _count(conn: duckdb.DuckDBPyConnection, query: str, params: list | None = None) -> int:
    return conn.execute(query, params or []).fetchall()[0][0]
