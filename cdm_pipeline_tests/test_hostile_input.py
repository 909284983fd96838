"""Hostile files and broken sources files: each gets a clear answer, nothing outside the landing
folder is read, one bad row costs one row, and one bad file never stops the night.

The corpus is a table: the file, what lands, what is quarantined with which reason. Every case
is loaded and validated for real (DuckDB file, pandera contract), and every file balances:
landed rows = staged + quarantined.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pytest

from cdm_pipeline.cli import main
from cdm_pipeline.ingest.load import load_new_files
from cdm_pipeline.registry import RegistryError, load_registry
from cdm_pipeline.validate.stage import validate_new_files
from cdm_pipeline_tests.conftest import make_settings, run_pipeline

SOURCES_YAML = """
sources:
  partner:
    path: partner/*.csv
    format: csv
    record_id: id
    event_at: updated
    identity: {first_name: first, last_name: last, email: email}
    columns:
      id: {type: id}
      first: {}
      last: {}
      email: {}
      updated: {type: timestamp}
  events:
    path: events/*.jsonl
    format: jsonl
    record_id: id
    identity: {first_name: first, email: email}
    columns:
      id: {type: id}
      first: {}
      email: {}
"""
HEADER = "id,first,last,email,updated"


def row(i: int, first: str = "Ann") -> str:
    return f"P{i},{first},Lee{i},ann{i}@example.org,2026-01-0{1 + i % 9}T10:00:00"


@dataclass
class Case:
    name: str
    source: str
    file: str
    content: bytes
    staged: int
    quarantined: dict[str, int]  # reason fragment -> rows


CSV_GOOD = "\n".join([HEADER, row(1), row(2), row(3)]) + "\n"
CORPUS = [
    Case("clean csv", "partner", "ok.csv", CSV_GOOD.encode(), 3, {}),
    Case(
        "one unquoted extra comma",
        "partner",
        "ragged.csv",
        "\n".join([HEADER, row(1), row(2) + ",extra", row(3)]).encode() + b"\n",
        2,
        {"line 3: too many columns": 1},
    ),
    Case(
        "a row with too few fields",
        "partner",
        "short.csv",
        "\n".join([HEADER, row(1), "P2,Bob", row(3)]).encode() + b"\n",
        2,
        {"line 3: missing columns": 1},
    ),
    Case(
        "a quote left open",
        "partner",
        "quote.csv",
        "\n".join([HEADER, row(1), 'P2,"Bob,Lee2', row(3)]).encode() + b"\n",
        2,  # the open quote costs its own line; reading resumes at the next
        {"line 3: unquoted value (a quote left open)": 1},
    ),
    Case(
        "file cut mid-row",
        "partner",
        "cut.csv",
        "\n".join([HEADER, row(1), row(2), "P3,Chen,Lee3,chen.ow"]).encode(),
        2,
        {"line 4: missing columns": 1},
    ),
    Case(
        "file cut mid-value of the last field",
        "partner",
        "cut_value.csv",
        "\n".join([HEADER, row(1), row(2), row(3)[:-4]]).encode(),
        2,
        {"line 4: no line end, the file may be cut": 1},
    ),
    Case(
        "a 1,000,000-character first name",
        "partner",
        "huge.csv",
        "\n".join([HEADER, row(1), row(2, first="x" * 1_000_000), row(3)]).encode() + b"\n",
        2,
        {"longer than 65536 characters: first": 1},
    ),
    Case(
        "injection-looking values and a quoted newline are data",
        "partner",
        "odd.csv",
        "\n".join(
            [
                HEADER,
                'P1,"Robert\'); drop table raw.partner;--",Lee,b@example.org,',
                'P2,"A\nB",L,,',
            ]
        ).encode()
        + b"\n",
        2,
        {},
    ),
    Case(
        "jsonl: a broken line, a non-object, a line nested 100,000 deep, a key twice",
        "events",
        "mixed.jsonl",
        "\n".join(
            [
                json.dumps({"id": "E1", "first": "Ann", "email": "a@example.org"}),
                '{"id": "E2", "first": ',
                "[1, 2]",
                "[" * 100_000 + "]" * 100_000,
                '{"id": "E5", "first": "Bob", "first": "Rob"}',
                json.dumps({"id": "E6", "first": "Cy", "email": "c@example.org"}),
            ]
        ).encode()
        + b"\n",
        2,
        {
            "line 2: not valid JSON": 1,
            "line 3: not a JSON object": 1,
            "line 4: nested too deep": 1,
            "line 5: key 'first' given twice": 1,
        },
    ),
]


@pytest.fixture
def cli_env():
    """``cdm`` passes locations to the Definitions through the environment: restore it."""
    saved = dict(os.environ)
    yield lambda: [os.environ.pop(k) for k in list(os.environ) if k.startswith("CDM_")]
    os.environ.clear()
    os.environ.update(saved)


@pytest.fixture
def registry(tmp_path: Path):
    path = tmp_path / "sources.yaml"
    path.write_text(SOURCES_YAML)
    return load_registry(path)


@pytest.mark.parametrize("case", CORPUS, ids=[c.name for c in CORPUS])
def test_a_hostile_file_costs_only_its_bad_rows(tmp_path, registry, case: Case):
    landing = tmp_path / "landing"
    folder = landing / case.source
    folder.mkdir(parents=True)
    (folder / case.file).write_bytes(case.content)
    spec = registry[case.source]
    with duckdb.connect(str(tmp_path / "w.duckdb")) as conn:
        loaded = load_new_files(conn, spec, landing, "r1")
        assert loaded.files_rejected == 0, loaded.rejections
        validated = validate_new_files(conn, spec, "r1")
        assert validated.rows_staged == case.staged
        reasons = conn.execute(
            "select failed_checks, raw_row, row_number from quarantine.rejected_rows"
        ).fetchall()
        for fragment, count in case.quarantined.items():
            assert sum(fragment in r for r, _, _ in reasons) == count, (fragment, reasons)
        assert len(reasons) == sum(case.quarantined.values())
        for _, raw_row, _ in reasons:  # the row's text is kept, cut to the limit
            assert raw_row and len(raw_row) < 65_536 * 2
        ((landed,),) = conn.execute(
            "select sum(row_count) from raw.file_ledger where status = 'loaded'"
        ).fetchall()
        assert landed == validated.rows_staged + validated.rows_quarantined
        if case.file == "odd.csv":
            assert conn.execute("select count(*) from raw.partner").fetchall() == [(2,)]


def test_nothing_outside_the_landing_folder_is_read(tmp_path, registry):
    """A link to a file outside (a CSV, /etc/passwd named .jsonl) and a linked folder pointing
    outside are refused without being opened; the files inside still land."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.csv").write_text(CSV_GOOD)
    landing = tmp_path / "landing"
    (landing / "partner").mkdir(parents=True)
    (landing / "events").mkdir(parents=True)
    (landing / "partner" / "ok.csv").write_text(CSV_GOOD.replace("P", "Q"))
    os.symlink(outside / "secret.csv", landing / "partner" / "link.csv")
    os.symlink("/etc/passwd", landing / "events" / "passwd.jsonl")
    os.symlink(outside, landing / "partner" / "linked_folder")
    registry = {
        **registry,
        "partner": registry["partner"].__class__(
            **{**registry["partner"].__dict__, "path": "partner/**/*.csv"}
        ),
    }
    with duckdb.connect(str(tmp_path / "w.duckdb")) as conn:
        partner = load_new_files(conn, registry["partner"], landing, "r1")
        events = load_new_files(conn, registry["events"], landing, "r1")
        assert (partner.files_loaded, partner.rows_loaded) == (1, 3)
        # The linked folder is refused, or not walked at all (Python's ** does not follow links).
        assert partner.files_rejected in (1, 2) and events.files_rejected == 1
        assert all("outside the landing folder" in r for r in partner.rejections)
        ids = {i for (i,) in conn.execute("select id from raw.partner").fetchall()}
        assert ids == {"Q1", "Q2", "Q3"}
        assert not conn.execute("select count(*) from raw.events").fetchall()[0][0]
        # Seen again on the next run: recorded once, still rejected.
        again = load_new_files(conn, registry["partner"], landing, "r2")
        assert again.files_rejected == 0
        assert again.files_skipped == partner.files_loaded + partner.files_rejected


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("retention_days: 730", None),
        ("retention_dayz: 730", "unknown key 'retention_dayz' (did you mean 'retention_days'?)"),
        ("path: ../../../../etc/*", "must stay inside the landing folder"),
        ("path: /etc/*", "must stay inside the landing folder"),
        ("on_erasure: shred", "on_erasure"),
    ],
)
def test_a_sources_file_mistake_is_one_clear_line(tmp_path, change, message):
    text = SOURCES_YAML.replace("    event_at: updated\n", f"    event_at: updated\n    {change}\n")
    if change.startswith("path:"):
        text = text.replace("    path: partner/*.csv\n", "")
    path = tmp_path / "sources.yaml"
    path.write_text(text)
    if message is None:
        assert load_registry(path)["partner"].retention_days == 730
        return
    with pytest.raises(RegistryError) as raised:
        load_registry(path)
    assert message in str(raised.value) and "partner" in str(raised.value)


