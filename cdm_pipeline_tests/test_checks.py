"""Asset checks stop bad data: a renamed column and a half-empty export each fail the right
blocking check, the mart is not rebuilt, and the previous good mart stays queryable."""

from __future__ import annotations

import shutil

import duckdb
import polars as pl
import yaml

from cdm_pipeline.demo.generator import generate
from cdm_pipeline.locations import PACKAGE_DATA
from cdm_pipeline.quality import robust_z, total_variation
from cdm_pipeline_tests.conftest import make_settings, run_pipeline


def failed_checks(result) -> set[tuple[str, str]]:
    return {
        (e.asset_key.to_user_string(), e.check_name)
        for e in result.get_asset_check_evaluations()
        if not e.passed
    }


def customers(settings) -> int:
    with duckdb.connect(str(settings.warehouse_path), read_only=True) as conn:
        return conn.execute("select count(*) from mart.customers").fetchall()[0][0]


def mart_builds(settings):
    """The nights whose customer 360 was committed (a night that changed no customer rebuilds
    no row of mart.customers, but its build is in the audit log)."""
    with duckdb.connect(str(settings.warehouse_path), read_only=True) as conn:
        return conn.execute(
            "select count(*) from governance.audit_log "
            "where action = 'built' and object = 'mart.customers'"
        ).fetchall()[0][0]


def test_a_renamed_column_rejects_its_file_and_the_night_goes_on_without_it(tmp_path):
    """The export with a renamed column is rejected (its check fails, by name); the mart is
    rebuilt from every other file, which hold the same people."""
    out = tmp_path / "demo"
    generate(people=300, seed=3, out=out, days=1)
    settings = make_settings(tmp_path, out / "landing")
    assert run_pipeline(settings).success
    before, built = customers(settings), mart_builds(settings)
    crm = next((out / "landing" / "crm_contacts").glob("*.csv"))
    broken = pl.read_csv(crm, infer_schema=False).rename({"email": "e_mail_address"})
    broken.write_csv(crm.with_name("crm_contacts_broken.csv"))
    result = run_pipeline(settings)
    assert ("raw/crm_contacts", "no_rejected_files") in failed_checks(result)
    assert result.success
    assert customers(settings) == before and mart_builds(settings) == built + 1
    with duckdb.connect(str(settings.warehouse_path), read_only=True) as conn:
        error = conn.execute(
            "select error from raw.file_ledger where status = 'rejected'"
        ).fetchall()[0][0]
    assert "crm_contacts_broken.csv" in error and "email" in error


def test_a_half_empty_export_trips_the_row_count_anomaly(tmp_path):
    out = tmp_path / "demo"
    generate(people=600, seed=4, out=out, days=5)
    config = yaml.safe_load((PACKAGE_DATA / "pipeline.yaml").read_text())
    config["quality"]["anomaly_min_history"] = 3
    config_path = tmp_path / "pipeline.yaml"
    config_path.write_text(yaml.safe_dump(config))
    landing = tmp_path / "landing"
    settings = make_settings(tmp_path, landing)
    settings = type(settings)(**{**vars(settings), "pipeline_config_path": config_path})
    days = sorted((out / "landing" / "orders").glob("*.parquet"))
    for source_dir in (out / "landing").iterdir():
        (landing / source_dir.name).mkdir(parents=True, exist_ok=True)
    for day in range(4):
        for source_dir in (out / "landing").iterdir():
            for path in sorted(source_dir.iterdir())[day : day + 1]:
                shutil.copy(path, landing / source_dir.name / path.name)
        result = run_pipeline(settings)
        assert result.success, day
    before, built = customers(settings), mart_builds(settings)
    half = pl.read_parquet(days[4])
    half.head(half.height // 3).write_parquet(landing / "orders" / days[4].name)
    result = run_pipeline(settings)
    assert ("raw/orders", "row_count_anomaly") in failed_checks(result)
    assert customers(settings) == before and mart_builds(settings) == built


def test_robust_z_and_drift_statistics():
    assert abs(robust_z(100, [100, 102, 98, 101, 99])) < 1
    assert robust_z(40, [100, 102, 98, 101, 99]) < -10
    assert robust_z(50, [100, 100, 100]) == -5.0
    assert total_variation([1, 1], [1, 1]) == 0.0
    assert total_variation([1, 0], [0, 1]) == 1.0
