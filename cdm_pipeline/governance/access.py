"""Right of access: one JSON document with everything held about a person, and where it came from."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path

import duckdb
import polars as pl
from rapidfuzz.distance import JaroWinkler

from cdm_pipeline.golden.facts import FACTS
from cdm_pipeline.governance.matching import (
    UNATTRIBUTED,
    UNCERTAIN_LINK,
    match_requests,
    name_mismatches,
    requesters_records,
    unattributed_records,
)
from cdm_pipeline.governance.quarantined import quarantined_rows_of
from cdm_pipeline.governance.requests import (
    hold_for_steward,
    log_request,
    pending_requests,
    steward_reason,
)
from cdm_pipeline.registry import SourceSpec
from cdm_pipeline.standardise.fields import same_first_name
from cdm_pipeline.validate.stage import current_rows_sql
from cdm_pipeline.warehouse import quote_ident, table_exists

FACT_TABLES = tuple(FACTS)
TYPO_SIMILARITY = 0.88  # the name check of requests (matching._same_name) allows as much
HELD_REASON = "linked only by an email or phone that people with other first names hold too"


def _grouped(
    conn: duckdb.DuckDBPyConnection, query: str, params: dict, key: str
) -> dict[str, list[dict]]:
    result = conn.execute(query, params)
    names = [d[0] for d in result.description]
    out: dict[str, list[dict]] = {}
    for row in result.fetchall():
        record = dict(zip(names, row, strict=True))
        out.setdefault(record[key], []).append(record)
    return out


def shared_value_records(conn: duckdb.DuckDBPyConnection, customer_ids: list[str]) -> pl.DataFrame:
    """``customer_id, record_key, source, source_record_id`` of the customers' records whose link
    rests on household evidence only: the record carries neither a first name nor a birth date
    (nothing that tells one member from another), and each email and phone it does carry is held
    in the warehouse by people of different first names too (a family inbox, a home number).
    An access request hands such a record to a steward, not to the requester: it may be the
    partner's. Read by key: only the values these records carry are looked up."""
    nameless = conn.sql(
        "select x.customer_id, p.record_key, p.source, p.source_record_id, p.email_norm, "
        "p.phone_e164 from identity.person_records p join mart.customer_xref x using (record_key) "
        "where x.customer_id in (select unnest($ids)) and p.first_name_key is null "
        "and p.birth_date is null and (p.email_norm is not null or p.phone_e164 is not null)",
        params={"ids": sorted(set(customer_ids))},
    ).pl()
    if nameless.height == 0:
        return nameless.select("customer_id", "record_key", "source", "source_record_id")
    values = set(nameless["email_norm"].drop_nulls()) | set(nameless["phone_e164"].drop_nulls())
    holders = conn.execute(
        "select distinct email_norm, first_name_key from identity.person_records "
        "where email_norm in (select unnest($v)) and first_name_key is not null "
        "union all select distinct phone_e164, first_name_key from identity.person_records "
        "where phone_e164 in (select unnest($v)) and first_name_key is not null",
        {"v": sorted(values)},
    ).fetchall()
    names: dict[str, set[str]] = {}
    for value, first_name in holders:
        names.setdefault(value, set()).add(first_name)
    shared = {value for value, held in names.items() if _different_people(held)}
    either = pl.col("email_norm").is_null() | pl.col("email_norm").is_in(list(shared))
    both = pl.col("phone_e164").is_null() | pl.col("phone_e164").is_in(list(shared))
    return nameless.filter(either & both).select(
        "customer_id", "record_key", "source", "source_record_id"
    )


def _different_people(first_names: set[str]) -> bool:
    """Two of the first names cannot be one person's (not a nickname, typo or initial of it)."""
    names = sorted(first_names)
    return any(
        not same_first_name(a, b)
        and JaroWinkler.similarity(a, b) < TYPO_SIMILARITY
        and not (len(a) == 1 and b.startswith(a))
        and not (len(b) == 1 and a.startswith(b))
        for i, a in enumerate(names)
        for b in names[i + 1 :]
    )


