"""Erasure of one household member: the requester goes, everyone else stays whole.

Three households of the demo get one requester each: by email only (the phone is the family's),
by phone only (their own number), by email and the family phone. A night without the requests is
the baseline; the next night carries them out; a third lands re-exports of the requesters and a
new record of a family member carrying the shared phone.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import duckdb
import polars as pl
import pytest

from cdm_pipeline_tests.conftest import make_settings, run_pipeline

REQUEST_COLUMNS = "request_id,request_type,email,phone,name,received_at,jurisdiction"


def _truth(demo_data: Path) -> tuple[pl.DataFrame, pl.DataFrame]:
    persons = pl.read_parquet(demo_data / "demo" / "truth" / "persons.parquet")
    records = pl.read_parquet(demo_data / "demo" / "truth" / "records.parquet").filter(
        ~pl.col("planted_bad") & (pl.col("source") != "privacy_requests")
    )
    return persons, records.with_columns(record_key=pl.col("source") + ":" + pl.col("record_id"))


def _customers(warehouse: Path) -> dict[str, str | None]:
    with duckdb.connect(str(warehouse), read_only=True) as conn:
        return dict(
            conn.execute("select record_key, customer_id from mart.customer_xref").fetchall()
        )


def _phones_held(warehouse: Path, records: pl.DataFrame) -> dict[int, set[str]]:
    """The E.164 phones each person's records carry in the warehouse."""
    with duckdb.connect(str(warehouse), read_only=True) as conn:
        phones = conn.sql("select record_key, phone_e164 from identity.person_records").pl()
    held = records.join(phones, on="record_key").drop_nulls("phone_e164")
    return {p: set(v) for p, v in held.group_by("person_id").agg("phone_e164").iter_rows()}


def _pick_households(persons, records, customers, phones) -> dict[str, tuple[dict, list[dict]]]:
    """Requester and the rest of their household, for each way of asking. Each requester's
    records are one customer in the baseline, not shared with anyone else's, and each has a CRM
    record (re-exported on the third night). A shared phone is one the warehouse knows another
    member holds (one of their records carries it)."""
    keys = records.group_by("person_id").agg("record_key", "source")
    keys_of = {p: (k, s) for p, k, s in keys.iter_rows()}

    def single_customer(person_id):
        ids = {customers.get(k) for k in keys_of.get(person_id, ([], []))[0]}
        return len(ids) == 1 and None not in ids

    members = persons.filter(pl.col("household_id") != pl.col("person_id"))
    chosen, used = {}, set()
    for member in members.filter(pl.col("country") == "US").iter_rows(named=True):
        household = persons.filter(pl.col("household_id") == member["household_id"])
        if member["household_id"] in used or household.height < 2:
            continue
        others = household.filter(pl.col("person_id") != member["person_id"]).to_dicts()
        own_phone = f"+1{member['phone_national']}"
        shares_phone = any(own_phone in phones.get(o["person_id"], set()) for o in others)
        if not shares_phone and any(
            o["phone_national"] == member["phone_national"] for o in others
        ):
            continue  # shared in life, but the warehouse cannot know it
        shares_email = any(o["email"] == member["email"] for o in others)
        if shares_email or "crm_contacts" not in keys_of.get(member["person_id"], ([], []))[1]:
            continue
        if not all(single_customer(p["person_id"]) for p in [member, *others]):
            continue
        member_customer = customers[keys_of[member["person_id"]][0][0]]
        if any(customers[keys_of[o["person_id"]][0][0]] == member_customer for o in others):
            continue
        way = "phone" if not shares_phone else ("email" if "email" not in chosen else "both")
        if way in chosen:
            continue
        chosen[way] = (member, others)
        used.add(member["household_id"])
        if len(chosen) == 3:
            return chosen
    pytest.skip(
        f"the demo has no households for {sorted({'email', 'phone', 'both'} - set(chosen))}"
    )


