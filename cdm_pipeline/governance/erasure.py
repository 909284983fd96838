"""Right to erasure, following the identity graph.

A request names an email or a phone; the customer is found through every record that carries it,
and then *all* of that customer's linked records are removed (or, for sources declared
``on_erasure: anonymise``, emptied of identity) from raw, staging, quarantine, identity and mart,
in one transaction. Records of other customers are never touched, even when they share the
requester's phone, inbox or address (a household). The requester's identifiers go on the
suppression list as salted hashes: emails and phones no one else holds as ``email``/``phone``
(scanned for and scrubbed everywhere), shared ones as ``household_email``/``household_phone``
(they stop a row only with the requester's name), and the record keys as ``record``. A request
that matches no one or several customers is not guessed at: it waits for a steward.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import duckdb
import polars as pl
from rapidfuzz.distance import JaroWinkler

from cdm_pipeline.golden.facts import build_facts
from cdm_pipeline.governance.keys import (
    email_forms,
    fingerprint,
    name_form,
    phone_forms,
    secret_key,
)
from cdm_pipeline.governance.quarantined import quarantined_rows_of
from cdm_pipeline.governance.removal import landed_rows_where, remove_landed_rows
from cdm_pipeline.governance.suppression import ensure_suppression_list
from cdm_pipeline.ingest.reader import ROW_NUMBER
from cdm_pipeline.registry import SourceSpec
from cdm_pipeline.resolve.forget import forget_customers, forget_profiles, unlink_orphans
from cdm_pipeline.standardise.fields import (
    email_match_key,
    first_name_group,
    name_key,
    same_first_name,
    split_full_name,
    standardise_email,
    standardise_phone,
)
from cdm_pipeline.warehouse import quote_ident, table_exists, transaction

REQUEST_LOG_DDL = """
create table if not exists governance.privacy_request_log (
    request_id varchar not null,
    source varchar not null,
    request_type varchar not null,     -- erasure | access | invalid
    status varchar not null,           -- erased | exported | needs_steward
    reason varchar,                    -- why a steward is needed (no match, several customers)
    customers_matched bigint,
    records_affected bigint,
    processed_at timestamp not null,
    run_id varchar
);
alter table governance.privacy_request_log add column if not exists received_at timestamp;
alter table governance.privacy_request_log add column if not exists due_at timestamp;
alter table governance.privacy_request_log add column if not exists source_file varchar;
alter table governance.privacy_request_log add column if not exists row_number bigint;
"""
SCANNED_SCHEMAS = ("raw", "staging", "quarantine", "identity", "mart", "analytics")


@dataclass
class PrivacyRequest:
    source: str
    request_id: str
    request_type: str
    email: str | None
    phone: str | None
    received_at: datetime | None = None
    jurisdiction: str | None = None
    name: str | None = None


@dataclass
class ErasureOutcome:
    erased_customers: int = 0
    records_removed: int = 0
    records_anonymised: int = 0
    needs_steward: int = 0
    reasons: dict[str, int] = field(default_factory=dict)


def pending_requests(
    conn: duckdb.DuckDBPyConnection, sources: dict[str, SourceSpec], request_type: str
) -> list[PrivacyRequest]:
    """Requests of one type not processed before."""
    conn.execute(REQUEST_LOG_DDL)
    out = []
    for source in sources.values():
        if source.role != "privacy_request" or not table_exists(conn, "staging", source.name):
            continue
        email = source.identity.get("email")
        phone = source.identity.get("phone")
        jurisdiction = source.jurisdiction_column
        query = (
            f"select {quote_ident(source.record_id)}, "
            f"{quote_ident(email) if email else 'null'}, {quote_ident(phone) if phone else 'null'}, "
            f"try_cast({quote_ident(source.event_at)} as timestamp), "
            f"{quote_ident(jurisdiction) + '::varchar' if jurisdiction else 'null'}, "
            f"{_name_sql(source)} "
            f"from staging.{quote_ident(source.name + '_current')} "
            f"where {quote_ident(source.request_type_column)} = ? "
            f"and {quote_ident(source.record_id)} not in (select request_id from governance.privacy_request_log where source = ?) "
            f"order by {quote_ident(source.event_at)}, 1"
        )
        for row in conn.execute(query, [request_type, source.name]).fetchall():
            request_id, email_value, phone_value, received, region, name = row
            out.append(
                PrivacyRequest(
                    source.name,
                    request_id,
                    request_type,
                    email_value,
                    phone_value,
                    received,
                    region,
                    name,
                )
            )
    return out


def _name_sql(source: SourceSpec) -> str:
    """The requester's name as one text: ``full_name``, or first and last name columns."""
    parts = [source.identity.get(field) for field in ("first_name", "last_name")]
    columns = [c for part in parts if part for c in (part if isinstance(part, tuple) else (part,))]
    if "full_name" in source.identity:
        full = source.identity["full_name"]
        columns = list(full) if isinstance(full, tuple) else [full]
    if not columns:
        return "null"
    joined = ", ".join(quote_ident(c) for c in columns)
    return f"nullif(trim(concat_ws(' ', {joined})), '')"