def subject_documents(
    conn: duckdb.DuckDBPyConnection,
    customer_ids: list[str],
    sources: dict[str, SourceSpec],
    standardise_settings: dict | None = None,
    uncertain: pl.DataFrame | None = None,
) -> dict[str, dict]:
    """For each customer: golden record, attribute lineage, every source record (with the file and
    row it came from), consent state and history, and every fact; with ``standardise_settings``
    also the quarantined rows that are theirs (those erasure would take). Records linked by
    household evidence only (``shared_value_records``) or, for a request, by links too weak to
    hand data out on (``uncertain``: ``customer_id, source, source_record_id``) are left out and
    counted. A handful of queries in all, whatever the number of customers."""
    ids = {"ids": sorted(set(customer_ids))}
    among = "customer_id in (select unnest($ids))"
    customers = _grouped(conn, f"select * from mart.customers where {among}", ids, "customer_id")
    lineage = _grouped(
        conn,
        "select customer_id, attribute, value, source, source_record_id, rule "
        f"from mart.customer_attribute_lineage where {among} order by attribute",
        ids,
        "customer_id",
    )
    links = _grouped(
        conn,
        f"select customer_id, source, source_record_id, link_method from mart.customer_xref where {among} "
        "order by source, source_record_id",
        ids,
        "customer_id",
    )
    records: dict[tuple[str, str], dict] = {}
    for source in sources.values():
        wanted = [
            r["source_record_id"]
            for rows in links.values()
            for r in rows
            if r["source"] == source.name
        ]
        if not wanted or not table_exists(conn, "staging", source.name):
            continue
        record_id = quote_ident(source.record_id)
        found = _grouped(
            conn,
            f"select cast({record_id} as varchar) as _id, * from ("
            + current_rows_sql(source, f"cast({record_id} as varchar) in (select unnest($w))")
            + ")",
            {"w": wanted},
            "_id",
        )
        records |= {(source.name, rid): rows[0] for rid, rows in found.items()}
    facts = {
        t: _grouped(conn, f"select * from mart.{t} where {among}", ids, "customer_id")
        for t in FACT_TABLES
    }
    consent = _grouped(
        conn,
        f"select customer_id, purpose, state, effective_at, source from governance.consent_ledger where {among} "
        "order by purpose",
        ids,
        "customer_id",
    )
    quarantined = (
        _quarantined_rows(conn, ids["ids"], sources, standardise_settings)
        if standardise_settings is not None
        else {}
    )
    held = shared_value_records(conn, ids["ids"]).select(
        "customer_id", "source", "source_record_id"
    )
    if uncertain is not None:
        held = pl.concat([held, uncertain.select(held.columns)]).unique()
    held_keys = set(zip(held["source"], held["source_record_id"], strict=True))
    documents = {}
    for customer_id in ids["ids"]:
        source_records = []
        for link in links.get(customer_id, []):
            record = records.get((link["source"], link["source_record_id"]))
            if record is None or (link["source"], link["source_record_id"]) in held_keys:
                continue
            source_records.append(
                {
                    "source": link["source"],
                    "record_id": link["source_record_id"],
                    "linked_by": link["link_method"],
                    "came_from": {
                        "file": record.get("_source_file"),
                        "row_number": record.get("_row_number"),
                        "loaded_at": record.get("_loaded_at"),
                    },
                    "data": {k: v for k, v in record.items() if not k.startswith("_")},
                }
            )
        documents[customer_id] = {
            "customer_id": customer_id,
            "generated_at": datetime.now().isoformat(timespec="seconds"),
            "customer": (customers.get(customer_id) or [None])[0],
            "attribute_lineage": [
                {k: v for k, v in r.items() if k != "customer_id"}
                for r in lineage.get(customer_id, [])
            ],
            "source_records": source_records,
            **{t: facts[t].get(customer_id, []) for t in FACT_TABLES},
            "consent_state": [
                {k: v for k, v in r.items() if k != "customer_id"}
                for r in consent.get(customer_id, [])
            ],
            "quarantined_rows": quarantined.get(customer_id, []),
            "records_held_for_steward": held.filter(pl.col("customer_id") == customer_id).height,
        }
    return documents