def _request_file(path: Path, chosen) -> None:
    lines = [REQUEST_COLUMNS]
    for way, (member, _) in chosen.items():
        email = member["email"] if way in ("email", "both") else ""
        phone = f"+1{member['phone_national']}" if way in ("phone", "both") else ""
        lines.append(f"HH-{way},erasure,{email},{phone},,2026-11-28 12:00:00,GDPR")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


def _rows_of(warehouse: Path, keys: set[str]) -> set[tuple]:
    """Every raw and staged row (its whole content) of the given record keys."""
    out = set()
    with duckdb.connect(str(warehouse), read_only=True) as conn:
        id_columns = {
            "crm_contacts": "contact_id",
            "web_signups": "signup_id",
            "orders": "order_id",
            "support_interactions": "interaction_id",
            "consent_events": "event_id",
            "surveys": "response_id",
        }
        for source, column in id_columns.items():
            for schema in ("raw", "staging"):
                wanted = [k.split(":", 1)[1] for k in keys if k.startswith(source + ":")]
                rows = conn.execute(
                    f"select * exclude (_loaded_at, _run_id) from {schema}.{source} "
                    f"where {column} in (select unnest(?))",
                    [wanted],
                ).fetchall()
                out |= {(schema, source, *map(str, row)) for row in rows}
    return out


