"""Serving while the night runs: a reader holding the warehouse all night breaks nothing and sees
the last night until it reconnects; of two runs started at the same instant exactly one writes;
a killed night, or one a blocking check stops, leaves the published warehouse as it was."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import duckdb
import pytest

from cdm_pipeline.defs.keys import PUBLISHED
from cdm_pipeline.publish import copy_into_fresh_file, draft_path
from cdm_pipeline_tests.conftest import (
    assert_stopped_by,
    digest,
    make_settings,
    run_pipeline,
    served_files,
)
from cdm_pipeline_tests.test_operations import _cdm, _wait_for_a_started_run, home, long_night

__all__ = ["home", "long_night"]  # fixtures shared with test_operations


def _count(path: Path, table: str) -> int:
    with duckdb.connect(str(path), read_only=True) as conn:
        return conn.execute(f"select count(*) from {table}").fetchall()[0][0]


def _cli(home: Path, *args: str) -> subprocess.CompletedProcess:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("CDM_")},
        "DAGSTER_HOME": str(home),
        "CDM_WAREHOUSE": str(home.parent / "w.duckdb"),
    }
    return subprocess.run(
        [sys.executable, "-m", "cdm_pipeline.cli", *args],
        env=env,
        cwd=home.parent,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.slow
def test_a_reader_holding_the_warehouse_all_night_breaks_nothing(home, demo_data, long_night):
    """The README's own reader, held open for a whole night, and a subject-access export in the
    middle of it: the night succeeds; the reader sees the previous night until it reconnects."""
    warehouse = home.parent / "w.duckdb"
    first = _cdm(home, demo_data / "landing")
    out, err = first.communicate(timeout=600)
    assert "succeeded" in out, out + err
    before = _count(warehouse, "mart.customer_xref")
    reader = duckdb.connect(str(warehouse), read_only=True)
    try:
        night = _cdm(home, long_night)
        _wait_for_a_started_run(home, night)
        email = reader.execute(
            "select email from mart.customers where email is not null limit 1"
        ).fetchall()[0][0]
        export = _cli(
            home, "export-subject", "--email", email, "--out", str(home.parent / "s.json")
        )
        assert export.returncode == 0, export.stderr
        out, err = night.communicate(timeout=600)
        assert "succeeded" in out, out + err
        still = reader.execute("select count(*) from mart.customer_xref").fetchall()[0][0]
        assert still == before  # the old night, whole, until it reconnects
    finally:
        reader.close()
    assert _count(warehouse, "mart.customer_xref") > before  # reconnected: tonight's
    assert not draft_path(warehouse).exists()


@pytest.mark.slow
def test_of_two_runs_started_at_once_exactly_one_writes(home, demo_data):
    runs = [_cdm(home, demo_data / "landing") for _ in range(2)]
    results = [run.communicate(timeout=600) for run in runs]
    codes = sorted(run.returncode for run in runs)
    assert codes[1] == 2 and codes[0] in (0, 1), results
    refused = next(err for (_, err), run in zip(results, runs, strict=True) if run.returncode == 2)
    assert "is being written by run" in refused and "one run at a time" in refused
    written = next(out for (out, _), run in zip(results, runs, strict=True) if run.returncode != 2)
    assert "succeeded" in written


@pytest.mark.slow
def test_a_killed_night_leaves_the_published_warehouse_as_it_was(home, demo_data, long_night):
    warehouse = home.parent / "w.duckdb"
    good = _cdm(home, demo_data / "landing")
    out, err = good.communicate(timeout=600)
    assert "succeeded" in out, out + err
    published = digest(warehouse)
    with duckdb.connect(str(warehouse), read_only=True) as conn:
        xref = conn.sql("select record_key, customer_id from mart.customer_xref order by 1").pl()
    killed = _cdm(home, long_night, start_new_session=True)
    _wait_for_a_started_run(home, killed)
    os.killpg(killed.pid, signal.SIGKILL)
    killed.wait()
    assert digest(warehouse) == published  # not a byte of the killed night
    again = _cdm(home, demo_data / "landing")
    out, err = again.communicate(timeout=600)
    assert "succeeded" in out, out + err
    with duckdb.connect(str(warehouse), read_only=True) as conn:
        after = conn.sql("select record_key, customer_id from mart.customer_xref order by 1").pl()
    assert after.equals(xref)  # as an uninterrupted rerun: no customer moved


@pytest.mark.parametrize(
    ("check", "setting"),
    [
        ("cluster_size_limit", "quality:\n  max_cluster_size: 1\n"),  # every merged customer
        ("quarantine_rate", "quality:\n  max_quarantine_rate: 0.0\n  min_rows_for_rates: 1\n"),
    ],
)
def test_a_blocking_check_that_fails_publishes_nothing(tmp_path, demo_data, check, setting):
    """A night stopped by a blocking check leaves the published warehouse and the analyst file
    as the last good night left them (the contract table customer_xref included)."""
    landing = tmp_path / "landing"
    shutil.copytree(demo_data / "landing", landing)
    settings = make_settings(tmp_path, landing)
    assert run_pipeline(settings).success
    before = served_files(settings)
    crm = landing / "crm_contacts"
    header = next(crm.glob("*.csv")).read_text().splitlines()[0]
    (crm / "crm_contacts_late.csv").write_text(header + "\n" + ",Ann,Lee" + "," * 11 + "\n")
    config = tmp_path / "pipeline.yaml"
    config.write_text(setting)
    result = run_pipeline(replace(settings, pipeline_config_path=config), resolve_mode="FULL")
    assert_stopped_by(check, result, settings, before)


def test_every_blocking_check_stands_between_its_asset_and_the_publish(tmp_path):
    """A blocking check that fails stops what is downstream of its asset; every asset with one
    is upstream of ``serve/published_warehouse``, so no blocking check can fail and the night
    still be published (the two tests above show it for two of them, end to end)."""
    from cdm_pipeline.defs.build import build_definitions

    defs = build_definitions(make_settings(tmp_path, tmp_path / "landing"))
    graph = defs.resolve_asset_graph()
    upstream = graph.get(PUBLISHED).parent_keys
    blocking = {
        key.asset_key
        for key in graph.asset_check_keys
        if graph.get_check_spec(key).blocking and key.asset_key != PUBLISHED
    }
    assert len(blocking) >= 15
    assert blocking <= upstream


def test_the_fresh_copy_holds_every_row_in_order_and_no_deleted_byte(tmp_path):
    """The publish's rewrite copies tables two at a time: every schema, table, key and view
    arrives, rows keep their order (``rowid``), and a deleted row, still readable in the source
    file, is not in the copy, which has no free block either."""
    source, fresh = tmp_path / "night.duckdb", tmp_path / "fresh.duckdb"
    with duckdb.connect(str(source), config={"force_compression": "uncompressed"}) as conn:
        conn.execute("create schema mart; create schema identity")
        conn.execute("create table mart.orders (order_id varchar primary key, amount double)")
        conn.execute(
            "insert into mart.orders select 'o' || i, i / 10 from range(200000) t(i) order by i desc"
        )
        conn.execute(
            "create table identity.person_records as select 'p' || i as record_key, "
            "'person' || i || '@example.org' as email from range(300000) t(i)"
        )
        conn.execute("create view mart.big_orders as select * from mart.orders where amount > 100")
        conn.execute("create table identity.replaced as select * from identity.person_records")
        conn.execute("checkpoint")
        conn.execute("drop table identity.replaced")  # its blocks are freed, not emptied
        conn.execute("delete from identity.person_records where record_key = 'p123457'")
        conn.execute("checkpoint")
    assert b"person123457@example.org" in source.read_bytes()  # the reason for the copy

    copy_into_fresh_file(source, fresh, workers=2, memory_limit="1GB")

    assert not Path(f"{fresh}.tmp").exists()  # where it may spill, emptied

    with (
        duckdb.connect(str(source), read_only=True) as before,
        duckdb.connect(str(fresh), read_only=True) as after,
    ):
        for query in (
            "select order_id from mart.orders order by rowid",
            "select record_key, email from identity.person_records order by rowid",
            "select count(*) from mart.big_orders",
        ):
            assert after.execute(query).fetchall() == before.execute(query).fetchall()
        assert before.execute("select free_blocks from pragma_database_size()").fetchone()[0] > 0
        assert after.execute("select free_blocks from pragma_database_size()").fetchone()[0] == 0
        keys = "select table_name, constraint_text from duckdb_constraints() order by all"
        assert after.execute(keys).fetchall() == before.execute(keys).fetchall()