def log_invalid_requests(
    conn: duckdb.DuckDBPyConnection,
    sources: dict[str, SourceSpec],
    deadlines: dict,
    now: datetime,
    run_id: str,
) -> int:
    """Every request row that failed its contract (no id, an id already used, no jurisdiction, an
    unknown type, a date that does not read) waits in the log for a steward, one log row per
    landed row (by file and line), with the checks it failed and the date it was received as
    written: its deadline runs from then (from when it landed when the date does not read, and
    the reason says so). Returns how many were logged tonight."""
    conn.execute(REQUEST_LOG_DDL)
    received_column = {s.name: s.event_at for s in sources.values() if s.role == "privacy_request"}
    rows = conn.execute(
        "select q.source, q.source_file, q.row_number, nullif(trim(q.record_id), ''), "
        "q.failed_checks, q.raw_row, q.quarantined_at from quarantine.rejected_rows q "
        "where q.source in (select unnest($names)) and not exists (select 1 from "
        "governance.privacy_request_log l where l.source = q.source and (("
        "l.source_file = q.source_file and l.row_number = q.row_number) or ("
        "l.request_type = 'invalid' and l.source_file is null and l.request_id = "
        "coalesce(q.record_id, q.source_file || '#' || q.row_number)))) "
        "order by q.source, q.source_file, q.row_number",
        {"names": list(received_column)},
    ).fetchall()
    for source, file, line, written_id, failed, raw_row, landed in rows:
        # Named by its file and line too: its id may be empty, or a valid request's.
        request_id = f"{written_id or ''} ({file} line {line})".strip()
        received = _written_timestamp(conn, raw_row, received_column.get(source))
        reason = f"invalid request: {failed}"
        if received is None:
            reason += "; received date unreadable: deadline counted from when it landed"
        request = PrivacyRequest(source, request_id, "invalid", None, None, received or landed)
        log_request(
            conn, request, "needs_steward", reason, 0, 0, now, run_id, deadlines, (file, line)
        )
    return len(rows)


def _written_timestamp(conn, raw_row: str | None, column: str | None) -> datetime | None:
    """The row's date as the requester's system wrote it, if it reads as a timestamp."""
    if not raw_row or not column:
        return None
    try:
        value = json.loads(raw_row).get(column)
    except (ValueError, AttributeError):
        return None
    if not isinstance(value, str) or not value.strip():
        return None
    return conn.execute("select try_cast(? as timestamp)", [value.strip()]).fetchall()[0][0]


def due_date(request: PrivacyRequest, deadlines: dict, now: datetime) -> datetime:
    """When the answer is due: received plus the jurisdiction's days (GDPR 30, CCPA 45 by
    default), or the shortest deadline when the jurisdiction is unknown."""
    days = deadlines.get(request.jurisdiction or "", min(deadlines.values(), default=30))
    return (request.received_at or now) + timedelta(days=days)


