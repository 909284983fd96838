"""Privacy requests as landed: the pending ones, their deadlines, and the request log.

Every request row gets a row in ``governance.privacy_request_log``: served, waiting for a
steward with the reason, or invalid (failed its contract), with the date it was received.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta

import duckdb
import polars as pl

from cdm_pipeline.registry import SourceSpec
from cdm_pipeline.warehouse import quote_ident, table_exists

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


def hold_for_steward(
    conn: duckdb.DuckDBPyConnection,
    table: str,
    held: pl.DataFrame,
    now: datetime,
    run_id: str | None,
) -> None:
    """List records a privacy request left alone (``request_id, customer_id, source,
    source_record_id, reason``) in ``governance.<table>`` for a steward: ids only, the records
    themselves stay where they are."""
    conn.execute(
        f"create table if not exists governance.{table} (request_id varchar not null, "
        "customer_id varchar not null, source varchar not null, "
        "source_record_id varchar not null, reason varchar not null, "
        "held_at timestamp not null, run_id varchar)"
    )
    rows = held.select("request_id", "customer_id", "source", "source_record_id", "reason")
    if rows.height:
        conn.executemany(
            f"insert into governance.{table} values (?, ?, ?, ?, ?, ?, ?)",
            [[*row, now, run_id] for row in rows.iter_rows()],
        )


NAME_MISMATCH = "identifier held by a customer with another name"
NO_IDENTIFIER = "no email or phone to find the requester by"


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


def handled_in_run(conn: duckdb.DuckDBPyConnection, run_id: str) -> dict[str, int]:
    """Requests logged by one run, by status."""
    rows = conn.execute(
        "select status, count(*) from governance.privacy_request_log where run_id = ? group by 1",
        [run_id],
    ).fetchall()
    return dict(rows)


def held_in_run(conn: duckdb.DuckDBPyConnection, run_id: str) -> dict[str, int]:
    """Records tonight's erasures and exports left to a steward, by table."""
    return {
        table: conn.execute(
            f"select count(*) from governance.{table} where run_id = ?", [run_id]
        ).fetchall()[0][0]
        for table in ("erasure_held_records", "access_held_records")
        if table_exists(conn, "governance", table)
    }


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


def steward_reason(
    customers_matched: int, name_mismatch: bool = False, identified: bool = True
) -> str:
    """Why a request cannot be served automatically: it is never guessed."""
    if not identified:
        return NO_IDENTIFIER
    if customers_matched == 0:
        return NAME_MISMATCH if name_mismatch else "matches no customer"
    return f"matches {customers_matched} customers"