def test_erasing_one_household_member_touches_no_one_else(tmp_path, demo_data):
    landing = tmp_path / "landing"
    shutil.copytree(demo_data / "landing", landing)
    settings = make_settings(tmp_path, landing)
    assert run_pipeline(settings).success
    persons, records = _truth(demo_data)
    baseline = _customers(settings.warehouse_path)
    phones = _phones_held(settings.warehouse_path, records)
    chosen = _pick_households(persons, records, baseline, phones)
    requester_ids = {m["person_id"] for m, _ in chosen.values()}
    family_ids = {o["person_id"] for _, others in chosen.values() for o in others}
    keys_of = lambda ids: set(  # noqa: E731
        records.filter(pl.col("person_id").is_in(list(ids)))["record_key"]
    )
    family_keys = keys_of(family_ids)
    family_rows = _rows_of(settings.warehouse_path, family_keys)
    # Everyone but the requesters and people the demo's own requests erase keeps every record.
    everyone_else = keys_of(set(persons["person_id"]) - requester_ids) & {
        k for k, c in baseline.items() if c is not None
    }

    # Before the erasures, the requesters and one family member asked for their data.
    emails = persons.group_by("email").len()
    unique_email = set(emails.filter(pl.col("len") == 1)["email"])
    family_asker = next(
        o for _, others in chosen.values() for o in others if o["email"] in unique_email
    )
    askers = {f"HH-access-{way}": m for way, (m, _) in chosen.items()}
    askers["HH-access-family"] = family_asker
    (landing / "privacy_requests" / "household_access.csv").write_text(
        "\n".join(
            [REQUEST_COLUMNS]
            + [f"{r},access,{m['email']},,,2026-11-27 12:00:00,GDPR" for r, m in askers.items()]
        )
        + "\n"
    )
    assert run_pipeline(settings).success
    exports = settings.exports_dir / "subject_access"
    assert {f"{r}.json" for r in askers} <= {p.name for p in exports.iterdir()}

    _request_file(landing / "privacy_requests" / "household_requests.csv", chosen)
    second = run_pipeline(settings)
    checks = {e.check_name: e.passed for e in second.get_asset_check_evaluations()}
    assert checks["erasure_complete"] and checks["every_customer_has_records"]
    assert checks["rows_accounted_at_rest"]
    # The requesters' exports are copies too; the family member's stays.
    assert not any((exports / f"HH-access-{way}.json").exists() for way in chosen)
    assert (exports / "HH-access-family.json").exists()
    after = _customers(settings.warehouse_path)
    with duckdb.connect(str(settings.warehouse_path), read_only=True) as conn:
        log = dict(
            conn.execute(
                "select request_id, status from governance.privacy_request_log where request_id like 'HH-%' and request_type = 'erasure'"
            ).fetchall()
        )
        # A person record that still names, mails or rings anyone: the requesters' must be gone.
        person_records = {
            k
            for (k,) in conn.execute(
                "select record_key from identity.person_records where coalesce(first_name_raw, "
                "last_name_raw, full_name_raw, email_raw, phone_raw, street_raw, birth_date_raw, "
                "identifier_raw, first_name_key, last_name_key, email_norm, phone_e164, "
                "street_key, postal_code, birth_date::varchar) is not null"
            ).fetchall()
        }
        erased_by_demo = {
            c
            for (c,) in conn.execute(
                "select customer_id from identity.customer_id_history where event = 'erased'"
            ).fetchall()
        }
    assert log == {f"HH-{way}": "erased" for way in chosen}
    # Gone, or (orders, kept for accounting) left with no identity and no customer.
    requester_keys = keys_of(requester_ids)
    assert not requester_keys & person_records
    assert not {k for k in requester_keys if after.get(k) is not None}
    assert _rows_of(settings.warehouse_path, family_keys) == family_rows
    kept = {k for k in everyone_else if baseline[k] not in erased_by_demo}
    assert {k: after.get(k) for k in family_keys} == {k: baseline[k] for k in family_keys}
    assert kept <= set(after) and all(after[k] is not None for k in kept)

    # Night three: the requesters' CRM records re-exported (as they were, with a new email, with
    # no phone; and one under a new contact id with a new email and a new phone: only her name,
    # address and birth date are hers), and a new CRM record of a family member carrying the
    # shared phone.
    crm = pl.concat(
        [
            pl.read_csv(f, infer_schema=False)
            for f in sorted((landing / "crm_contacts").glob("*.csv"))
        ]
    )
    crm_of = lambda person_id: crm.filter(  # noqa: E731
        pl.col("contact_id").is_in(
            records.filter(
                (pl.col("person_id") == person_id) & (pl.col("source") == "crm_contacts")
            )["record_id"].implode()
        )
    ).head(1)
    relanded = pl.concat(
        [
            crm_of(chosen["phone"][0]["person_id"]),
            crm_of(chosen["email"][0]["person_id"]).with_columns(
                email=pl.lit("brand.new@example.org")
            ),
            crm_of(chosen["both"][0]["person_id"]).with_columns(
                email=pl.lit("another.new@example.org"), phone=pl.lit(None, pl.String)
            ),
            crm_of(chosen["email"][0]["person_id"]).with_columns(
                contact_id=pl.lit("C8888888"),
                email=pl.lit("fresh.start@example.org"),
                phone=pl.lit("+1 213 555 0177"),
            ),
        ]
    )
    member, others = chosen["email"]
    sharer = next(
        o for o in others if f"+1{member['phone_national']}" in phones.get(o["person_id"], ())
    )
    newcomer = relanded.head(1).with_columns(
        contact_id=pl.lit("C9999999"),
        first_name=pl.lit(sharer["first_name"]),
        last_name=pl.lit(sharer["last_name"]),
        email=pl.lit(sharer["email"]),
        phone=pl.lit(f"+1{member['phone_national']}"),
    )
    pl.concat([relanded, newcomer]).write_csv(
        landing / "crm_contacts" / "crm_contacts_reexport.csv"
    )
    third = run_pipeline(settings)
    assert third.success
    assert all(
        e.passed for e in third.get_asset_check_evaluations() if e.check_name.startswith("rows_")
    )
    with duckdb.connect(str(settings.warehouse_path), read_only=True) as conn:
        erased_rows = conn.execute("select sum(erased_rows) from raw.file_ledger").fetchall()[0][0]
        staged = {
            i for (i,) in conn.execute("select contact_id from staging.crm_contacts").fetchall()
        }
        newcomer_customer = conn.execute(
            "select customer_id from mart.customer_xref where record_key = 'crm_contacts:C9999999'"
        ).fetchall()
    assert erased_rows >= len(requester_keys)
    assert "C8888888" in set(relanded["contact_id"])
    assert not set(relanded["contact_id"]) & staged
    assert "C9999999" in staged and newcomer_customer[0][0] is not None