def match_customers(
    conn: duckdb.DuckDBPyConnection,
    request: PrivacyRequest,
    phone_regions: tuple[str, ...],
    exact: bool = False,
) -> list[str]:
    """Customers holding the request's email or phone, through any of their linked records."""
    matches = match_requests(conn, [request], phone_regions, exact)
    return sorted(
        matches.filter(pl.col("customer_id").is_not_null())["customer_id"].unique().to_list()
    )


def match_requests(
    conn: duckdb.DuckDBPyConnection,
    requests: list[PrivacyRequest],
    phone_regions: tuple[str, ...],
    exact: bool = False,
) -> pl.DataFrame:
    """``request_id, customer_id`` for every customer holding a request's email or phone (in any
    of their linked records); a request matching no one has one row with a null customer.
    ``exact`` (access requests, which hand data out) compares the email as given, standardised
    but with its +tag and dots: victim+x@ is not victim@."""
    keys = pl.DataFrame(
        {
            "request_id": [r.request_id for r in requests],
            "email_key": [_email_key(r.email, exact) for r in requests],
            "phone": [
                standardise_phone(f"{r.phone}|{phone_regions[0]}", phone_regions)
                if r.phone
                else None
                for r in requests
            ],
        },
        schema={"request_id": pl.String, "email_key": pl.String, "phone": pl.String},
    )
    email_column = "email" if exact else "email_norm"
    conn.register("request_keys", keys.to_arrow())
    try:
        found = conn.sql(
            "select k.request_id, x.customer_id, "
            f"coalesce(bool_or(p.{email_column} = k.email_key), false) "
            "and coalesce(bool_or(p.phone_e164 = k.phone), false) as holds_both "
            "from request_keys k "
            f"left join identity.person_records p on p.{email_column} = k.email_key or p.phone_e164 = k.phone "
            "left join mart.customer_xref x on x.record_key = p.record_key and x.customer_id is not null "
            "group by all"
        ).pl()
    finally:
        conn.unregister("request_keys")
    # A request naming an email and a phone is the customer holding both, when one does: the
    # phone may be the household's, which the requester's family holds too.
    both = pl.col("holds_both").any().over("request_id")
    found = found.filter(~both | pl.col("holds_both")).select("request_id", "customer_id")
    return _verify_names(conn, found, {r.request_id: r.name for r in requests})


NAME_MISMATCH = "identifier held by a customer with another name"


def _verify_names(
    conn: duckdb.DuckDBPyConnection, found: pl.DataFrame, names: dict[str, str | None]
) -> pl.DataFrame:
    """Keep a customer for a request that gives a name only if one of the customer's records
    carries that name (surname alike, first name alike or a nickname of it, typos allowed), or
    none carries a name at all.
    A household phone or inbox held in the warehouse only by the requester's partner must not
    erase the partner. Dropped customers leave the request with ``customer_id`` null and
    ``name_mismatch`` true (a steward decides)."""
    found = found.with_columns(name_mismatch=pl.lit(False))
    named = {r: split_full_name(n) for r, n in names.items() if n and n.strip()}
    candidates = found.filter(
        pl.col("request_id").is_in(list(named)) & pl.col("customer_id").is_not_null()
    )
    if candidates.height == 0:
        return found
    records = conn.execute(
        "select x.customer_id, p.first_name_key, p.first_name_group, p.last_name_key "
        "from identity.person_records p join mart.customer_xref x using (record_key) "
        "where x.customer_id in (select unnest($ids))",
        {"ids": candidates["customer_id"].unique().to_list()},
    ).fetchall()
    held: dict[str, list[tuple]] = {}
    for customer_id, *name in records:
        held.setdefault(customer_id, []).append(tuple(name))
    # A customer whose records carry no name at all (an email-only survey answer) cannot
    # contradict the name: the identifier is all there is to go by.
    rejected = {
        (request_id, customer_id)
        for request_id, customer_id in candidates.select("request_id", "customer_id").iter_rows()
        if any(first or last for first, _, last in held.get(customer_id, []))
        and not any(_same_name(named[request_id], n) for n in held.get(customer_id, []))
    }
    if not rejected:
        return found
    keep = pl.struct("request_id", "customer_id").map_elements(
        lambda r: (r["request_id"], r["customer_id"]) not in rejected, return_dtype=pl.Boolean
    )
    found = found.with_columns(name_mismatch=~keep)
    kept = found.filter(~pl.col("name_mismatch"))
    lost = (
        found.filter(pl.col("name_mismatch"))
        .select("request_id")
        .unique()
        .filter(~pl.col("request_id").is_in(kept["request_id"].implode()))
        .with_columns(customer_id=pl.lit(None, pl.String), name_mismatch=pl.lit(True))
    )
    return pl.concat([kept, lost])