def _quarantined_rows(
    conn: duckdb.DuckDBPyConnection,
    customer_ids: list[str],
    sources: dict[str, SourceSpec],
    standardise_settings: dict,
) -> dict[str, list[dict]]:
    """Each customer's quarantined rows as landed, with why they were rejected."""
    records = conn.sql(
        "select x.customer_id, p.* from identity.person_records p "
        "join mart.customer_xref x using (record_key) where x.customer_id in (select unnest($ids))",
        params={"ids": customer_ids},
    ).pl()
    if records.height == 0:
        return {}
    found = quarantined_rows_of(conn, records, sources, standardise_settings)
    if found.height == 0:
        return {}
    conn.register(
        "_their_rows", found.select("customer_id", "source", "file_sha256", "row_number").to_arrow()
    )
    try:
        rows = conn.execute(
            "select t.customer_id, q.source, q.record_id, q.source_file, q.row_number, "
            "q.failed_checks, q.raw_row from quarantine.rejected_rows q join _their_rows t "
            "on q.source = t.source and q.file_sha256 = t.file_sha256 "
            "and q.row_number = t.row_number order by 1, 2, 4, 5"
        ).fetchall()
    finally:
        conn.unregister("_their_rows")
    out: dict[str, list[dict]] = {}
    for customer_id, source, record_id, file, row_number, failed, raw_row in rows:
        out.setdefault(customer_id, []).append(
            {
                "source": source,
                "record_id": record_id,
                "came_from": {"file": file, "row_number": row_number},
                "failed_checks": failed,
                "data": {k: v for k, v in json.loads(raw_row).items() if not k.startswith("_")},
            }
        )
    return out


def subject_document(
    conn: duckdb.DuckDBPyConnection,
    customer_id: str,
    sources: dict[str, SourceSpec],
    standardise_settings: dict | None = None,
    uncertain: pl.DataFrame | None = None,
) -> dict:
    return subject_documents(conn, [customer_id], sources, standardise_settings, uncertain)[
        customer_id
    ]


def _json_default(value: object) -> str | float:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return float(value)
    return str(value)


def write_document(document: dict, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        json.dumps(document, default=_json_default, indent=2, ensure_ascii=False), encoding="utf-8"
    )
    return path


@dataclass
class AccessOutcome:
    exported: int = 0
    needs_steward: int = 0
    reasons: dict[str, int] = field(default_factory=dict)
    paths: list[Path] = field(default_factory=list)


def process_access_requests(
    conn: duckdb.DuckDBPyConnection,
    sources: dict[str, SourceSpec],
    config: dict,
    folder: Path,
    now: datetime,
    run_id: str,
) -> AccessOutcome:
    """Answer every pending access request that matches exactly one customer, by identifiers
    as given (no +tag stripping: it hands data out), with ``<folder>/<request_id>.json``; any
    other request waits for a steward."""
    outcome = AccessOutcome()
    requests = pending_requests(conn, sources, "access")
    if not requests:
        return outcome
    regions = tuple(config["standardise"]["phone_regions"])
    deadlines = config["privacy"]["deadline_days"]
    matches = match_requests(conn, requests, regions, exact=True)
    holders = (
        matches.filter(pl.col("customer_id").is_not_null())
        .group_by("request_id")
        .agg(pl.col("customer_id").unique())
    )
    holder_of = {r: ids for r, ids in holders.iter_rows()}
    mismatched = name_mismatches(matches)
    single = {r: ids[0] for r, ids in holder_of.items() if len(ids) == 1}
    members = requesters_records(
        conn,
        matches.filter(pl.col("request_id").is_in(list(single))),
        config["privacy"]["min_link_probability"],
    )
    uncertain = _uncertain(members)
    documents = subject_documents(
        conn, list(single.values()), sources, config["standardise"], uncertain
    )
    unattributed = unattributed_records(conn, members.filter("certain"))
    unattributed_of = dict(unattributed.group_by("request_id").len().iter_rows())
    for request in requests:
        n = len(holder_of.get(request.request_id, []))
        if n != 1:
            reason = steward_reason(
                n, request.request_id in mismatched, bool(request.email or request.phone)
            )
            outcome.reasons[reason] = outcome.reasons.get(reason, 0) + 1
            outcome.needs_steward += 1
            log_request(conn, request, "needs_steward", reason, n, 0, now, run_id, deadlines)
            continue
        document = documents[single[request.request_id]]
        outcome.paths.append(write_document(document, folder / f"{request.request_id}.json"))
        outcome.exported += 1
        records = len(document["source_records"])
        held = document["records_held_for_steward"] + unattributed_of.get(request.request_id, 0)
        reason = (
            f"{held} records held for a steward (governance.access_held_records)" if held else None
        )
        log_request(conn, request, "exported", reason, 1, records, now, run_id, deadlines)
    _hold_for_steward(conn, single, uncertain, unattributed, now, run_id)
    return outcome


