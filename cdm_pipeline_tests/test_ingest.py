"""Stage 1: files land exactly once; unreadable files are rejected with a reason, not lost."""

from __future__ import annotations

import shutil
from pathlib import Path

import duckdb
import pytest

from cdm_pipeline.ingest.load import load_new_files
from cdm_pipeline.locations import PACKAGE_DATA
from cdm_pipeline.registry import load_registry

SOURCES = load_registry(PACKAGE_DATA / "sources.yaml")
CRM = SOURCES["crm_contacts"]
HEADER = ",".join(CRM.column_names)
GOOD_ROW = "C1,Ann,Lee,ann@example.com,212-555-0101,1 Main St,Springfield,IL,62701,US,1980-01-02,2024-01-01T00:00:00,2024-02-01T00:00:00,owner"


@pytest.fixture
def conn(tmp_path: Path):
    with duckdb.connect(str(tmp_path / "w.duckdb")) as connection:
        yield connection


def land(landing: Path, name: str, content: bytes) -> Path:
    folder = landing / "crm_contacts"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_bytes(content)
    return path


def test_a_file_loads_once_even_when_copied_under_another_name(tmp_path, conn):
    landing = tmp_path / "landing"
    first = land(landing, "a.csv", f"{HEADER}\n{GOOD_ROW}\n".encode())
    assert load_new_files(conn, CRM, landing, "r1").rows_loaded == 1
    again = load_new_files(conn, CRM, landing, "r2")
    assert (again.rows_loaded, again.files_skipped) == (0, 1)
    shutil.copy(first, landing / "crm_contacts" / "copy.csv")
    assert load_new_files(conn, CRM, landing, "r3").rows_loaded == 0
    assert conn.execute("select count(*) from raw.crm_contacts").fetchall() == [(1,)]


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"", "empty file"),
        (b"   \n", "empty file"),
        (f"{HEADER}\n{GOOD_ROW}\n".replace("Ann", "Ann\xe9").encode("latin-1"), "not valid utf-8"),
        (b"contact_id,first_name\nC1,Ann\n", "missing required column"),
        (f'{HEADER}\n"unterminated,quote\n'.encode(), "no line could be read"),
    ],
    ids=["zero-bytes", "blank", "latin-1", "missing-columns", "malformed-csv"],
)
def test_a_broken_file_is_rejected_with_a_reason_that_names_it(tmp_path, conn, content, reason):
    landing = tmp_path / "landing"
    land(landing, "broken.csv", content)
    summary = load_new_files(conn, CRM, landing, "r1")
    assert summary.files_rejected == 1
    assert "broken.csv" in summary.rejections[0] and reason in summary.rejections[0]
    ledger = conn.execute("select status, error from raw.file_ledger").fetchall()
    assert ledger[0][0] == "rejected" and reason in ledger[0][1]


def test_extra_columns_are_kept_and_header_case_is_forgiven(tmp_path, conn):
    landing = tmp_path / "landing"
    header = HEADER.replace("first_name", "First_Name") + ",loyalty_tier"
    land(landing, "extra.csv", f"{header}\n{GOOD_ROW},gold\n".encode())
    load_new_files(conn, CRM, landing, "r1")
    first, extra = conn.execute("select first_name, _extra from raw.crm_contacts").fetchall()[0]
    assert first == "Ann" and '"loyalty_tier":"gold"' in extra


def test_injection_looking_values_are_stored_as_data(tmp_path, conn):
    landing = tmp_path / "landing"
    evil = GOOD_ROW.replace("Ann", "Robert'); drop table raw.crm_contacts;--")
    land(landing, "evil.csv", f"{HEADER}\n{evil}\n".encode())
    load_new_files(conn, CRM, landing, "r1")
    assert (
        conn.execute("select first_name from raw.crm_contacts")
        .fetchall()[0][0]
        .startswith("Robert');")
    )