def test_a_killed_runs_work_files_are_removed_by_the_next_run(tmp_path, demo_data):
    """A run killed mid-resolve leaves its plan (identities included) in the work folder; the
    next run removes it, and a run that succeeds leaves nothing behind."""
    settings = make_settings(tmp_path, demo_data / "landing")
    stale = settings.work_path / "killed-run"
    stale.mkdir(parents=True)
    (stale / "profiles.frame.arrow").write_bytes(b"identities of a killed run")
    assert run_pipeline(settings).success
    assert not any(settings.work_path.iterdir())


def _write_crm(landing: Path, contacts: dict[str, dict[str, str]]) -> None:
    """A CRM export of the given contacts (``contact_id -> column values``, which may give
    another ``contact_id``), US, dated."""
    from cdm_pipeline.locations import PACKAGE_DATA
    from cdm_pipeline.registry import load_registry

    crm = load_registry(PACKAGE_DATA / "sources.yaml")["crm_contacts"]
    lines = [",".join(crm.column_names)]
    for contact_id, own in contacts.items():
        row = {c: "" for c in crm.column_names}
        row.update(
            contact_id=contact_id,
            country="US",
            created_at="2026-01-01T00:00:00",
            updated_at="2026-01-02T00:00:00",
        )
        row.update(own)
        lines.append(",".join(row[c] for c in crm.column_names))
    (landing / "crm_contacts").mkdir(parents=True, exist_ok=True)
    (landing / "crm_contacts" / "crm.csv").write_text("\n".join(lines) + "\n")


def test_a_request_naming_someone_else_than_the_phone_holder_waits_for_a_steward(tmp_path):
    """Teresa asks by the household phone, which in the warehouse only her husband's record
    carries: her name does not match his, so nothing is erased and a steward decides. A request
    by the same phone naming him (by his nickname) erases him."""
    landing = tmp_path / "landing"
    _write_crm(
        landing,
        {
            "C1": {
                "first_name": "Anthony",
                "last_name": "Hunt",
                "email": "anthony.hunt@example.org",
                "phone": "213-856-2580",
            },
            "C2": {"first_name": "Teresa", "last_name": "Hunt", "email": "teresa.hunt@example.org"},
        },
    )
    (landing / "privacy_requests").mkdir()
    (landing / "privacy_requests" / "requests.csv").write_text(
        f"{REQUEST_COLUMNS}\nR1,erasure,,213-856-2580,Teresa Hunt,2026-11-28 12:00:00,GDPR\n"
    )
    settings = make_settings(tmp_path, landing)
    assert run_pipeline(settings).success

    def state():
        with duckdb.connect(str(settings.warehouse_path), read_only=True) as conn:
            log = conn.execute(
                "select request_id, status, reason from governance.privacy_request_log"
            ).fetchall()
            staged = {
                i for (i,) in conn.execute("select contact_id from staging.crm_contacts").fetchall()
            }
        return {r: (s, why) for r, s, why in log}, staged

    log, staged = state()
    assert log["R1"] == ("needs_steward", "identifier held by a customer with another name")
    assert staged == {"C1", "C2"}
    (landing / "privacy_requests" / "more.csv").write_text(
        f"{REQUEST_COLUMNS}\nR2,erasure,,213-856-2580,Tony Hunt,2026-11-29 12:00:00,GDPR\n"
    )
    assert run_pipeline(settings).success
    log, staged = state()
    assert log["R2"][0] == "erased" and staged == {"C2"}