def uncertain_records(
    conn: duckdb.DuckDBPyConnection, matches: pl.DataFrame, config: dict
) -> pl.DataFrame:
    """``customer_id, source, source_record_id`` of the requested customers' records that no
    request for them reaches through links sure enough to hand data out on."""
    return _uncertain(requesters_records(conn, matches, config["privacy"]["min_link_probability"]))


def _uncertain(members: pl.DataFrame) -> pl.DataFrame:
    return (
        members.group_by("customer_id", "source", "source_record_id")
        .agg(pl.col("certain").any())
        .filter(~pl.col("certain"))
        .drop("certain")
    )


def _hold_for_steward(
    conn: duckdb.DuckDBPyConnection,
    customer_of: dict[str, str],
    uncertain: pl.DataFrame,
    unattributed: pl.DataFrame,
    now: datetime,
    run_id: str,
) -> None:
    """List tonight's held records in ``governance.access_held_records``, each with why."""
    held = pl.concat(
        [
            shared_value_records(conn, list(customer_of.values()))
            .select("customer_id", "source", "source_record_id")
            .with_columns(reason=pl.lit(HELD_REASON)),
            uncertain.with_columns(reason=pl.lit(UNCERTAIN_LINK)),
        ]
    ).unique(["customer_id", "source", "source_record_id"], keep="first", maintain_order=True)
    requests = pl.DataFrame(
        {"request_id": list(customer_of), "customer_id": list(customer_of.values())},
        schema={"request_id": pl.String, "customer_id": pl.String},
    )
    unattributed = unattributed.join(requests, on="request_id").with_columns(
        reason=pl.lit(UNATTRIBUTED)
    )
    held = pl.concat([requests.join(held, on="customer_id"), unattributed], how="diagonal")
    hold_for_steward(conn, "access_held_records", held, now, run_id)


def foreign_records(conn: duckdb.DuckDBPyConnection, paths: list[Path]) -> int:
    """How many source records listed in the documents at ``paths`` are not linked to the
    document's customer in ``mart.customer_xref`` (read back from the files as written)."""
    listed = [
        (document["customer_id"], f"{r['source']}:{r['record_id']}")
        for document in (json.loads(p.read_text(encoding="utf-8")) for p in paths)
        for r in document["source_records"]
    ]
    if not listed:
        return 0
    frame = pl.DataFrame(listed, schema=["customer_id", "record_key"], orient="row")
    conn.register("_listed_records", frame.to_arrow())
    try:
        return conn.execute(
            "select count(*) from _listed_records l where not exists (select 1 from "
            "mart.customer_xref x where x.record_key = l.record_key "
            "and x.customer_id = l.customer_id)"
        ).fetchall()[0][0]
    finally:
        conn.unregister("_listed_records")