def test_a_partner_source_with_its_own_columns_runs_by_configuration_alone(tmp_path):
    """The example partner export (cp1252, spaces in column names, its own field names) goes
    through the whole pipeline with only a sources file."""
    from cdm_pipeline.locations import PACKAGE_DATA
    from cdm_pipeline_tests.conftest import make_settings, run_pipeline

    examples = PACKAGE_DATA / "examples"
    settings = make_settings(
        tmp_path, examples / "partner_landing", sources=examples / "partner_sources.yaml"
    )
    result = run_pipeline(settings)
    assert result.success
    with duckdb.connect(str(settings.warehouse_path), read_only=True) as conn:
        quarantined = conn.execute(
            "select record_id, failed_checks from quarantine.rejected_rows order by 1"
        ).fetchall()
        xref = dict(
            conn.execute("select source_record_id, customer_id from mart.customer_xref").fetchall()
        )
        phones = dict(
            conn.execute(
                "select source_record_id, phone_e164 from identity.person_records"
            ).fetchall()
        )
        customers = conn.execute("select count(*) from mart.customers").fetchall()[0][0]
    assert quarantined == [("PL-6", "E-Mail Address: email_shape"), ("PL-7", "DOB: date_parses")]
    assert xref["PL-1"] == xref["PL-2"]  # Zoë Müller / Zoe Mueller, same email and mobile
    assert xref["PL-4"] == xref["PL-5"]  # Robert / Bob Smith
    assert phones["PL-1"] == "+4915123456789" and phones["PL-4"] == "+12125550134"
    assert customers == 3


def _row(number: int, first: str = "Ann", email: str | None = None) -> str:
    return GOOD_ROW.replace("C1,Ann", f"C{number},{first}", 1).replace(
        "ann@example.com", email or f"ann{number}@example.com"
    )


@pytest.mark.parametrize(
    ("rows", "staged", "quarantined", "reason"),
    [
        (
            [_row(n, '"Ann' if n == 4 else "Ann") for n in range(1, 11)],
            9,
            1,
            "line 5: unquoted value (a quote left open)",
        ),
        ([_row(1), _row(2, "An\rna"), _row(3)], 2, 1, "control character in first_name"),
        (
            [_row(1), _row(2, email="x\x00y@example.com"), _row(3, "Ann\x00a")],
            1,
            2,
            "control character in",
        ),
        ([_row(1), _row(2, "A" * (33 * 1024 * 1024)), _row(3)], 2, 1, "line size over maximum"),
        ([_row(1), _row(2, '"Ann\nMarie"'), _row(3)], 3, 0, None),
    ],
    ids=[
        "quote-left-open",
        "bare-carriage-return",
        "nul-bytes",
        "line-over-32-MiB",
        "value-on-two-lines",
    ],
)
def test_no_line_vanishes_or_swallows_another(tmp_path, conn, rows, staged, quarantined, reason):
    """Every line is a row or a quarantined row with its line number and text: a quote left open
    costs its own line only, a carriage return inside a value splits nothing, NUL bytes never
    pass, and a line of any length is accounted for."""
    landing = tmp_path / "landing"
    land(landing, "hostile.csv", (HEADER + "\n" + "\n".join(rows) + "\n").encode())
    summary = load_new_files(conn, CRM, landing, "r1")
    assert summary.rows_loaded == staged + quarantined
    errors = [
        e
        for (e,) in conn.execute(
            "select _parse_error from raw.crm_contacts where _parse_error is not null"
        ).fetchall()
    ]
    assert len(errors) == quarantined
    if reason:
        assert all(reason in e for e in errors), errors
        texts = conn.execute(
            "select length(json_extract_string(_extra, '$._line')) from raw.crm_contacts "
            "where _parse_error like 'line%'"
        ).fetchall()
        assert all(n is None or n <= 65_536 for (n,) in texts)  # kept, cut to the field limit


def test_a_jsonl_key_no_line_carries_is_null_not_a_rejected_file(tmp_path, conn):
    signups = SOURCES["web_signups"]
    folder = tmp_path / "landing" / "web_signups"
    folder.mkdir(parents=True)
    (folder / "w.jsonl").write_text(
        '{"signup_id": "W1", "email": "a@example.com", "signed_up_at": "2025-01-01T00:00:00"}\n'
        '{"signup_id": "W2", "email": "b@example.com", "signed_up_at": "2025-01-02T00:00:00"}\n'
    )
    summary = load_new_files(conn, signups, tmp_path / "landing", "r1")
    assert (summary.files_rejected, summary.rows_loaded) == (0, 2)
    assert conn.execute("select count(*) from raw.web_signups where device is null").fetchall() == [
        (2,)
    ]