def _same_name(requested: tuple[str | None, str | None], held: tuple) -> bool:
    first, last = (name_key(part) for part in requested)
    held_first, held_group, held_last = held
    if not last or not held_last:
        return False
    if JaroWinkler.similarity(last.replace(" ", ""), held_last) < 0.9:
        return False
    if not first or not held_first:
        return True  # the surname is all either side gives
    return (
        first_name_group(first) == held_group
        or same_first_name(first, held_first)
        or JaroWinkler.similarity(first, held_first) >= 0.88
        or (len(first) == 1 and held_first.startswith(first))
    )


def _email_key(raw: str | None, exact: bool = False) -> str | None:
    email = standardise_email(raw) if raw else None
    return email if exact or not email else email_match_key(email)


def erase_customers(
    conn: duckdb.DuckDBPyConnection,
    erasures: pl.DataFrame,
    sources: dict[str, SourceSpec],
    now: datetime,
    run_id: str | None = None,
    resolve_settings: dict | None = None,
    standardise_settings: dict | None = None,
) -> tuple[int, int]:
    """Remove the customers in ``erasures`` (``request_id, customer_id``) everywhere, set-based,
    and suppress their identifiers (call inside a transaction, then ``scrub_identifiers`` for stray
    copies). With ``standardise_settings``, the requesters' quarantined rows go too
    (``quarantined_rows_of``). Returns (removed, anonymised) source rows."""
    key = secret_key(conn)
    ensure_suppression_list(conn)
    erasures = erasures.drop_nulls("customer_id")  # ``not in`` a list holding null is never true
    conn.register("erased_customers", erasures.select("request_id", "customer_id").to_arrow())
    records = conn.sql(
        "select e.request_id, x.customer_id, p.* from identity.person_records p "
        "join mart.customer_xref x using (record_key) join erased_customers e using (customer_id)"
    ).pl()
    forms_of = {
        row["record_key"]: (
            email_forms(row["email_raw"]) | ({row["email_norm"]} if row["email_norm"] else set()),
            phone_forms(row["phone_raw"], row["phone_e164"]),
        )
        for row in records.iter_rows(named=True)
    }
    shared = _held_by_others(
        conn,
        {f for emails, _ in forms_of.values() for f in emails},
        {f for _, phones in forms_of.values() for f in phones},
    )
    quarantined = (
        quarantined_rows_of(conn, records, sources, standardise_settings)
        if standardise_settings is not None and records.height
        else None
    )
    if quarantined is not None:
        request_of = records.select("customer_id", "request_id").unique("customer_id")
        quarantined = quarantined.join(request_of, on="customer_id")
    fingerprints = set()
    for row in quarantined.iter_rows(named=True) if quarantined is not None else ():
        name = name_form(row["first_name"], row["last_name"])
        forms = [("name", name)] if name else []
        forms += [("record", row["record_key"])] if row["source_record_id"] else []
        fingerprints |= {(kind, fingerprint(key, form), row["request_id"]) for kind, form in forms}
    for row in records.iter_rows(named=True):
        # A value another living customer holds too (a household phone, a family inbox) is
        # theirs as much as the requester's: it is kept where they hold it, and suppresses a
        # later row only together with the requester's name (``suppression``).
        # One number or address in any of its forms: if another customer holds one form
        # ('+17025550100'), every form ('7025550100', typed nationally) is theirs too.
        emails, phones = forms_of[row["record_key"]]
        email_kind = "household_email" if emails & shared else "email"
        phone_kind = "household_phone" if phones & shared else "phone"
        forms = [(email_kind, f) for f in emails] + [(phone_kind, f) for f in phones]
        name = name_form(row["first_name"], row["last_name"])
        forms += [("name", name)] if name else []
        forms += [("record", row["record_key"])]
        fingerprints |= {(kind, fingerprint(key, form), row["request_id"]) for kind, form in forms}
    if fingerprints:
        conn.executemany(
            "insert into governance.suppression_list values (?, ?, ?, ?)",
            [[kind, value, request_id, now] for kind, value, request_id in sorted(fingerprints)],
        )
    removed = anonymised = 0
    for source_name, ids in records.group_by("source").agg(pl.col("source_record_id")).iter_rows():
        if source_name in sources:
            removed_here, anonymised_here = _erase_source_rows(conn, sources[source_name], ids, now)
            removed += removed_here
            anonymised += anonymised_here
    if quarantined is not None:
        for source_name, rows in quarantined.partition_by("source", as_dict=True).items():
            removed_here, anonymised_here = _erase_quarantined_rows(
                conn, sources[source_name[0]], rows, now
            )
            removed += removed_here
            anonymised += anonymised_here
    kept = {s.name for s in sources.values() if s.on_erasure == "anonymise"}
    forget_customers(
        conn,
        erasures["customer_id"].unique(),
        records.select("record_key", "source", "source_record_id"),
        kept,
        now,
        run_id,
        resolve_settings,
    )
    for table in ("mart.customers", "mart.customer_attribute_lineage", "governance.consent_ledger"):
        conn.execute(
            f"delete from {table} where customer_id in (select customer_id from erased_customers)"
        )
    conn.unregister("erased_customers")
    return removed, anonymised


