"""Resolution on data the resolver was not built for: a public benchmark set through the whole
pipeline, the generator's other profiles, and the policies that replaced hard vetoes."""

from __future__ import annotations

import duckdb
import polars as pl
import pytest

from cdm_pipeline.config import DEFAULTS
from cdm_pipeline.demo.datasets import build_febrl, build_generated
from cdm_pipeline.evaluation import accuracy, evaluate_warehouse, read_truth
from cdm_pipeline.registry import load_registry
from cdm_pipeline.resolve.comparisons import default_comparisons
from cdm_pipeline.resolve.engine import resolve
from cdm_pipeline.resolve.scoring import ModelParameters, cannot_link
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


@pytest.mark.parametrize("profile", ["clean", "classic", "households"])
def test_generated_profiles_are_resolved_precisely(tmp_path, profile):
    """The generator's person export: with contacts, without (classic), with households."""
    dataset = build_generated(profile, 4000, tmp_path)
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
    records = standardise_records(clean_inputs(canonical_records(conn, sources)))
    clusters = resolve(records, DEFAULTS["resolve"]).clusters
    truth = read_truth(dataset.truth)
    result = accuracy(clusters.select("record_key", cluster="cluster_key"), truth)
    assert result.pairwise_precision >= 0.995
    assert result.pairwise_f1 >= 0.97


def _conflicted_pair(**levels: int) -> pl.DataFrame:
    """One scored pair whose first names differ, with every weight 0 except those given."""
    comparisons = default_comparisons()
    row = {f"{c.name}_level": -1 for c in comparisons} | {
        f"{c.name}_weight": 0.0 for c in comparisons
    }
    row |= {"first_name_key_level": 0, "first_name_key_weight": -5.0}
    row |= {k: float(v) if k.endswith("_weight") else v for k, v in levels.items()}
    return pl.DataFrame([row])


@pytest.mark.parametrize(
    ("evidence", "different_people"),
    [
        # Twins: surname, phone, inbox, street and birth date agree; only the first name differs.
        (
            {
                "last_name_key_weight": 9,
                "phone_e164_weight": 15,
                "email_norm_weight": 17,
                "street_key_weight": 14,
                "birth_date_level": 2,
                "birth_date_weight": 12,
            },
            True,
        ),
        # The same, but one national id: what a household does not share outweighs the name.
        (
            {
                "last_name_key_weight": 9,
                "phone_e164_weight": 15,
                "street_key_weight": 14,
                "birth_date_level": 2,
                "birth_date_weight": 12,
                "identifier_key_level": 2,
                "identifier_key_weight": 14,
            },
            False,
        ),
    ],
    ids=["twins-sharing-contacts", "same-national-id"],
)
def test_a_first_name_conflict_is_evidence_a_household_cannot_outweigh(evidence, different_people):
    comparisons = default_comparisons()
    params = ModelParameters(m={}, u={}, prior=0.5, em_iterations=1, em_converged=True)
    params.global_prior = 1e-5  # about -16.6 bits
    pair = _conflicted_pair(**evidence).with_columns(match_probability=pl.lit(1.0))
    assert cannot_link(pair, comparisons, params, threshold=0.95)[0] is different_people


@pytest.mark.parametrize(
    ("probability", "email_level", "decision"),
    [
        (0.97, 0, "no match"),  # names and street agree, inboxes differ: mother and daughter?
        (0.995, 0, "probabilistic"),  # ...unless as sure as a rare full name must be
        (0.97, -1, "probabilistic"),  # no contact to contradict: the street corroborates
    ],
)
def test_a_shared_street_against_differing_inboxes_needs_more_certainty(
    probability, email_level, decision
):
    from cdm_pipeline.resolve.engine import _decision

    row = {f"{c.name}_level": -1 for c in default_comparisons()} | {
        "first_name_key_level": 6,
        "last_name_key_level": 3,
        "street_key_level": 2,
        "email_norm_level": email_level,
        "match_probability": probability,
        "must_link": False,
        "cannot_link": False,
    }
    got = pl.DataFrame([row]).select(_decision(0.95, 0.99).alias("d"))["d"][0]
    assert got == decision