def test_the_name_check_cannot_fail_on_a_customer_without_names(tmp_path):
    """A customer known only from a nameless record (an email-only survey answer) has no name to
    contradict the request's: the request is served."""
    landing = tmp_path / "landing"
    (landing / "surveys").mkdir(parents=True)
    (landing / "surveys" / "s.jsonl").write_text(
        '{"response_id": "S1", "email": "solo@example.org", '
        '"submitted_at": "2026-11-01T10:00:00", "nps": 9, "comment": null}\n'
    )
    (landing / "privacy_requests").mkdir()
    (landing / "privacy_requests" / "r.csv").write_text(
        f"{REQUEST_COLUMNS}\nR1,erasure,solo@example.org,,Susan White,2026-11-28 12:00:00,GDPR\n"
    )
    settings = make_settings(tmp_path, landing)
    assert run_pipeline(settings).success
    with duckdb.connect(str(settings.warehouse_path), read_only=True) as conn:
        assert conn.execute(
            "select status from governance.privacy_request_log where request_id = 'R1'"
        ).fetchall() == [("erased",)]


def test_a_shared_number_in_another_form_is_still_the_households(tmp_path):
    """John typed the family number nationally, Micheal in E.164; a consent event carries it
    with no name, so it links to neither. Erasing John leaves Micheal's record and the consent
    event whole: the number is the household's in every form, not John's alone."""
    landing = tmp_path / "landing"
    _write_crm(
        landing,
        {
            "C1": {"first_name": "John", "last_name": "Pea", "phone": "702.362.5038"},
            "C2": {
                "first_name": "Micheal",
                "last_name": "Pena",
                "phone": "+1 702 362 5038",
                "email": "mpena10@example.org",
            },
        },
    )
    for folder in ("consent_events", "privacy_requests"):
        (landing / folder).mkdir(parents=True)
    (landing / "consent_events" / "c.csv").write_text(
        "event_id,email,phone,purpose,action,event_at,source\n"
        "E1,,(702) 362-5038,sms_marketing,grant,2026-04-22T19:32:34,web\n"
    )
    (landing / "privacy_requests" / "r.csv").write_text(
        f"{REQUEST_COLUMNS}\nR1,erasure,,702.362.5038,John Pea,2026-11-28 12:00:00,GDPR\n"
    )
    settings = make_settings(tmp_path, landing)
    assert run_pipeline(settings).success
    with duckdb.connect(str(settings.warehouse_path), read_only=True) as conn:
        status = conn.execute("select status from governance.privacy_request_log").fetchall()
        crm_left = conn.execute("select contact_id, phone from raw.crm_contacts").fetchall()
        consent = conn.execute("select event_id, phone from raw.consent_events").fetchall()
        kinds = {
            k for (k,) in conn.execute("select kind from governance.suppression_list").fetchall()
        }
    assert status == [("erased",)]
    assert crm_left == [("C2", "+1 702 362 5038")]
    assert consent == [("E1", "(702) 362-5038")]
    assert "household_phone" in kinds and "phone" not in kinds


def _bergs(landing: Path, request_type: str) -> None:
    """Anna Berg (C1) and, in quarantine, her second CRM row (C2: a broken email, her street
    and birth date); her husband Lars (C3, and in quarantine a row whose id is C2 as well); an
    Anna Berg of another town
    in quarantine (C5); their daughter Anna (C6) at the same address; and a quarantined row
    naming Anna at that address with nothing else (C7: either Anna's). Anna's request (R1, by
    her email) is of ``request_type``."""
    home = {"street": "12 Oak Street", "city": "Springfield", "postal_code": "62704"}
    anna = {"first_name": "Anna", "last_name": "Berg", **home}
    _write_crm(
        landing,
        {
            "C1": {**anna, "email": "anna.berg@example.org", "birth_date": "1980-05-01"},
            "C2": {**anna, "email": "anna.berg@@example.org", "birth_date": "1980-05-01"},
            "C3": {"first_name": "Lars", "last_name": "Berg", "email": "lars@example.org", **home},
            "C4": {
                "contact_id": "C2",
                "first_name": "Lars",
                "last_name": "Berg",
                "email": "lars@@example.org",
                **home,
            },
            "C5": {
                "first_name": "Anna",
                "last_name": "Berg",
                "email": "anna@@elsewhere.org",
                "street": "9 Elm Road",
                "city": "Portland",
                "postal_code": "97201",
                "birth_date": "1991-07-07",
            },
            "C6": {**anna, "email": "anna.junior@example.org", "birth_date": "2008-03-03"},
            "C7": {**anna, "email": "berg@@example.org"},
        },
    )
    (landing / "privacy_requests").mkdir()
    (landing / "privacy_requests" / "r.csv").write_text(
        f"{REQUEST_COLUMNS}\nR1,{request_type},anna.berg@example.org,,Anna Berg,"
        "2026-11-28 12:00:00,GDPR\n"
    )