def _erase_quarantined_rows(
    conn: duckdb.DuckDBPyConnection, source: SourceSpec, rows: pl.DataFrame, now: datetime
) -> tuple[int, int]:
    """The quarantined rows ``quarantined_rows_of`` found (``file_sha256, row_number``)."""
    conn.register("_quarantined_found", rows.select("file_sha256", "row_number").to_arrow())
    try:
        removed = _erase_landed_rows(
            conn, source, "select file_sha256, row_number from _quarantined_found", {}, now
        )
    finally:
        conn.unregister("_quarantined_found")
    return (0, rows.height) if source.on_erasure == "anonymise" else (removed, 0)


def _held_by_others(
    conn: duckdb.DuckDBPyConnection, emails: set[str], phones: set[str]
) -> set[str]:
    """The forms of the requester's emails and phones that a customer not being erased holds
    in any of their records (``erased_customers`` is registered), normalised as the
    completeness scan normalises what it finds (``_value_hit``): lower-cased emails, phone
    digits with and without leading zeros. Only what no one else holds is scrubbed."""
    digits = "regexp_replace({c}, '[^0-9]', '', 'g')"
    phone_forms_sql = [f"{digits.format(c=c)}" for c in ("phone_raw", "phone_e164")] + [
        f"ltrim({digits.format(c=c)}, '0')" for c in ("phone_raw", "phone_e164")
    ]
    email_forms_sql = ["lower(trim(email_raw))", "email", "email_norm"]
    union = " union all ".join(
        f"select {form} as f from others" for form in (*email_forms_sql, *phone_forms_sql)
    )
    rows = conn.execute(
        "with others as (select p.* from identity.person_records p "
        "join mart.customer_xref x using (record_key) where x.customer_id is not null "
        "and x.customer_id not in "
        "(select customer_id from erased_customers where customer_id is not null)) "
        f"select distinct f from ({union}) where f in (select unnest($forms))",
        {"forms": sorted(emails | phones)},
    ).fetchall()
    return {value for (value,) in rows}


def _erase_source_rows(
    conn: duckdb.DuckDBPyConnection, source: SourceSpec, ids: list[str], now: datetime
) -> tuple[int, int]:
    """Every landed version of the erased records, staged or quarantined (``_erase_landed_rows``).
    Returns (removed, anonymised) records."""
    if not table_exists(conn, "raw", source.name):
        return (0, len(ids)) if source.on_erasure == "anonymise" else (len(ids), 0)
    conn.register("erased_ids", pl.DataFrame({"id": ids}, schema={"id": pl.String}).to_arrow())
    try:
        rows = landed_rows_where(
            source.name,
            f"{quote_ident(source.record_id)} in (select id from erased_ids)",
            "record_id in (select id from erased_ids)",
        )
        _erase_landed_rows(conn, source, rows, {"source": source.name}, now)
    finally:
        conn.unregister("erased_ids")
    return (0, len(ids)) if source.on_erasure == "anonymise" else (len(ids), 0)


