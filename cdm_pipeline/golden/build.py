"""The mart's build, in the order the customer 360 step runs it: golden records slice by slice,
then the fact tables, the consent ledger and ``mart.customers`` (inside the step's transaction),
then what its blocking checks measure before the transaction commits."""

from __future__ import annotations

import hashlib
import json

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
where x.customer_id in (select customer_id from _golden_todo) and hash(x.customer_id) % ? = ?
"""
# The survivorship result per customer and what it was chosen from (a fingerprint of the
# customer's records and attributes): a night chooses again only for the customers whose
# fingerprint changed, and keeps the others' golden values and lineage as they are.
GOLDEN_RECORDS = "identity.golden_records"
GOLDEN_INPUTS = "identity.golden_inputs"
# Bump when survivorship's code changes what it chooses: every customer is chosen again.
SURVIVORSHIP_VERSION = 1


def build_golden(
    conn: duckdb.DuckDBPyConnection,
    sources: dict[str, SourceSpec],
    rules: dict[str, list[str]],
    lineage: StagedTable,
    golden: StagedTable,
) -> tuple[int, bool]:
    """Survivorship for the customers whose records or attributes changed since the last night
    (all of them when the rules did, or on the first night), slice by slice, staged into
    ``golden`` (swapped in as ``identity.golden_records``, read by ``sql/mart/customers.sql`` as
    the view ``golden``) and ``lineage``, with the other customers' rows copied as they are.
    Leaves the temporary table ``_golden_inputs`` for ``remember_golden_inputs``. Returns the
    customers chosen for tonight and whether only theirs are staged: when they are fewer than
    the kept ones, the live tables keep the kept rows (``swap(NOT_KEPT)``) and nothing is
    copied."""
    declared = sorted(
        {"account_owner"} | {a for s in sources.values() for a in (s.attributes or {})}
    )
    settings = _settings_fingerprint(rules, declared)
    _tonights_inputs(conn, sources, settings)
    kept = _unchanged_customers(conn)
    conn.execute(
        "create or replace temp table _golden_todo as select customer_id from _golden_inputs "
        "where customer_id not in (select customer_id from _golden_kept)"
    )
    todo, records = conn.execute(
        "select count(*), coalesce(sum(records), 0) from _golden_inputs "
        "where customer_id in (select customer_id from _golden_todo)"
    ).fetchall()[0]
    in_place = 0 < kept and todo <= kept
    if kept and not in_place:
        golden.create_as(
            f"select * from {GOLDEN_RECORDS} "
            "where customer_id in (select customer_id from _golden_kept)"
        )
        lineage.create_as(
            "select * from mart.customer_attribute_lineage "
            "where customer_id in (select customer_id from _golden_kept)"
        )
    slices = max(1, -(-records // GOLDEN_SLICE_RECORDS))
    for number in range(slices if todo or not kept else 0):
        part = conn.sql(CANDIDATE_QUERY, params=[slices, number]).pl()
        xref = part.select("record_key", "customer_id")
        values, chosen = golden_records(candidates_from(part), rules)
        values = values.join(_attributes(conn, sources, xref), on="customer_id", how="left")
        values = values.with_columns(
            pl.lit(None, dtype=pl.String).alias(a) for a in declared if a not in values.columns
        )
        lineage.append(chosen)
        golden.append(values)
    return todo, in_place


# The live golden rows a night that chose for few customers replaces (``StagedTable.swap``).
NOT_KEPT = "customer_id not in (select customer_id from _golden_kept)"


def _settings_fingerprint(rules: dict[str, list[str]], declared: list[str]) -> str:
    text = json.dumps(
        [SURVIVORSHIP_VERSION, rules, declared, PERSON_RECORD_COLUMNS], sort_keys=True
    )
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _tonights_inputs(
    conn: duckdb.DuckDBPyConnection, sources: dict[str, SourceSpec], settings: str
) -> None:
    """``_golden_inputs``: per linked customer, its record count and a fingerprint of everything
    survivorship reads of its records (the person record's columns, each declared attribute and
    the time it was given), and the ``settings`` it is chosen under. Computed in DuckDB, which
    reads the columns once."""
    with_attributes = [
        s
        for s in sources.values()
        if s.attributes and table_exists(conn, "staging", s.name + "_current")
    ]
    attributes = [
        f"select ? || ':' || {quote_ident(s.record_id)} as record_key, hash("
        + ", ".join(
            [f"cast({quote_ident(c)} as varchar)" for c in s.attributes.values()]
            + [f"cast({quote_ident(s.event_at)} as varchar)"]
        )
        + f") as h from staging.{quote_ident(s.name + '_current')}"
        for s in with_attributes
    ]
    attribute_hashes = (
        " union all ".join(attributes) or "select null::varchar as record_key, null::ubigint as h"
    )
    conn.execute(
        "create or replace temp table _golden_inputs as "
        f"with attributes as ({attribute_hashes}) "
        "select x.customer_id, count(*) as records, bit_xor(hash("
        + ", ".join(f"p.{c}" for c in PERSON_RECORD_COLUMNS)
        + ", a.h)) as fingerprint, ? as settings "
        "from mart.customer_xref x join identity.person_records p using (record_key) "
        "left join attributes a using (record_key) "
        "where x.customer_id is not null group by x.customer_id",
        [s.name for s in with_attributes] + [settings],
    )


def _unchanged_customers(conn: duckdb.DuckDBPyConnection) -> int:
    """``_golden_kept``: tonight's customers whose golden record stands (same fingerprint, same
    records, same settings as when it was chosen). Returns how many."""
    if not (
        table_exists(conn, "identity", "golden_inputs")
        and table_exists(conn, "identity", "golden_records")
    ):
        conn.execute("create or replace temp table _golden_kept (customer_id varchar)")
        return 0
    conn.execute(
        "create or replace temp table _golden_kept as select t.customer_id "
        f"from _golden_inputs t join {GOLDEN_INPUTS} g using (customer_id) "
        "where g.fingerprint = t.fingerprint and g.records = t.records "
        "and g.settings = t.settings "
        f"and t.customer_id in (select customer_id from {GOLDEN_RECORDS})"
    )
    return conn.execute("select count(*) from _golden_kept").fetchall()[0][0]


def remember_golden_inputs(conn: duckdb.DuckDBPyConnection) -> None:
    """What tonight's golden records were chosen from (call inside the transaction that swaps
    them in)."""
    conn.execute(f"create or replace table {GOLDEN_INPUTS} as select * from _golden_inputs")


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
) -> tuple[dict[str, int], int]:
    """The fact tables, ``governance.consent_ledger`` and ``mart.customers`` (from the golden
    records ``build_golden`` staged in ``golden_table``, read by ``sql/mart/customers.sql`` as the
    view ``golden``); call inside the transaction that commits them, after ``build_golden``.
    Returns each fact table's rows and how many customers' rows were built.

    A night that kept some golden records builds ``mart.customers`` rows only for the customers
    whose row can have changed (``_touched_customers``); the others keep theirs, built by an
    earlier night from the same inputs."""
    before = _fact_digests(conn)
    fact_rows = build_facts(conn, sources, currency_rates)
    conn.execute(
        f"create or replace table governance.consent_ledger as {sql_text('governance/consent_ledger')}"
    )
    customers = sql_text("mart/customers")
    conn.execute(f"create or replace temp view golden as select * from {golden_table}")
    if before is not None and _same_columns(conn, customers):
        _touched_customers(conn, golden_table, before)
        conn.execute(
            f"create or replace temp view golden as select * from {golden_table} "
            "where customer_id in (select customer_id from _touched)"
        )
        conn.execute(
            "delete from mart.customers where customer_id in (select customer_id from _touched)"
        )
        conn.execute(f"insert into mart.customers by name {customers}")
        (built,) = conn.execute("select count(*) from _touched").fetchall()[0]
        conn.execute("drop table _touched")
    else:
        conn.execute(f"create or replace table mart.customers as {customers}")
        (built,) = conn.execute("select count(*) from mart.customers").fetchall()[0]
    conn.execute("drop view golden")
    return fact_rows, built


# What a mart.customers row is built from besides its golden record and source records.
_CUSTOMER_INPUTS = (
    "mart.orders",
    "mart.interactions",
    "mart.survey_responses",
    "governance.consent_ledger",
)


def _fact_digests(conn: duckdb.DuckDBPyConnection) -> str | None:
    """``_facts_before``: per customer and input table, a digest of its rows, taken before the
    facts are rebuilt; None when there is no mart yet, or no golden record was kept tonight
    (every row is built anyway)."""
    kept = conn.execute("select count(*) from _golden_kept").fetchall()[0][0]
    if not kept or not all(
        table_exists(conn, *name.split(".")) for name in ("mart.customers", *_CUSTOMER_INPUTS)
    ):
        return None
    conn.execute(f"create or replace temp table _facts_before as {_DIGESTS}")
    return "_facts_before"


_DIGESTS = " union all ".join(
    f"select '{name}' as input, customer_id, count(*) as n, bit_xor(hash(t)) as digest "
    f"from {name} t where customer_id is not null group by all"
    for name in _CUSTOMER_INPUTS
)


def _same_columns(conn: duckdb.DuckDBPyConnection, query: str) -> bool:
    """Whether the stored mart.customers has the columns the query makes (a newer version of
    the table is built whole)."""
    made = conn.execute(f"describe {query}").fetchall()
    stored = conn.execute("describe mart.customers").fetchall()
    return sorted(c[:2] for c in made) == sorted(c[:2] for c in stored)


def _touched_customers(conn: duckdb.DuckDBPyConnection, golden_table: str, before: str) -> None:
    """``_touched``: the customers whose mart.customers row is built tonight: those whose golden
    record was chosen again (``_golden_todo``: new customers, changed records), those whose
    orders, interactions, survey answers or consent states changed, those no longer in the
    golden records (deleted), and rows built in an earlier calendar year (the age band counts
    years from the birth year)."""
    conn.execute(
        "create or replace temp table _touched as "
        "select customer_id from _golden_todo "
        f"union select customer_id from (select * from {before} except select * from ({_DIGESTS})) "
        f"union select customer_id from (select * from ({_DIGESTS}) except select * from {before}) "
        "union select customer_id from mart.customers "
        f"where customer_id not in (select customer_id from {golden_table}) "
        "or year(refreshed_at) <> year(current_timestamp)"
    )
    conn.execute(f"drop table {before}")


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