def test_the_requesters_quarantined_rows_go_and_their_namesakes_stay(tmp_path):
    """The resolver never sees a quarantined row, so erasure finds the requester's by their
    name and what else agrees: Anna's second CRM row (a broken email, her street and birth
    date) goes from raw and quarantine. Her husband's broken row (under the same id), an Anna
    Berg of another town, and a row naming Anna at the address her daughter Anna also lives at
    (nothing says which Anna) stay whole; so does the daughter."""
    landing = tmp_path / "landing"
    _bergs(landing, "erasure")
    settings = make_settings(tmp_path, landing)
    result = run_pipeline(settings)
    assert result.success
    with duckdb.connect(str(settings.warehouse_path), read_only=True) as conn:
        status = conn.execute("select status from governance.privacy_request_log").fetchall()
        raw = set(conn.execute("select contact_id, first_name from raw.crm_contacts").fetchall())
        quarantined = set(
            conn.execute(
                "select record_id, raw_row ->> '$.first_name' from quarantine.rejected_rows "
                "where source = 'crm_contacts'"
            ).fetchall()
        )
        (erased_rows,) = conn.execute(
            "select sum(erased_rows) from raw.file_ledger where source = 'crm_contacts'"
        ).fetchall()[0]
    assert status == [("erased",)]
    lars, anna = ("C2", "Lars"), ("C2", "Anna")
    assert raw == {lars, ("C3", "Lars"), ("C5", "Anna"), ("C6", "Anna"), ("C7", "Anna")}
    assert quarantined == {lars, ("C5", "Anna"), ("C7", "Anna")}
    assert erased_rows == 2
    checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    assert checks["rows_accounted_at_rest"]
    # Her quarantined row, re-exported with the email fixed, does not bring her back.
    header, *rows = (landing / "crm_contacts" / "crm.csv").read_text().splitlines()
    fixed = next(r for r in rows if "anna.berg@@" in r).replace("anna.berg@@", "anna.b@")
    (landing / "crm_contacts" / "crm_fixed.csv").write_text(f"{header}\n{fixed}\n")
    assert run_pipeline(settings).success
    with duckdb.connect(str(settings.warehouse_path), read_only=True) as conn:
        staged = set(
            conn.execute("select contact_id, first_name from staging.crm_contacts").fetchall()
        )
        raw_now = set(
            conn.execute("select contact_id, first_name from raw.crm_contacts").fetchall()
        )
    assert anna not in staged and {("C3", "Lars"), ("C6", "Anna")} <= staged
    assert raw_now == raw


def test_an_access_request_shows_the_requesters_quarantined_rows(tmp_path):
    """The rows erasure would take are the rows an access request shows: Anna's quarantined
    CRM row with why it was rejected; not her husband's, a namesake's or one either Anna's."""
    landing = tmp_path / "landing"
    _bergs(landing, "access")
    settings = make_settings(tmp_path, landing)
    assert run_pipeline(settings).success
    document = json.loads((settings.exports_dir / "subject_access" / "R1.json").read_text())
    assert [r["record_id"] for r in document["source_records"]] == ["C1"]
    [row] = document["quarantined_rows"]
    assert row["record_id"] == "C2" and row["data"]["first_name"] == "Anna"
    assert row["data"]["email"] == "anna.berg@@example.org"
    assert "email" in row["failed_checks"]