def test_duplicate_sources_and_misspelt_column_keys_are_refused(tmp_path):
    path = tmp_path / "sources.yaml"
    path.write_text(SOURCES_YAML + SOURCES_YAML.split("sources:\n", 1)[1].split("  events:")[0])
    with pytest.raises(RegistryError, match="'partner' is given twice"):
        load_registry(path)
    path.write_text(SOURCES_YAML.replace("first: {}", "first: {requird: true}", 1))
    with pytest.raises(RegistryError, match="did you mean 'required'"):
        load_registry(path)


def test_a_source_without_event_at_works_as_documented(tmp_path):
    """event_at is optional (the record id orders versions): the whole night runs."""
    sources = tmp_path / "sources.yaml"
    sources.write_text(SOURCES_YAML.replace("    event_at: updated\n", ""))
    landing = tmp_path / "landing"
    (landing / "partner").mkdir(parents=True)
    (landing / "partner" / "ok.csv").write_text(CSV_GOOD)
    settings = make_settings(tmp_path, landing)
    settings = settings.__class__(**{**settings.__dict__, "sources_path": sources})
    assert run_pipeline(settings).success
    with duckdb.connect(str(settings.warehouse_path), read_only=True) as conn:
        assert conn.execute("select count(*) from mart.customers").fetchall() == [(3,)]


