"""Stray copies of erased people: emails and phones on the suppression list found anywhere else
(an unlinked record, an old version, a quarantined row, a JSON column) are scrubbed, and the
verification that none is left. Values another living customer also holds stay where they hold them.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import duckdb

from cdm_pipeline.governance.keys import (
    fingerprint,
    secret_key,
)
from cdm_pipeline.governance.removal import (
    anonymise_rows,
    landed_rows_where,
    remove_landed_rows,
    used_params,
)
from cdm_pipeline.governance.suppression import ensure_suppression_list
from cdm_pipeline.ingest.reader import ROW_NUMBER
from cdm_pipeline.registry import SourceSpec
from cdm_pipeline.resolve.forget import forget_profiles, remove_person_records, unlink_orphans
from cdm_pipeline.warehouse import quote_ident, table_exists


def _varchar_columns(
    conn: duckdb.DuckDBPyConnection, schemas: tuple[str, ...]
) -> list[tuple[str, str, str]]:
    placeholders = ", ".join("?" for _ in schemas)
    return conn.execute(
        "select c.table_schema, c.table_name, c.column_name from information_schema.columns c "
        "join information_schema.tables t on t.table_schema = c.table_schema and t.table_name = c.table_name "
        f"where c.table_schema in ({placeholders}) and c.data_type = 'VARCHAR' and t.table_type = 'BASE TABLE' "
        "order by 1, 2, 3",
        list(schemas),
    ).fetchall()


SCANNED_SCHEMAS = ("raw", "staging", "quarantine", "identity", "mart", "analytics")
JSON_COLUMNS = ("raw_row", "_extra")


HIT_VALUES = "_suppressed_values"

# Tested on every value of every column before the distinct (the search's largest cost): true for
# anything that may be an email (an '@') or a phone (seven characters or more, the first a digit,
# '+', '(' or a space: ASCII 32-57). Cheaper than the pattern, which is tested on the distinct
# values only.
_MAY_BE_IDENTIFIER = "contains(v, '@') or (length(v) >= 7 and ascii(v) between 32 and 57)"

# The distinct values' candidate fingerprints, joined to the suppression list in one hash join.
# Cheap shape tests first (an '@', or only phone characters, the pattern's minimum length tested
# before the pattern), hashing only what passes. A phone is compared by its digits and by its
# digits without leading zeros (national formats).
_HITS_AMONG = """
candidates as (
    select v, sha256($key || lower(trim(v))) as fingerprint, 'email' as kind
    from distinct_values where contains(v, '@')
    union all
    select v, unnest([sha256($key || digits), sha256($key || ltrim(digits, '0'))]), 'phone'
    from (
        select v, regexp_replace(v, '[^0-9]', '', 'g') as digits from distinct_values
        where length(v) >= 7 and regexp_full_match(v, '[0-9+()\\-. /]{7,}')
    )
)
select distinct v from candidates
semi join governance.suppression_list s using (fingerprint, kind)
"""


def column_values(columns: list[tuple[str, str, str]]) -> list[str]:
    """One ``select ... as v`` per column: its values as text, or the top-level values of a JSON
    one."""
    return [
        f"select (j.value ->> '$')::varchar as v from {quote_ident(s)}.{quote_ident(t)} x, "
        f"json_each(case when json_valid(x.{quote_ident(c)}) then x.{quote_ident(c)} end) j"
        if c in JSON_COLUMNS
        else f"select {quote_ident(c)}::varchar as v from {quote_ident(s)}.{quote_ident(t)}"
        for s, t, c in columns
    ]


def _find_hit_values(
    conn: duckdb.DuckDBPyConnection, key: str, columns: list[tuple[str, str, str]]
) -> bool:
    """Collect into the temporary table ``_suppressed_values`` every distinct text value of
    ``columns`` (and of the top-level values of the JSON ones) that is a suppressed email or
    phone. The same email sits in a dozen columns (raw, staging, person records, mart): each
    distinct value is tested and hashed once for the whole warehouse, then every column is only
    looked up in the few hits. Returns whether there is any (most nights: none, and no column
    needs a second look)."""
    branches = [f"select v from ({v}) where {_MAY_BE_IDENTIFIER}" for v in column_values(columns)]
    if branches:
        # Materialised: both kinds read it, and inlined it would scan every column twice.
        conn.execute(
            f"create or replace temp table {HIT_VALUES} as "
            f"with distinct_values as materialized ({' union '.join(branches)}), {_HITS_AMONG}",
            {"key": key},
        )
    else:
        conn.execute(f"create or replace temp table {HIT_VALUES} as select null::varchar as v")
    return (
        conn.execute(f"select count(*) from {HIT_VALUES} where v is not null").fetchall()[0][0] > 0
    )


def _hit_condition(column: str, any_hits: bool = True) -> str:
    """SQL that is true when a text value, or any top-level value inside a JSON text (a
    quarantined raw row), is one of the suppressed emails or phones ``_find_hit_values``
    collected, which must have covered the column; ``false`` when it found none
    (``any_hits``)."""
    if not any_hits:
        return "false"
    c = quote_ident(column)
    if column in JSON_COLUMNS:
        return (
            f"(json_valid({c}) and exists (select 1 from json_each({c}) j "
            f"where (j.value ->> '$') in (select v from {HIT_VALUES})))"
        )
    return f"{c} in (select v from {HIT_VALUES})"


def _suppresses_identifiers(conn: duckdb.DuckDBPyConnection) -> bool:
    if not table_exists(conn, "governance", "suppression_list"):
        return False
    ((count,),) = conn.execute(
        "select count(*) from governance.suppression_list where kind in ('email', 'phone')"
    ).fetchall()
    return count > 0


def scrub_identifiers(
    conn: duckdb.DuckDBPyConnection,
    sources: dict[str, SourceSpec],
    resolve_settings: dict | None = None,
) -> int:
    """Remove every remaining copy of a suppressed identifier outside the erased customer: an
    unlinked record, an old version, a quarantined row, another customer's record sharing a
    family inbox.

    A landed row holding one in raw, staging or quarantine is removed from all three (counted in
    the ledger), or emptied of identity for ``on_erasure: anonymise`` sources; identity rows
    holding one are deleted; in the mart only the value itself is blanked, so the other customer
    keeps their record. The suppressed values are found once for all columns
    (``_find_hit_values``), then each column is cleaned by looking them up.
    """
    if not _suppresses_identifiers(conn):  # nobody erased yet: nothing to look for
        return 0
    key = secret_key(conn)
    now = datetime.now()
    touched = 0
    columns = [
        (schema, table, column)
        for schema, table, column in _varchar_columns(
            conn, ("raw", "staging", "quarantine", "identity", "mart")
        )
        if (schema, table) != ("raw", "file_ledger")
        and (schema != "identity" or table in ("person_records", "profiles"))
    ]
    any_hits = _find_hit_values(conn, key, columns)
    params = {"key": key}

    def hit_in(schema: str, table: str) -> str:
        wanted = [_hit_condition(c, any_hits) for s_, t, c in columns if (s_, t) == (schema, table)]
        return " or ".join(w for w in wanted if w != "false") or "false"

    landed = {s.name for s in sources.values() if table_exists(conn, "raw", s.name)}
    anonymised = {s.name for s in sources.values() if s.on_erasure == "anonymise"}
    for name in sorted(landed):
        source = sources[name]
        raw_hit, quarantine_hit = hit_in("raw", name), hit_in("quarantine", "rejected_rows")
        staged_hit = hit_in("staging", name)
        if raw_hit == quarantine_hit == staged_hit == "false":
            continue
        rows = landed_rows_where(name, raw_hit, quarantine_hit)
        if table_exists(conn, "staging", name) and staged_hit != "false":
            rows += (
                f" union select _file_sha256, {ROW_NUMBER} from staging.{quote_ident(name)} "
                f"where {staged_hit}"
            )
        if source.on_erasure == "anonymise":
            conn.execute(
                f"create or replace temp table _hit_rows as {rows}",
                used_params(rows, {**params, "source": name}),
            )
            condition = (
                f"(_file_sha256, {ROW_NUMBER}) in (select (file_sha256, row_number) from _hit_rows)"
            )
            anonymise_rows(conn, source, condition)
            (n,) = conn.execute(
                "update quarantine.rejected_rows set raw_row = null where source = ? and "
                "(file_sha256, row_number) in (select (file_sha256, row_number) from _hit_rows)",
                [name],
            ).fetchall()[0]
            touched += n + conn.execute("select count(*) from _hit_rows").fetchall()[0][0]
            conn.execute("drop table _hit_rows")
        else:
            touched += remove_landed_rows(
                conn, name, rows, used_params(rows, {**params, "source": name}), "erased", now
            )
    for schema, table, column in columns:
        if (schema, table) == ("identity", "profiles") or (
            schema in ("raw", "staging") and table in landed
        ):
            continue
        name = f"{quote_ident(schema)}.{quote_ident(table)}"
        condition = _hit_condition(column, any_hits)
        if condition == "false":
            continue
        if (schema, table) == ("identity", "person_records"):
            touched += remove_person_records(
                conn, condition, used_params(condition, params), anonymised
            )
            continue
        if schema == "mart":
            statement = f"update {name} set {quote_ident(column)} = null where {condition}"
        elif (schema, table) == ("quarantine", "rejected_rows"):
            # Rows of registered sources went with their landed row above.
            statement = (
                f"delete from {name} where {condition} and source not in (select unnest($landed))"
            )
        else:
            statement = f"delete from {name} where {condition}"
        result = conn.execute(
            statement, used_params(statement, {**params, "landed": sorted(landed)})
        ).fetchall()
        touched += result[0][0] if result else 0
    if table_exists(conn, "identity", "profiles"):
        columns = [c for _, t, c in _varchar_columns(conn, ("identity",)) if t == "profiles"]
        if columns:
            hits = [_hit_condition(c, any_hits) for c in columns]
            hit = " or ".join(h for h in hits if h != "false")
            if hit:
                touched += forget_profiles(conn, hit, used_params(hit, params), resolve_settings)
    if table_exists(conn, "mart", "customer_xref"):
        touched += unlink_orphans(
            conn, {s.name for s in sources.values() if s.on_erasure == "anonymise"}
        )
    return touched


def identifier_hits(conn: duckdb.DuckDBPyConnection) -> list[dict]:
    """Every (table, column) still holding a suppressed email or phone, with a count. Empty is
    the proof that erasure is complete."""
    ensure_suppression_list(conn)
    if not conn.execute("select count(*) from governance.suppression_list").fetchall()[0][0]:
        return []
    key = secret_key(conn)
    hits = []
    columns = _varchar_columns(conn, SCANNED_SCHEMAS)
    any_hits = _find_hit_values(conn, key, columns)
    for schema, table, column in columns:
        name = f"{quote_ident(schema)}.{quote_ident(table)}"
        condition = _hit_condition(column, any_hits)
        if condition == "false":
            continue
        (count,) = conn.execute(
            f"select count(*) from {name} where {condition}", used_params(condition, {"key": key})
        ).fetchall()[0]
        if count:
            hits.append({"table": f"{schema}.{table}", "column": column, "rows": count})
    return hits


def mart_disagreements(conn: duckdb.DuckDBPyConnection) -> tuple[int, int]:
    """(customers in mart.customers with no record in mart.customer_xref, customers records
    are linked to that mart.customers lacks)."""
    recordless = conn.execute(
        "select count(*) from mart.customers c where not exists "
        "(select 1 from mart.customer_xref x where x.customer_id = c.customer_id)"
    ).fetchall()[0][0]
    missing = conn.execute(
        "select count(distinct x.customer_id) from mart.customer_xref x "
        "where x.customer_id is not null and not exists "
        "(select 1 from mart.customers c where c.customer_id = x.customer_id)"
    ).fetchall()[0][0]
    return recordless, missing


def erased_customer_ids(conn: duckdb.DuckDBPyConnection) -> set[str]:
    if not table_exists(conn, "identity", "customer_id_history"):
        return set()
    rows = conn.execute(
        "select distinct customer_id from identity.customer_id_history where event = 'erased'"
    ).fetchall()
    return {customer_id for (customer_id,) in rows}


def erased_exports(conn: duckdb.DuckDBPyConnection, folder: Path) -> list[Path]:
    """Subject-access documents (JSON) written earlier for a customer since erased, or holding
    a source record since erased: they are copies too."""
    if not folder.exists():
        return []
    erased = erased_customer_ids(conn)
    key = secret_key(conn)
    records = {
        fingerprint_
        for (fingerprint_,) in conn.execute(
            "select fingerprint from governance.suppression_list where kind = 'record'"
        ).fetchall()
    }
    found = []
    for path in sorted(folder.glob("*.json")):
        try:
            document = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        keys = {
            f"{r.get('source')}:{r.get('record_id')}"
            for r in document.get("source_records") or []
            if isinstance(r, dict)
        }
        if document.get("customer_id") in erased or any(
            fingerprint(key, k) in records for k in keys
        ):
            found.append(path)
    return found