def test_an_access_export_holds_back_a_record_linked_only_by_the_family_inbox(tmp_path):
    """Anna and Erik Berg share one inbox; a survey answer carries only that inbox, so it may be
    either's. The resolver leaves it unlinked; planted into Anna's customer (as a resolver that
    over-links would), it is not in her access document but counted as held for a steward. A
    consent event carrying only her own number, and one carrying a number that she and "Ann"
    (the same name) hold, are hers and exported."""
    from cdm_pipeline.governance.access import shared_value_records, subject_document
    from cdm_pipeline.locations import PACKAGE_DATA
    from cdm_pipeline.registry import load_registry

    landing = tmp_path / "landing"
    family = "family.berg@example.org"
    anna = {"first_name": "Anna", "last_name": "Berg", "birth_date": "1980-05-01"}
    _write_crm(
        landing,
        {
            "C1": {**anna, "email": family, "phone": "213-555-0101"},
            "C2": {
                "first_name": "Erik",
                "last_name": "Berg",
                "email": family,
                "phone": "213-555-0199",
                "birth_date": "1978-02-11",
            },
            "C3": {
                **anna,
                "first_name": "Ann",
                "email": "ann@example.org",
                "phone": "213-555-0155",
            },
        },
    )
    (landing / "surveys").mkdir()
    (landing / "surveys" / "s.jsonl").write_text(
        f'{{"response_id": "S1", "email": "{family}", "submitted_at": "2026-11-01T10:00:00", '
        '"nps": 9, "comment": null}\n'
    )
    (landing / "consent_events").mkdir()
    (landing / "consent_events" / "c.csv").write_text(
        "event_id,email,phone,purpose,action,event_at,source\n"
        "E1,,213-555-0101,sms_marketing,grant,2026-11-02T10:00:00,web\n"
        "E2,,213-555-0155,sms_marketing,grant,2026-11-02T10:00:00,web\n"
    )
    settings = make_settings(tmp_path, landing)
    assert run_pipeline(settings).success
    customers = _customers(settings.warehouse_path)
    assert customers["surveys:S1"] is None
    annas = customers["crm_contacts:C1"]
    assert annas != customers["crm_contacts:C2"]
    with duckdb.connect(str(settings.warehouse_path)) as conn:
        conn.execute(
            "update mart.customer_xref set customer_id = ? "
            "where record_key in ('surveys:S1', 'consent_events:E2')",
            [annas],
        )
        held = shared_value_records(conn, [annas])
        document = subject_document(conn, annas, load_registry(PACKAGE_DATA / "sources.yaml"))
    assert held.select("source", "source_record_id").rows() == [("surveys", "S1")]
    listed = {f"{r['source']}:{r['record_id']}" for r in document["source_records"]}
    assert "surveys:S1" not in listed
    assert {"consent_events:E1", "consent_events:E2", "crm_contacts:C1"} <= listed
    assert document["records_held_for_steward"] == 1


def test_a_record_on_the_family_inbox_that_names_no_one_waits_for_a_steward(tmp_path):
    """Anna asks by the family inbox she shares with Erik. The survey answer carrying only that
    inbox is in no customer: it may be hers or his. Her access export (first night) and her
    erasure (the next) leave it where it is and list it for a steward; Erik stays whole (and,
    the only one left holding the inbox, is given the answer by the resolver)."""
    landing = tmp_path / "landing"
    family = "family.berg@example.org"
    _write_crm(
        landing,
        {
            "C1": {"first_name": "Anna", "last_name": "Berg", "email": family},
            "C2": {"first_name": "Erik", "last_name": "Berg", "email": family},
        },
    )
    (landing / "surveys").mkdir()
    (landing / "surveys" / "s.jsonl").write_text(
        f'{{"response_id": "S1", "email": "{family}", "submitted_at": "2026-11-01T10:00:00", '
        '"nps": 9, "comment": null}\n'
    )
    requests = landing / "privacy_requests"
    requests.mkdir()
    settings = make_settings(tmp_path, landing)

    def night(request_id: str, request_type: str, table: str) -> set:
        (requests / f"{request_id}.csv").write_text(
            f"{REQUEST_COLUMNS}\n"
            f"{request_id},{request_type},{family},,Anna Berg,2026-11-28 12:00:00,GDPR\n"
        )
        assert run_pipeline(settings).success
        with duckdb.connect(str(settings.warehouse_path), read_only=True) as conn:
            ((status,),) = conn.execute(
                "select status from governance.privacy_request_log where request_id = ?",
                [request_id],
            ).fetchall()
            ((source, record, reason),) = conn.execute(
                f"select source, source_record_id, reason from governance.{table} "
                "where request_id = ?",
                [request_id],
            ).fetchall()
            customers = dict(
                conn.execute("select record_key, customer_id from mart.customer_xref").fetchall()
            )
            assert conn.execute("select email from staging.surveys").fetchall() == [(family,)]
        assert status in ("exported", "erased")
        assert (source, record) == ("surveys", "S1") and reason.startswith("in no customer")
        assert "surveys:S1" in customers and customers["crm_contacts:C2"] is not None
        return customers

    assert night("A1", "access", "access_held_records")["surveys:S1"] is None
    document = json.loads((settings.exports_dir / "subject_access" / "A1.json").read_text())
    assert {r["record_id"] for r in document["source_records"]} == {"C1"}
    assert "crm_contacts:C1" not in night("E1", "erasure", "erasure_held_records")