def test_cli_answers_mistakes_in_one_line_with_exit_code_2(tmp_path, capsys, monkeypatch, cli_env):
    monkeypatch.chdir(tmp_path)
    bad = tmp_path / "sources.yaml"
    bad.write_text(SOURCES_YAML.replace("retention", "x").replace("event_at:", "evnt_at:"))
    cases = [
        (["run", "--landing", str(tmp_path / "landng")], "landing folder"),
        (["run", "--landing", str(tmp_path), "--sources", str(bad)], "did you mean 'event_at'"),
        (
            ["export-analyst-db", "--warehouse", str(tmp_path / "w.duckdb"), "--out", "w.duckdb"],
            "does not exist",
        ),
    ]
    duckdb.connect(str(tmp_path / "w2.duckdb")).close()
    cases.append(
        (
            ["export-analyst-db", "--warehouse", "w2.duckdb", "--out", str(tmp_path / "w2.duckdb")],
            "is the warehouse itself",
        )
    )
    for argv, message in cases:
        cli_env()
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err
        assert len(err.strip().splitlines()) == 1


def test_a_rejected_file_stops_only_itself_and_fails_its_check_every_night(
    tmp_path, demo_data, cli_env
):
    """A latin-1 CRM export is rejected; the other CRM files and every other source still reach
    identity and the mart, erasures are processed, and the check fails again the next night
    until a steward acknowledges the file."""
    landing = tmp_path / "landing"
    shutil.copytree(demo_data / "landing", landing)
    crm = sorted((landing / "crm_contacts").glob("*.csv"))[0]
    (landing / "crm_contacts" / "broken_export.csv").write_bytes(
        crm.read_text().replace("a", "\xe4", 3).encode("latin-1")
    )
    settings = make_settings(tmp_path, landing)

    def night():
        result = run_pipeline(settings)
        checks = {
            ("/".join(e.asset_key.path), e.check_name): e.passed
            for e in result.get_asset_check_evaluations()
        }
        return result, checks

    result, checks = night()
    assert checks[("raw/crm_contacts", "no_rejected_files")] is False
    assert checks[("governance/privacy_request_log", "erasure_complete")]
    materialised = {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
    assert {"mart/customers", "governance/privacy_request_log", "staging/crm_contacts"} <= (
        materialised
    )
    with duckdb.connect(str(settings.warehouse_path), read_only=True) as conn:
        sources = {
            s for (s,) in conn.execute("select distinct source from mart.customer_xref").fetchall()
        }
        erased = conn.execute(
            "select count(*) from governance.privacy_request_log where status = 'erased'"
        ).fetchall()[0][0]
    assert "crm_contacts" in sources and len(sources) >= 5 and erased > 0

    _, checks = night()
    assert checks[("raw/crm_contacts", "no_rejected_files")] is False
    os.environ["CDM_WAREHOUSE"] = str(settings.warehouse_path)
    try:
        assert (
            main(
                [
                    "acknowledge-file",
                    "crm_contacts",
                    "broken_export.csv",
                    "--landing",
                    str(landing),
                    "--warehouse",
                    str(settings.warehouse_path),
                ]
            )
            == 0
        )
    finally:
        os.environ.pop("CDM_WAREHOUSE", None)
        os.environ.pop("CDM_LANDING", None)
    _, checks = night()
    assert checks[("raw/crm_contacts", "no_rejected_files")] is True


def test_a_failed_run_says_which_step_failed_and_why(tmp_path, demo_data, capsys, cli_env):
    """Another process holds the warehouse: the night's first warehouse step fails at once and
    the summary names it and its cause (with the holder's pid), not a connection error of its
    own."""
    import subprocess
    import sys

    warehouse = tmp_path / "w.duckdb"
    duckdb.connect(str(warehouse)).close()
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"import duckdb, time; c = duckdb.connect({str(warehouse)!r}); "
            "print('held', flush=True); time.sleep(120)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        os.environ["DAGSTER_HOME"] = str(tmp_path / "dagster_home")
        code = main(["run", "--landing", str(demo_data / "landing"), "--warehouse", str(warehouse)])
    finally:
        holder.kill()
        holder.wait()
    out = capsys.readouterr().out
    assert code == 1
    assert "STEP FAILED: raw__" in out and "open by another process" in out
    assert f"pid {holder.pid}" in out
