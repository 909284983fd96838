"""Governance: erasure follows the graph and stays erased, consent ordering, the analyst
database, subject access exports, retention."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import duckdb
import polars as pl
import pytest

from cdm_pipeline.governance.keys import phone_forms
from cdm_pipeline_tests.conftest import make_settings, run_pipeline


def all_text_values(path: Path) -> set[str]:
    """Every text value in every table of a DuckDB file, lower-cased and trimmed, plus JSON values."""
    values: set[str] = set()
    with duckdb.connect(str(path), read_only=True) as conn:
        columns = conn.execute(
            "select c.table_schema, c.table_name, c.column_name from information_schema.columns c "
            "join information_schema.tables t using (table_catalog, table_schema, table_name) "
            "where c.data_type = 'VARCHAR' and t.table_type = 'BASE TABLE'"
        ).fetchall()
        for schema, table, column in columns:
            for (value,) in conn.execute(
                f'select distinct "{column}" from "{schema}"."{table}"'
            ).fetchall():
                if value is None:
                    continue
                values.add(value.strip().lower())
                if value.startswith("{"):
                    try:
                        values |= {
                            str(v).strip().lower()
                            for v in json.loads(value).values()
                            if v is not None
                        }
                    except (ValueError, AttributeError):
                        pass
    return values


def erased_people(settings, demo_data) -> pl.DataFrame:
    """Truth persons whose erasure request was carried out."""
    with duckdb.connect(str(settings.warehouse_path), read_only=True) as conn:
        erased = conn.sql(
            "select request_id from governance.privacy_request_log where status = 'erased'"
        ).pl()
    truth = pl.read_parquet(demo_data / "demo" / "truth" / "records.parquet")
    requests = truth.filter(pl.col("source") == "privacy_requests").select("record_id", "person_id")
    people = erased.join(requests, left_on="request_id", right_on="record_id")["person_id"]
    persons = pl.read_parquet(demo_data / "demo" / "truth" / "persons.parquet")
    return persons.filter(pl.col("person_id").is_in(people.implode()))


def test_erased_people_leave_no_email_or_phone_anywhere(materialised, demo_data):
    settings, result = materialised
    people = erased_people(settings, demo_data)
    assert people.height >= 3
    values = all_text_values(settings.warehouse_path)
    digits = {"".join(c for c in v if c.isdigit()) for v in values}
    for person in people.iter_rows(named=True):
        emails = {person["email"].lower()} | (
            {person["old_email"].lower()} if person["old_email"] else set()
        )
        assert not emails & values, person["person_id"]
        assert not phone_forms(person["phone_national"]) & digits, person["person_id"]
    checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    assert checks["erasure_complete"] is True


def test_erased_people_have_no_linked_record_left(materialised, demo_data):
    settings, _ = materialised
    people = erased_people(settings, demo_data)
    truth = pl.read_parquet(demo_data / "demo" / "truth" / "records.parquet").filter(
        pl.col("person_id").is_in(people["person_id"].implode())
        & (pl.col("source") != "privacy_requests")
    )
    keys = (truth["source"] + ":" + truth["record_id"]).to_list()
    with duckdb.connect(str(settings.warehouse_path), read_only=True) as conn:
        left = conn.execute(
            "select count(*) from mart.customer_xref where record_key in (select unnest(?)) and customer_id is not null",
            [keys],
        ).fetchall()[0][0]
        orders_kept = conn.execute(
            "select count(*) from mart.orders where customer_id is null"
        ).fetchall()[0][0]
    assert left == 0
    assert orders_kept > 0  # order amounts stay, unlinked, for accounting


def test_old_files_landed_again_do_not_bring_erased_people_back(tmp_path, demo_data):
    settings = make_settings(tmp_path, tmp_path / "landing")
    shutil.copytree(demo_data / "landing", settings.landing_dir)
    assert run_pipeline(settings).success
    people = erased_people(settings, demo_data)
    # The same exports arrive again under new names and with a changed byte, so they load.
    for path in list(settings.landing_dir.rglob("*.csv")):
        copy = path.with_name("reexport_" + path.name)
        copy.write_bytes(path.read_bytes() + b"\n")
    result = run_pipeline(settings)
    assert result.success
    with duckdb.connect(str(settings.warehouse_path), read_only=True) as conn:
        suppressed = conn.execute("select sum(suppressed_rows) from raw.file_ledger").fetchall()[0][
            0
        ]
    assert suppressed > 0
    values = all_text_values(settings.warehouse_path)
    for person in people.iter_rows(named=True):
        assert person["email"].lower() not in values
    failed = [
        e.check_name
        for e in result.get_asset_check_evaluations()
        if not e.passed and e.severity.value == "ERROR"
    ]
    assert failed == []


CRM_HEADER = "contact_id,first_name,last_name,email,phone,street,city,state,postal_code,country,birth_date,created_at,updated_at,account_owner"
CONSENT_HEADER = "event_id,email,phone,purpose,action,event_at,source"


def test_a_late_older_grant_does_not_undo_a_revocation(tmp_path):
    landing = tmp_path / "landing"
    (landing / "crm_contacts").mkdir(parents=True)
    (landing / "consent_events").mkdir(parents=True)
    (landing / "crm_contacts" / "crm.csv").write_text(
        f"{CRM_HEADER}\nC1,Ann,Lee,ann.lee@example.com,(212) 555-0134,1 Main St,Springfield,IL,62701,US,1980-01-02,"
        "2024-01-01T00:00:00,2024-02-01T00:00:00,owner\n"
    )
    (landing / "consent_events" / "day1.csv").write_text(
        f"{CONSENT_HEADER}\nE1,ann.lee@example.com,,email_marketing,revoke,2026-06-01T10:00:00,unsubscribe_link\n"
    )
    settings = make_settings(tmp_path, landing)
    assert run_pipeline(settings).success
    (landing / "consent_events" / "day2.csv").write_text(
        f"{CONSENT_HEADER}\nE2,Ann.Lee@Example.com,,email_marketing,grant,2026-01-01T10:00:00,web_form\n"
    )
    assert run_pipeline(settings).success
    with duckdb.connect(str(settings.warehouse_path), read_only=True) as conn:
        state = conn.execute(
            "select state from governance.consent_ledger where purpose = 'email_marketing'"
        ).fetchall()
        contactable = conn.execute("select is_email_contactable from mart.customers").fetchall()
        events = conn.execute(
            "select count(*) from mart.consent_events where customer_id is not null"
        ).fetchall()
    assert state == [("revoked",)]
    assert contactable == [(False,)]
    assert events == [(2,)]


def test_analyst_database_holds_no_pii_and_pseudonymous_joins_work(materialised, demo_data):
    settings, _ = materialised
    analyst = settings.exports_dir / "analyst.duckdb"
    values = all_text_values(analyst)
    persons = pl.read_parquet(demo_data / "demo" / "truth" / "persons.parquet")
    emails = set(persons["email"].str.to_lowercase())
    names = set((persons["first_name"] + " " + persons["last_name"]).str.to_lowercase())
    lasts = set(persons["last_name"].str.to_lowercase())
    assert not values & emails
    assert not values & names
    assert not values & lasts
    assert not any(v.startswith("+") and v[1:].isdigit() for v in values)
    with duckdb.connect(str(analyst), read_only=True) as conn:
        joined = conn.execute(
            "select count(*) from orders o join customers c using (customer_key)"
        ).fetchall()[0][0]
        tables = {r[0] for r in conn.execute("show tables").fetchall()}
    assert joined > 0
    assert tables == {"customers", "orders", "interactions", "survey_responses", "consent_ledger"}


def test_subject_access_export_holds_the_person_and_no_one_else(materialised, demo_data):
    settings, _ = materialised
    with duckdb.connect(str(settings.warehouse_path), read_only=True) as conn:
        exported = conn.sql(
            "select request_id from governance.privacy_request_log where status = 'exported'"
        ).pl()
    assert exported.height > 0
    truth = pl.read_parquet(demo_data / "demo" / "truth" / "records.parquet")
    owner = dict(zip(truth["source"] + ":" + truth["record_id"], truth["person_id"], strict=False))
    requests = truth.filter(pl.col("source") == "privacy_requests")
    requester = dict(zip(requests["record_id"], requests["person_id"], strict=True))
    coverage = []
    for request_id in exported["request_id"]:
        document = json.loads(
            (settings.exports_dir / "subject_access" / f"{request_id}.json").read_text()
        )
        person = requester[request_id]
        held = {f"{r['source']}:{r['record_id']}" for r in document["source_records"]}
        assert held and all(owner[k] == person for k in held), request_id
        for record in document["source_records"]:
            assert record["came_from"]["file"] and record["came_from"]["row_number"]
        assert document["customer"]["customer_id"] == document["customer_id"]
        theirs = {k for k, p in owner.items() if p == person} & _staged_keys(settings)
        coverage.append(len(held & theirs) / len(theirs))
    # Everything exported is theirs; what the resolver did not link to them is not exported
    # (guessing would hand one person's data to another).
    assert sum(coverage) / len(coverage) >= 0.8


def _staged_keys(settings) -> set[str]:
    with duckdb.connect(str(settings.warehouse_path), read_only=True) as conn:
        return {
            r[0] for r in conn.execute("select record_key from identity.person_records").fetchall()
        }


@pytest.mark.parametrize("days", [730])
def test_retention_purges_old_interactions_and_logs_it(materialised, days):
    settings, _ = materialised
    with duckdb.connect(str(settings.warehouse_path), read_only=True) as conn:
        oldest = conn.execute(
            "select min(started_at) from staging.support_interactions"
        ).fetchall()[0][0]
        purged = conn.execute(
            "select sum(row_count) from governance.audit_log where action = 'purged' and object = 'staging.support_interactions'"
        ).fetchall()[0][0]
    from datetime import datetime, timedelta

    assert oldest >= datetime.now() - timedelta(days=days, hours=1)
    assert purged > 0


def test_an_erased_phone_is_found_in_national_and_international_formats(tmp_path):
    """Erasing +44 7911 123456 must also catch '07911 123456' (UK trunk zero) and
    '0044 7911 123456' (international prefix), in SQL scans and in person records."""
    from cdm_pipeline.governance.keys import fingerprint, secret_key
    from cdm_pipeline.governance.scrub import _find_hit_values, _hit_condition
    from cdm_pipeline.governance.suppression import (
        ensure_suppression_list,
        suppressed_person_records,
    )
    from cdm_pipeline.standardise.records import CANONICAL_INPUT, standardise_records

    with duckdb.connect(str(tmp_path / "w.duckdb")) as conn:
        ensure_suppression_list(conn)
        key = secret_key(conn)
        for form in phone_forms("+44 7911 123456", "+447911123456"):
            conn.execute(
                "insert into governance.suppression_list values ('phone', ?, 'r1', now())",
                [fingerprint(key, form)],
            )
        values = ["07911 123456", "0044 7911 123456", "+44 7911 123456", "07911 123457"]
        conn.execute("create table t (p varchar)")
        conn.executemany("insert into t values (?)", [[v] for v in values])
        # A quarantined row keeps its text as JSON: a value only there is found too.
        conn.execute("create table q (raw_row varchar)")
        rows = ['{"phone": "+447911123456", "n": 1}', '{"phone": "07911 123457"}', "not json"]
        conn.executemany("insert into q values (?)", [[r] for r in rows])
        _find_hit_values(conn, key, [("main", "t", "p"), ("main", "q", "raw_row")])
        hits = conn.execute(f"select p from t where {_hit_condition('p')} order by p").fetchall()
        assert [h[0] for h in hits] == sorted(values[:3])
        found = conn.execute(f"select raw_row from q where {_hit_condition('raw_row')}").fetchall()
        assert found == [(rows[0],)]

        records = standardise_records(
            pl.DataFrame(
                {
                    "record_key": ["crm:1", "crm:2"],
                    "source": ["crm", "crm"],
                    "source_record_id": ["1", "2"],
                    "trust_rank": [1, 1],
                    "event_at": [None, None],
                }
                | {c: [None, None] for c in CANONICAL_INPUT}
            ).with_columns(
                phone=pl.Series(["07911 123456", "07911 123457"]),
                country=pl.Series(["UK", "UK"]),
            )
        )
        assert records["phone_e164"].to_list() == ["+447911123456", "+447911123457"]
        assert suppressed_person_records(conn, records).to_list() == [True, False]


def test_the_completeness_scan_finds_a_stray_copy_in_any_column_and_scrub_removes_it(tmp_path):
    """An erased email typed differently in a mart table and inside a quarantined raw row (JSON)
    is found by the scan, column by column, and is gone after scrubbing; other values stay."""
    from cdm_pipeline.governance.keys import fingerprint, secret_key
    from cdm_pipeline.governance.scrub import identifier_hits, scrub_identifiers
    from cdm_pipeline.governance.suppression import ensure_suppression_list
    from cdm_pipeline.warehouse import ensure_schemas, sql_text

    with duckdb.connect(str(tmp_path / "w.duckdb")) as conn:
        ensure_schemas(conn)
        ensure_suppression_list(conn)
        key = secret_key(conn)
        conn.execute(
            "insert into governance.suppression_list values ('email', ?, 'r1', now())",
            [fingerprint(key, "gone@example.org")],
        )
        conn.execute("create table mart.notes (note_id varchar, contact varchar)")
        conn.execute(
            "insert into mart.notes values ('n1', '  Gone@Example.org '), ('n2', 'kept@example.org')"
        )
        conn.execute(sql_text("warehouse/fixed_tables"))
        conn.execute(
            "insert into quarantine.rejected_rows (source, source_file, file_sha256, row_number, "
            "failed_checks, raw_row, quarantined_at) values "
            """('gone', 'f.csv', 'h', 1, 'x', '{"email": "gone@example.org", "id": "7"}', now()), """
            """('gone', 'f.csv', 'h', 2, 'x', '{"email": "kept@example.org"}', now())"""
        )
        hits = {(h["table"], h["column"]): h["rows"] for h in identifier_hits(conn)}
        assert hits == {("mart.notes", "contact"): 1, ("quarantine.rejected_rows", "raw_row"): 1}

        scrub_identifiers(conn, {})
        assert identifier_hits(conn) == []
        assert conn.execute("select note_id, contact from mart.notes order by 1").fetchall() == [
            ("n1", None),
            ("n2", "kept@example.org"),
        ]
        assert conn.execute("select count(*) from quarantine.rejected_rows").fetchall()[0][0] == 1


def test_invalid_privacy_requests_wait_for_a_steward_with_the_failed_checks(materialised):
    """The demo plants an erasure request without a jurisdiction and one of type
    'delete_everything': both fail their contract, and both stay visible in the log."""
    settings, result = materialised
    with duckdb.connect(str(settings.warehouse_path), read_only=True) as conn:
        invalid = conn.execute(
            "select request_id, status, reason, due_at > received_at from governance.privacy_request_log "
            "where request_type = 'invalid'"
        ).fetchall()
        quarantined = conn.execute(
            "select count(*) from quarantine.rejected_rows where source = 'privacy_requests'"
        ).fetchall()[0][0]
    assert len(invalid) == quarantined >= 2
    assert all(status == "needs_steward" and due for _, status, _, due in invalid)
    reasons = " ".join(reason for _, _, reason, _ in invalid)
    assert "request_type: allowed_value" in reasons and "jurisdiction: required" in reasons
    checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert checks["requests_waiting_for_a_steward"].passed is False  # warns: requests are open
    assert checks["privacy_requests_past_deadline"].passed is True


def test_a_request_open_past_its_deadline_is_counted(tmp_path):
    from datetime import datetime, timedelta

    from cdm_pipeline.governance.requests import (
        REQUEST_LOG_DDL,
        PrivacyRequest,
        log_request,
        open_requests,
    )

    now = datetime(2026, 11, 30)
    with duckdb.connect(str(tmp_path / "w.duckdb")) as conn:
        conn.execute("create schema governance")
        conn.execute(REQUEST_LOG_DDL)
        old = PrivacyRequest(
            "requests", "R1", "erasure", None, None, now - timedelta(days=40), "GDPR"
        )
        fresh = PrivacyRequest(
            "requests", "R2", "erasure", None, None, now - timedelta(days=40), "CCPA"
        )
        answered = PrivacyRequest(
            "requests", "R3", "erasure", None, None, now - timedelta(days=90), "GDPR"
        )
        for request in (old, fresh, answered):
            log_request(conn, request, "needs_steward", "matches no customer", 0, 0, now, "run")
        log_request(conn, answered, "erased", None, 1, 3, now + timedelta(seconds=1), "run")
        # GDPR: 30 days, so R1 is overdue; CCPA: 45, so R2 is not yet; R3 was answered.
        assert open_requests(conn, now) == (2, 1)


def test_access_requests_match_the_email_exactly(materialised):
    """victim+x@gmail.com is not victim@gmail.com when data is handed out."""
    from cdm_pipeline.governance.matching import match_customers
    from cdm_pipeline.governance.requests import PrivacyRequest

    settings, _ = materialised
    with duckdb.connect(str(settings.warehouse_path), read_only=True) as conn:
        (email,) = conn.execute(
            "select p.email from identity.person_records p join mart.customer_xref x using (record_key) "
            "where x.customer_id is not null and p.email like '%@gmail.com' and p.email not like '%+%' "
            "order by 1 limit 1"
        ).fetchall()[0]
        local, domain = email.split("@")
        tagged = PrivacyRequest("cli", "cli", "access", f"{local}+x@{domain}", None)
        plain = PrivacyRequest("cli", "cli", "access", email, None)
        assert match_customers(conn, tagged, ("US",), exact=True) == []
        assert len(match_customers(conn, plain, ("US",), exact=True)) == 1
        assert match_customers(conn, tagged, ("US",)) == match_customers(conn, plain, ("US",))


def test_database_errors_carry_no_data_values_and_release_the_file(tmp_path):
    """A conversion error quotes the value it failed on; the warehouse resource's error does not
    (its text reaches Dagster's event log), and the failed block's connection is closed so the
    next open in the process, with another configuration, is not refused."""
    from cdm_pipeline.defs.resources import WarehouseResource

    warehouse = WarehouseResource(database=str(tmp_path / "w.duckdb"))
    with warehouse.get_connection() as conn:
        conn.execute("create table t (email varchar)")
        conn.execute("insert into t values ('ann.secret@example.org')")
    with pytest.raises(duckdb.ConversionException) as raised:
        with warehouse.get_connection() as conn:
            conn.execute("select email::integer from t").fetchall()
    assert "ann.secret" not in str(raised.value)
    assert "INT32" in str(raised.value)  # what went wrong is still said
    assert raised.value.__cause__ is None and raised.value.__suppress_context__
    with duckdb.connect(str(tmp_path / "w.duckdb"), read_only=True) as conn:
        assert conn.execute("select count(*) from t").fetchall() == [(1,)]


def test_the_analyst_pii_check_counts_an_identifying_value_but_not_a_city(tmp_path):
    """The check that guards the analyst database finds a leaked email, phone, full name or
    street in any text column (however its case), and lets a city through."""
    from cdm_pipeline.governance.analyst import pii_values_in

    analyst = tmp_path / "analyst.duckdb"
    with duckdb.connect(str(analyst)) as conn:
        conn.execute("create table customers (customer_key varchar, city varchar)")
        conn.execute(
            "insert into customers values ('k1', 'Leeds'), ('Ann.Lee@Example.org', 'Leeds'), "
            "('k3', '12 high street'), ('ann lee', null)"
        )
        conn.execute("create table orders (order_key varchar)")
        conn.execute("insert into orders values ('+441234567890'), ('o2')")
    with duckdb.connect(str(tmp_path / "warehouse.duckdb")) as conn:
        conn.execute("create schema mart")
        conn.execute("create schema identity")
        conn.execute(
            "create table mart.customers as select 'ann.lee@example.org' as email, "
            "'+441234567890' as phone, '12 High Street' as street, 'Ann' as first_name, "
            "'Lee' as last_name"
        )
        conn.execute(
            "create table identity.person_records as select ' ANN.LEE@example.org' as email_raw, "
            "null as phone_raw, 'Ann Lee' as full_name_raw, 'ann.lee@example.org' as email, "
            "'+441234567890' as phone_e164, '12 High Street' as street_raw, 'Ann' as first_name, "
            "'Lee' as last_name, 'Leeds' as city_raw"
        )
        # the email, the street, the full name and the phone: four values; the city is allowed
        assert pii_values_in(conn, analyst) == 4


def test_erased_values_cannot_be_read_from_any_file_the_night_leaves(materialised, demo_data):
    """Deleted rows stay readable in a DuckDB file's free blocks: after an erasure the night is
    published as a fresh copy. Not a byte of an erased person's emails is in the warehouse
    file, the work folder or the exports; the same search finds other people's emails there."""
    settings, _ = materialised
    people = erased_people(settings, demo_data)
    assert people.height >= 3
    erased = {e.lower() for e in people["email"]} | {
        e.lower() for e in people["old_email"].drop_nulls()
    }
    files = [settings.warehouse_path] + [
        f
        for folder in (settings.work_path, settings.exports_dir)
        if folder.exists()
        for f in folder.rglob("*")
        if f.is_file()
    ]
    blobs = {f: f.read_bytes().lower() for f in files}
    found = {(str(f), e) for f, blob in blobs.items() for e in erased if e.encode() in blob}
    assert not found
    persons = pl.read_parquet(demo_data / "demo" / "truth" / "persons.parquet")
    others = persons.filter(~pl.col("person_id").is_in(people["person_id"].implode()))
    warehouse = blobs[settings.warehouse_path]
    seen = sum(e.lower().encode() in warehouse for e in others["email"].head(200))
    assert seen > 0  # the search would have found them


@pytest.mark.parametrize(
    ("row", "reason", "received"),
    [
        (",erasure,ann@example.org,,Ann Lee,2025-06-01 09:00:00,GDPR", "request_id", "2025-06-01"),
        ("R1,access,ann@example.org,,Ann Lee,2025-06-03 09:00:00,GDPR", "unique", "2025-06-03"),
        ("R2,erasure,,,Ann Lee,2025-06-01 09:00:00,GDPR", "no email or phone", "2025-06-01"),
        ("R3,erasure,ann@example.org,,Ann Lee,the first of June,GDPR", "unreadable", None),
    ],
    ids=["empty-id", "id-used-before", "no-identifier", "bad-date"],
)
def test_every_landed_request_has_a_log_row_with_its_reason(tmp_path, row, reason, received):
    """No request is lost or mis-dated: each case lands beside a valid request R1 and has its
    own row in the log, waiting for a steward, due from the date it was received as written
    (or from when it landed when that date does not read); overdue ones are counted."""
    from cdm_pipeline_tests.test_household_erasure import REQUEST_COLUMNS, _write_crm

    landing = tmp_path / "landing"
    _write_crm(landing, {"C1": {"first_name": "Ann", "last_name": "Lee", "email": "ann@x.org"}})
    (landing / "privacy_requests").mkdir(parents=True)
    (landing / "privacy_requests" / "r.csv").write_text(
        f"{REQUEST_COLUMNS}\nR1,erasure,ann@x.org,,Ann Lee,2025-06-02 09:00:00,GDPR\n{row}\n"
    )
    settings = make_settings(tmp_path, landing)
    result = run_pipeline(settings)
    with duckdb.connect(str(settings.warehouse_path), read_only=True) as conn:
        log = conn.execute(
            "select request_id, status, reason, received_at::date::varchar, due_at > received_at "
            "from governance.privacy_request_log order by request_id"
        ).fetchall()
    assert len(log) == 2, log  # R1 and the case, each once
    case = next(entry for entry in log if entry[2] and reason in entry[2])
    assert case[1] == "needs_steward" and case[4]
    if received is not None:
        assert case[3] == received
    checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
    overdue = checks["privacy_requests_past_deadline"]
    if received is not None:  # received in 2025: long overdue, and counted
        assert overdue.passed is False and overdue.metadata["past_deadline"].value >= 1
