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

from dataclasses import dataclass, field
from datetime import datetime

import duckdb
import polars as pl

from cdm_pipeline.governance.identity_suppression import identity_forms
from cdm_pipeline.governance.keys import (
    email_forms,
    fingerprint,
    name_form,
    phone_forms,
    secret_key,
)
from cdm_pipeline.governance.matching import (
    UNATTRIBUTED,
    UNCERTAIN_LINK,
    match_requests,
    name_mismatches,
    requesters_records,
    unattributed_records,
)
from cdm_pipeline.governance.quarantined import quarantined_rows_of
from cdm_pipeline.governance.removal import (
    anonymise_rows,
    landed_rows_where,
    remove_landed_rows,
)
from cdm_pipeline.governance.requests import (
    REQUEST_LOG_DDL,
    PrivacyRequest,
    hold_for_steward,
    log_request,
    pending_requests,
    steward_reason,
)
from cdm_pipeline.governance.suppression import ensure_suppression_list
from cdm_pipeline.ingest.reader import ROW_NUMBER
from cdm_pipeline.registry import SourceSpec
from cdm_pipeline.resolve.forget import forget_customers
from cdm_pipeline.warehouse import quote_ident, table_exists, transaction


@dataclass
class ErasureOutcome:
    erased_customers: int = 0
    records_removed: int = 0
    records_anonymised: int = 0
    records_held: int = 0  # linked to an erased customer by weaker links: a steward decides
    needs_steward: int = 0
    reasons: dict[str, int] = field(default_factory=dict)


def erase_customers(
    conn: duckdb.DuckDBPyConnection,
    erasures: pl.DataFrame,
    sources: dict[str, SourceSpec],
    now: datetime,
    run_id: str | None = None,
    resolve_settings: dict | None = None,
    standardise_settings: dict | None = None,
    min_link_probability: float = 0.0,
) -> tuple[int, int, dict[str, int]]:
    """Remove the customers in ``erasures`` (``request_id, customer_id, seed_keys`` from
    ``match_requests``) everywhere, set-based, and suppress their identifiers (call inside a
    transaction, then ``scrub_identifiers`` for stray copies). Only records joined to the
    request's by links at least ``min_link_probability`` probable go (``requesters_records``);
    the customer's other records are unlinked (re-resolved without the erased ones) and listed
    in ``governance.erasure_held_records`` for a steward, as are the records in no customer
    that carry one of the erased records' emails or phones (``unattributed_records``). With
    ``standardise_settings``, the requesters' quarantined rows go too (``quarantined_rows_of``).
    Returns (removed, anonymised) source rows and the records held back per request."""
    key = secret_key(conn)
    ensure_suppression_list(conn)
    erasures = erasures.drop_nulls("customer_id")  # ``not in`` a list holding null is never true
    members = requesters_records(conn, erasures, min_link_probability)
    customer_of = erasures.select("request_id", "customer_id").unique()
    unattributed = unattributed_records(conn, members.filter("certain"))
    held = pl.concat(
        [
            members.filter(~pl.col("certain")).with_columns(reason=pl.lit(UNCERTAIN_LINK)),
            unattributed.join(customer_of, on="request_id").with_columns(
                reason=pl.lit(UNATTRIBUTED)
            ),
        ],
        how="diagonal",
    )
    hold_for_steward(conn, "erasure_held_records", held, now, run_id)
    conn.register("erased_customers", erasures.select("request_id", "customer_id").to_arrow())
    conn.register(
        "erased_records",
        members.filter("certain").select("request_id", "customer_id", "record_key").to_arrow(),
    )
    records = conn.sql(
        "select e.request_id, e.customer_id, p.* from identity.person_records p "
        "join erased_records e using (record_key)"
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
        forms += identity_forms(row)
        fingerprints |= {(kind, fingerprint(key, form), row["request_id"]) for kind, form in forms}
    if fingerprints:
        conn.executemany(
            "insert into governance.suppression_list values (?, ?, ?, ?)",
            [[kind, value, request_id, now] for kind, value, request_id in sorted(fingerprints)],
        )
    removed = anonymised = 0
    for source_name, ids in records.group_by("source").agg(pl.col("source_record_id")).iter_rows():
        if source_name in sources:
            removed_here, anonymised_here = erase_source_rows(conn, sources[source_name], ids, now)
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
    # Last night's mart, which tonight's customer 360 replaces: it holds them until then.
    for schema, table in (
        ("mart", "customers"),
        ("mart", "customer_attribute_lineage"),
        ("governance", "consent_ledger"),
    ):
        if table_exists(conn, schema, table):
            conn.execute(
                f"delete from {schema}.{table} "
                "where customer_id in (select customer_id from erased_customers)"
            )
    conn.unregister("erased_customers")
    conn.unregister("erased_records")
    return removed, anonymised, dict(held.group_by("request_id").len().iter_rows())


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
    """The forms of the requester's emails and phones that a linked record not being erased
    holds (``erased_records`` is registered; a record the erasure holds back counts),
    normalised as the completeness scan normalises what it finds (``scrub._HITS_AMONG``):
    lower-cased emails, phone digits with and without leading zeros. Only what no one else
    holds is scrubbed."""
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
        "and p.record_key not in (select record_key from erased_records)) "
        f"select distinct f from ({union}) where f in (select unnest($forms))",
        {"forms": sorted(emails | phones)},
    ).fetchall()
    return {value for (value,) in rows}


def erase_source_rows(
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
    anonymise_rows(
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
        removed, anonymised, held = erase_customers(
            conn,
            matches.filter(pl.col("request_id").is_in(list(single))),
            sources,
            now,
            run_id,
            config["resolve"],
            config["standardise"],
            config["privacy"]["min_link_probability"],
        )
        forget_request_identifiers(conn, [r for r in requests if r.request_id in single], sources)
        for request in requests:
            n = n_of.get(request.request_id, 0)
            if n == 1:
                outcome.erased_customers += 1
                n_held = held.get(request.request_id, 0)
                reason = (
                    f"{n_held} records held for a steward (governance.erasure_held_records)"
                    if n_held
                    else None
                )
                log_request(conn, request, "erased", reason, 1, None, now, run_id, deadlines)
            else:
                reason = steward_reason(
                    n, request.request_id in mismatched, bool(request.email or request.phone)
                )
                outcome.reasons[reason] = outcome.reasons.get(reason, 0) + 1
                outcome.needs_steward += 1
                log_request(conn, request, "needs_steward", reason, n, 0, now, run_id, deadlines)
    outcome.records_removed, outcome.records_anonymised = removed, anonymised
    outcome.records_held = sum(held.values())
    return outcome


def erased_in_run(conn: duckdb.DuckDBPyConnection, run_id: str) -> bool:
    """Whether the run erased anyone (the audit log says so)."""
    rows = conn.execute(
        "select count(*) from governance.audit_log where run_id = ? and action = 'erased'",
        [run_id],
    ).fetchall()
    return rows[0][0] > 0