def _erase_landed_rows(
    conn: duckdb.DuckDBPyConnection, source: SourceSpec, rows_sql: str, params: dict, now: datetime
) -> int:
    """The landed rows ``rows_sql`` names (``file_sha256, row_number``): removed from raw,
    staging and quarantine (counted in the ledger as erased), or for ``on_erasure: anonymise``
    sources kept there without identity. Returns how many landed rows were removed."""
    if source.on_erasure != "anonymise":
        return remove_landed_rows(conn, source.name, rows_sql, params, "erased", now)
    conn.execute(
        "create or replace temp table _anonymised_rows as "
        f"select distinct file_sha256, row_number from ({rows_sql})",
        params,
    )
    _anonymise_rows(
        conn,
        source,
        f"_file_sha256 || '#' || {ROW_NUMBER} in "
        "(select file_sha256 || '#' || row_number from _anonymised_rows)",
    )
    conn.execute(
        "update quarantine.rejected_rows q set raw_row = null from _anonymised_rows a "
        "where q.source = ? and q.file_sha256 = a.file_sha256 and q.row_number = a.row_number",
        [source.name],
    )
    conn.execute("drop table _anonymised_rows")
    return 0


def _anonymise_rows(
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
        conn.execute(statement, _used(statement, params or {}))


def forget_request_identifiers(
    conn: duckdb.DuckDBPyConnection, requests: list[PrivacyRequest], sources: dict[str, SourceSpec]
) -> None:
    """Keep processed erasure requests as evidence (id, type, dates) but not the identifiers on them."""
    for source_name in {r.source for r in requests}:
        source = sources[source_name]
        columns = source.identity_columns
        if not columns:
            continue
        ids = [r.request_id for r in requests if r.source == source_name]
        sets = ", ".join(f"{quote_ident(c)} = null" for c in columns)
        for schema in ("raw", "staging"):
            if table_exists(conn, schema, source.name):
                conn.execute(
                    f"update {schema}.{quote_ident(source.name)} set {sets} "
                    f"where {quote_ident(source.record_id)} in (select unnest($ids))",
                    {"ids": ids},
                )


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


JSON_COLUMNS = ("raw_row", "_extra")


def _value_hit(value: str) -> str:
    """Cheap shape tests first (an '@', or only phone characters), hashing only what passes. A
    phone is compared by its digits and by its digits without leading zeros (national formats)."""
    digits = f"regexp_replace({value}, '[^0-9]', '', 'g')"
    phones = "(select fingerprint from governance.suppression_list where kind = 'phone')"
    return (
        f"((contains({value}, '@') and sha256($key || lower(trim({value}))) in "
        f"(select fingerprint from governance.suppression_list where kind = 'email')) "
        f"or (regexp_full_match({value}, '[0-9+()\\-. /]{{7,}}') and "
        f"(sha256($key || {digits}) in {phones} or sha256($key || ltrim({digits}, '0')) in {phones})))"
    )


HIT_VALUES = "_suppressed_values"


def _find_hit_values(
    conn: duckdb.DuckDBPyConnection, key: str, columns: list[tuple[str, str, str]]
) -> None:
    """Collect into the temporary table ``_suppressed_values`` every distinct text value of
    ``columns`` that is a suppressed email or phone. The hashing is what costs, and the same
    email sits in a dozen columns (raw, staging, person records, mart): each distinct value is
    hashed once for the whole warehouse, then every column is only looked up in the few hits."""
    plain = [(s, t, c) for s, t, c in columns if c not in JSON_COLUMNS]
    values = " union ".join(
        f"select {quote_ident(c)} as v from {quote_ident(s)}.{quote_ident(t)}" for s, t, c in plain
    )
    source = f"select v from ({values}) d where {_value_hit('d.v')}" if plain else "select null"
    conn.execute(
        f"create or replace temp table {HIT_VALUES} as select v::varchar as v from ({source}) h",
        {"key": key} if plain else {},
    )


def _used(sql: str, params: dict) -> dict:
    """DuckDB refuses a parameter the statement does not use: pass only those it names."""
    return {k: v for k, v in params.items() if re.search(rf"\${k}\b", sql)}


def _hit_condition(column: str) -> str:
    """SQL that is true when a text value, or any value inside a JSON text (a quarantined raw
    row), is a suppressed email or phone (parameter $key). Plain columns are looked up in the
    values ``_find_hit_values`` collected, which must have covered the column."""
    c = quote_ident(column)
    if column in JSON_COLUMNS:
        inner = _value_hit("(j.value ->> '$')")
        return f"(json_valid({c}) and exists (select 1 from json_each({c}) j where {inner}))"
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
    _find_hit_values(conn, key, columns)
    params = {"key": key}

    def hit_in(schema: str, table: str) -> str:
        wanted = [c for s_, t, c in columns if (s_, t) == (schema, table)]
        return " or ".join(_hit_condition(c) for c in wanted) or "false"

    landed = {s.name for s in sources.values() if table_exists(conn, "raw", s.name)}
    for name in sorted(landed):
        source = sources[name]
        raw_hit, quarantine_hit = hit_in("raw", name), hit_in("quarantine", "rejected_rows")
        staged_hit = hit_in("staging", name)
        rows = landed_rows_where(name, raw_hit, quarantine_hit)
        if table_exists(conn, "staging", name) and staged_hit != "false":
            rows += (
                f" union select _file_sha256, {ROW_NUMBER} from staging.{quote_ident(name)} "
                f"where {staged_hit}"
            )
        if source.on_erasure == "anonymise":
            conn.execute(
                f"create or replace temp table _hit_rows as {rows}",
                _used(rows, {**params, "source": name}),
            )
            condition = (
                f"(_file_sha256, {ROW_NUMBER}) in (select (file_sha256, row_number) from _hit_rows)"
            )
            _anonymise_rows(conn, source, condition)
            (n,) = conn.execute(
                "update quarantine.rejected_rows set raw_row = null where source = ? and "
                "(file_sha256, row_number) in (select (file_sha256, row_number) from _hit_rows)",
                [name],
            ).fetchall()[0]
            touched += n + conn.execute("select count(*) from _hit_rows").fetchall()[0][0]
            conn.execute("drop table _hit_rows")
        else:
            touched += remove_landed_rows(
                conn, name, rows, _used(rows, {**params, "source": name}), "erased", now
            )
    for schema, table, column in columns:
        if (schema, table) == ("identity", "profiles") or (
            schema in ("raw", "staging") and table in landed
        ):
            continue
        name = f"{quote_ident(schema)}.{quote_ident(table)}"
        condition = _hit_condition(column)
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
            statement, _used(statement, {**params, "landed": sorted(landed)})
        ).fetchall()
        touched += result[0][0] if result else 0
    if table_exists(conn, "identity", "profiles"):
        columns = [c for _, t, c in _varchar_columns(conn, ("identity",)) if t == "profiles"]
        if columns:
            hit = " or ".join(_hit_condition(c) for c in columns)
            touched += forget_profiles(conn, hit, _used(hit, params), resolve_settings)
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
    _find_hit_values(conn, key, columns)
    for schema, table, column in columns:
        name = f"{quote_ident(schema)}.{quote_ident(table)}"
        condition = _hit_condition(column)
        (count,) = conn.execute(
            f"select count(*) from {name} where {condition}", _used(condition, {"key": key})
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


def log_request(
    conn,
    request: PrivacyRequest,
    status: str,
    reason: str | None,
    customers: int,
    records: int,
    now: datetime,
    run_id: str,
    deadlines: dict | None = None,
    landed_at: tuple[str, int] | None = None,
) -> None:
    """One row of ``governance.privacy_request_log`` (``landed_at``: the file and line of a
    request row that never reached staging)."""
    source_file, row_number = landed_at or (None, None)
    conn.execute(
        "insert into governance.privacy_request_log by name select ? as request_id, ? as source, "
        "? as request_type, ? as status, ? as reason, ? as customers_matched, "
        "? as records_affected, ? as processed_at, ? as run_id, ? as received_at, ? as due_at, "
        "? as source_file, ? as row_number",
        [
            request.request_id,
            request.source,
            request.request_type,
            status,
            reason,
            customers,
            records,
            now,
            run_id,
            request.received_at,
            due_date(request, deadlines or DEFAULT_DEADLINES, now),
            source_file,
            row_number,
        ],
    )


DEFAULT_DEADLINES = {"GDPR": 30, "CCPA": 45}


def open_requests(conn: duckdb.DuckDBPyConnection, now: datetime) -> tuple[int, int]:
    """(requests waiting for a steward, of which past their deadline): a request is open while
    its latest log row says ``needs_steward``."""
    conn.execute(REQUEST_LOG_DDL)
    ((waiting, overdue),) = conn.execute(
        "select count(*), count(*) filter (where due_at < $now) from ("
        "select status, due_at from governance.privacy_request_log "
        "qualify row_number() over (partition by source, request_id order by processed_at desc) = 1"
        ") where status = 'needs_steward'",
        {"now": now},
    ).fetchall()
    return waiting, overdue


NO_IDENTIFIER = "no email or phone to find the requester by"


def steward_reason(
    customers_matched: int, name_mismatch: bool = False, identified: bool = True
) -> str:
    """Why a request cannot be served automatically: it is never guessed."""
    if not identified:
        return NO_IDENTIFIER
    if customers_matched == 0:
        return NAME_MISMATCH if name_mismatch else "matches no customer"
    return f"matches {customers_matched} customers"


def name_mismatches(matches: pl.DataFrame) -> set[str]:
    return set(matches.filter(pl.col("name_mismatch"))["request_id"])


def process_erasures(
    conn: duckdb.DuckDBPyConnection,
    sources: dict[str, SourceSpec],
    config: dict,
    now: datetime,
    run_id: str,
) -> ErasureOutcome:
    """Serve every pending erasure request, in one transaction: a request matching exactly one
    customer erases that customer (``erase_customers``); any other goes to a steward. The fact
    tables are rebuilt from what is left, so the mart agrees with its records."""
    outcome = ErasureOutcome()
    conn.execute(REQUEST_LOG_DDL)
    ensure_suppression_list(conn)
    requests = pending_requests(conn, sources, "erasure")
    if not requests:
        return outcome
    regions = tuple(config["standardise"]["phone_regions"])
    deadlines = config["privacy"]["deadline_days"]
    matches = match_requests(conn, requests, regions)
    counts = matches.group_by("request_id").agg(
        pl.col("customer_id").drop_nulls().n_unique().alias("n")
    )
    n_of = dict(counts.iter_rows())
    single = {r for r, n in n_of.items() if n == 1}
    mismatched = name_mismatches(matches)
    with transaction(conn):
        removed, anonymised = erase_customers(
            conn,
            matches.filter(pl.col("request_id").is_in(list(single))),
            sources,
            now,
            run_id,
            config["resolve"],
            config["standardise"],
        )
        forget_request_identifiers(conn, [r for r in requests if r.request_id in single], sources)
        for request in requests:
            n = n_of.get(request.request_id, 0)
            if n == 1:
                outcome.erased_customers += 1
                log_request(conn, request, "erased", None, 1, None, now, run_id, deadlines)
            else:
                reason = steward_reason(
                    n, request.request_id in mismatched, bool(request.email or request.phone)
                )
                outcome.reasons[reason] = outcome.reasons.get(reason, 0) + 1
                outcome.needs_steward += 1
                log_request(conn, request, "needs_steward", reason, n, 0, now, run_id, deadlines)
        if single:
            build_facts(conn, sources, config["currency_rates_to_usd"])
    outcome.records_removed, outcome.records_anonymised = removed, anonymised
    return outcome


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