def test_an_erased_person_landed_again_under_new_identifiers_stays_out(tmp_path):
    """Anna Berg is erased. The next export carries her again under a new contact id, a new
    email and a new phone (her name, address and birth date): the model judges her the erased
    person and she stays out, gone from raw and staging too. Her daughter, also Anna Berg at
    the same address but born in 2005, and her husband with the home phone they share, land."""
    landing = tmp_path / "landing"
    home = {"street": "12 Oak Street", "city": "Springfield", "postal_code": "62704"}
    anna = {"first_name": "Anna", "last_name": "Berg", **home, "birth_date": "1980-05-01"}
    _write_crm(
        landing,
        {
            "C1": {**anna, "email": "anna.berg@example.org", "phone": "213-856-2580"},
            "C2": {
                "first_name": "Lars",
                "last_name": "Berg",
                "email": "lars@example.org",
                "phone": "213-856-2580",
                "birth_date": "1978-02-11",
                **home,
            },
        },
    )
    (landing / "privacy_requests").mkdir()
    (landing / "privacy_requests" / "r.csv").write_text(
        f"{REQUEST_COLUMNS}\nR1,erasure,anna.berg@example.org,,Anna Berg,2026-11-28 12:00:00,GDPR\n"
    )
    settings = make_settings(tmp_path, landing)
    assert run_pipeline(settings).success
    first_export = landing / "crm_contacts" / "crm.csv"
    first_export.rename(landing / "crm_contacts" / "crm_first.csv")
    _write_crm(
        landing,
        {
            "C7": {**anna, "email": "anna.new@example.org", "phone": "213-555-0177"},
            "C8": {**anna, "birth_date": "2005-09-14", "email": "annie@example.org"},
            "C9": {
                "first_name": "Lars",
                "last_name": "Berg",
                "email": "lars.berg@example.org",
                "phone": "213-856-2580",
                "birth_date": "1978-02-11",
                **home,
            },
        },
    )
    night = run_pipeline(settings)
    assert night.success
    assert all(
        e.passed for e in night.get_asset_check_evaluations() if e.check_name.startswith("rows_")
    )
    with duckdb.connect(str(settings.warehouse_path), read_only=True) as conn:
        raw = {i for (i,) in conn.execute("select contact_id from raw.crm_contacts").fetchall()}
        staged = {
            i for (i,) in conn.execute("select contact_id from staging.crm_contacts").fetchall()
        }
        linked = dict(
            conn.execute("select record_key, customer_id from mart.customer_xref").fetchall()
        )
    assert "C7" not in raw | staged and "crm_contacts:C7" not in linked
    assert {"C8", "C9"} <= staged
    assert linked["crm_contacts:C8"] is not None and linked["crm_contacts:C9"] is not None
