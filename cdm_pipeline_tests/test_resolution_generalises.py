"""Resolution on data the resolver was not built for: a public benchmark set through the whole
pipeline, the generator's other profiles, and planted cases the model must learn to tell apart
from the data (a replaced first name where there are no households; a twin where there are)."""

from __future__ import annotations

import duckdb
import polars as pl
import pytest

from cdm_pipeline.demo.datasets import build_febrl, build_generated
from cdm_pipeline.evaluation import accuracy, evaluate_warehouse, read_truth
from cdm_pipeline.pipeline_config import DEFAULTS
from cdm_pipeline.registry import load_registry
from cdm_pipeline.resolve.engine import resolve
from cdm_pipeline.standardise.load import canonical_records
from cdm_pipeline.standardise.records import clean_inputs, standardise_records
from cdm_pipeline_tests.conftest import make_settings, run_pipeline


def test_febrl1_through_the_pipeline_links_by_name_address_birth_date_and_id(tmp_path):
    """Febrl1: no email, no phone; names, a street in two columns, birth date, a social security
    id, all with typos. Declared by a sources file alone, scored by ``cdm evaluate``'s code."""
    dataset = build_febrl(1, tmp_path / "febrl1")
    settings = make_settings(tmp_path, dataset.landing, sources=dataset.sources)
    result = run_pipeline(settings)
    assert result.success
    with duckdb.connect(str(settings.warehouse_path), read_only=True) as conn:
        report = evaluate_warehouse(conn, read_truth(dataset.truth))
        methods = dict(report.link_methods.select("link_method", "records").iter_rows())
        # A typo'd or wholly different birth date is outweighed by the rest (the id among it).
        overcome = conn.execute(
            "select count(*) from identity.match_pairs where linked and birth_date_level = 0"
        ).fetchall()[0][0]
    assert report.found == 1000
    assert report.accuracy.pairwise_precision >= 0.995
    assert report.accuracy.pairwise_f1 >= 0.98
    assert "unlinked: no usable identifier" not in methods  # surname + birth date + postcode
    assert overcome > 0


def _standardised(dataset) -> pl.DataFrame:
    """The dataset's records as the resolver sees them (landing CSVs straight to staging)."""
    sources = load_registry(dataset.sources)
    conn = duckdb.connect()
    conn.execute("create schema staging")
    for source in sources.values():
        files = [str(f) for f in sorted(dataset.landing.glob(source.path))]
        conn.execute(
            f"create table staging.{source.name} as select * from read_csv(?, all_varchar=true)",
            [files],
        )
        conn.execute(
            f"create view staging.{source.name}_current as select * from staging.{source.name}"
        )
    return standardise_records(clean_inputs(canonical_records(conn, sources)))


def _clusters(dataset) -> dict[str, str]:
    clusters = resolve(_standardised(dataset), DEFAULTS["resolve"]).clusters
    return dict(clusters.select("record_key", "cluster_key").iter_rows())


@pytest.mark.parametrize("profile", ["clean", "classic", "households"])
def test_generated_profiles_are_resolved_precisely(tmp_path, profile):
    """The generator's person export: with contacts, without (classic), with households."""
    dataset = build_generated(profile, 4000, tmp_path)
    clusters = resolve(_standardised(dataset), DEFAULTS["resolve"]).clusters
    truth = read_truth(dataset.truth)
    result = accuracy(clusters.select("record_key", cluster="cluster_key"), truth)
    assert result.pairwise_precision >= 0.995
    assert result.pairwise_f1 >= 0.97


def _plant(csv, original: str, copy: str, id_column: str, **changes: str) -> None:
    """Append a copy of row ``original`` as row ``copy`` with ``changes``."""
    frame = pl.read_csv(csv, infer_schema=False)
    row = frame.filter(pl.col(id_column) == original).with_columns(
        pl.lit(copy).alias(id_column), *(pl.lit(v).alias(k) for k, v in changes.items())
    )
    assert row.height == 1
    pl.concat([frame, row]).write_csv(csv)


def test_a_replaced_first_name_with_everything_else_equal_links(tmp_path):
    """Febrl replaces first names outright; without households in the data, a record equal to
    another in surname, address and birth date is the same person whatever its first name."""
    dataset = build_febrl(1, tmp_path, with_ids=False)
    csv = dataset.landing / "febrl1" / "febrl1.csv"
    _plant(csv, "rec-1-org", "rec-1-dup-planted", "rec_id", given_name="bartholomew")
    clusters = _clusters(dataset)
    assert clusters["febrl1:rec-1-dup-planted"] == clusters["febrl1:rec-1-org"]


def test_a_twin_with_one_phone_inbox_and_address_stays_apart(tmp_path):
    """Households in the data: a record equal to another in surname, phone, inbox, address and
    birth date but with another first name is the twin, not the same person."""
    dataset = build_generated("households", 4000, tmp_path)
    csv = dataset.landing / "partner_people" / "partner_people.csv"
    people = pl.read_csv(csv, infer_schema=False).drop_nulls(
        ["given", "family", "email", "mobile", "address", "zip", "dob"]
    )
    original = people.row(0, named=True)
    twin = "zephyrine" if original["given"].lower() != "zephyrine" else "bartholomew"
    _plant(csv, original["ref"], "TWIN0001", "ref", given=twin)
    clusters = _clusters(dataset)
    assert clusters["partner_people:TWIN0001"] != clusters[f"partner_people:{original['ref']}"]
