"""Every query in sql/queries runs on a materialised warehouse and returns the rows expected."""

from __future__ import annotations

import duckdb
import polars as pl
import pytest

from cdm_pipeline.resolve.comparisons import default_comparisons, model_comparisons
from cdm_pipeline.standardise.fields import email_match_key
from cdm_pipeline.warehouse import SQL_DIR, sql_text


@pytest.fixture(scope="module")
def conn(materialised):
    settings, result = materialised
    assert result.success
    with duckdb.connect(str(settings.warehouse_path), read_only=True) as connection:
        yield connection


def query(conn, name: str, **params) -> pl.DataFrame:
    return conn.sql(sql_text(f"queries/{name}"), params=params or None).pl()


def test_every_query_file_has_a_header_saying_what_it_answers():
    for path in sorted((SQL_DIR / "queries").glob("*.sql")):
        assert path.read_text().startswith("-- "), path.name


def test_customer_360_lookup_by_email_in_any_case_and_by_phone(conn):
    customer_id, email, phone = conn.execute(
        "select customer_id, email, phone from mart.customers where email is not null and phone is not null "
        "order by customer_id limit 1"
    ).fetchall()[0]
    by_email = query(conn, "customer_360_lookup", email=f"  {email.upper()} ", phone=None)
    assert customer_id in by_email["customer_id"].to_list()
    by_phone = query(conn, "customer_360_lookup", email=None, phone=phone)
    assert customer_id in by_phone["customer_id"].to_list()
    assert (
        query(conn, "customer_360_lookup", email="nobody@nowhere.invalid", phone=None).height == 0
    )


def test_email_audience_honours_consent(conn):
    audience = query(conn, "email_campaign_audience")
    expected = conn.execute(
        "select count(*) from mart.customers where is_email_contactable"
    ).fetchall()[0][0]
    assert audience.height == expected > 0
    revoked = conn.sql(
        "select customer_id from governance.consent_ledger where purpose = 'email_marketing' and state = 'revoked'"
    ).pl()["customer_id"]
    assert not set(audience["customer_id"]) & set(revoked)


def test_churn_risk_lists_detractors_with_open_issues(conn):
    rows = query(conn, "churn_risk_detractors")
    expected = conn.execute(
        """
        with latest as (
            select customer_id, arg_max(nps, submitted_at) as nps from mart.survey_responses
            where customer_id is not null group by 1
        ), open as (
            select distinct customer_id from mart.interactions where is_open and customer_id is not null
        )
        select count(*) from latest join open using (customer_id) where nps <= 6
        """
    ).fetchall()[0][0]
    assert rows.height == expected > 0
    assert (rows["latest_nps"] <= 6).all() and (rows["open_issues"] > 0).all()


def test_most_merged_customers_are_ordered_by_sources(conn):
    rows = query(conn, "most_merged_customers", limit=5)
    assert rows.height == 5
    assert rows["source_count"].to_list() == sorted(rows["source_count"].to_list(), reverse=True)
    assert rows["source_count"][0] >= 4


def test_data_quality_summary_matches_the_quarantine(conn, demo_data, materialised):
    from cdm_pipeline_tests.test_pipeline import erased_person_ids

    rows = query(conn, "data_quality_by_source")
    truth = pl.read_parquet(demo_data / "demo" / "truth" / "records.parquet")
    truth = truth.filter(~pl.col("person_id").is_in(erased_person_ids(materialised[0], demo_data)))
    planted = truth.group_by("source").agg(pl.col("planted_bad").sum().alias("planted"))
    joined = rows.join(planted, on="source")
    assert joined.height == 7
    assert (joined["rows_quarantined"] == joined["planted"]).all()
    assert (joined["rows_staged"] > 0).all()


def _pair(conn, condition: str) -> dict:
    source_l, id_l, source_r, id_r = conn.execute(
        "select x1.source, x1.source_record_id, x2.source, x2.source_record_id from identity.match_pairs p "
        "join mart.customer_xref x1 on x1.profile_id = p.profile_id_l "
        f"join mart.customer_xref x2 on x2.profile_id = p.profile_id_r where {condition} "
        "order by 1, 2, 3, 4 limit 1"
    ).fetchall()[0]
    return {"source_l": source_l, "record_id_l": id_l, "source_r": source_r, "record_id_r": id_r}


def test_why_same_customer_explains_a_linked_pair_field_by_field(conn):
    rows = query(
        conn, "why_same_customer", **_pair(conn, "p.linked and p.first_name_key_level >= 0")
    )
    total = rows.filter(pl.col("comparison") == "total")
    assert "same customer" in total["evidence"][0]
    fields = rows.filter(~pl.col("comparison").is_in(["total", "household"]))
    assert fields.height == len(model_comparisons(default_comparisons()))
    assert rows.filter(pl.col("comparison") == "household").height == 1
    assert total["match_weight"][0] > 0


def test_why_not_same_customer_names_the_cannot_link(conn):
    different = "p.cannot_link and not p.linked and x1.customer_id <> x2.customer_id"
    rows = query(conn, "why_not_same_customer", **_pair(conn, different))
    assert rows["decision"][0] == "cannot-link"
    assert rows["customer_l"][0] != rows["customer_r"][0]
    assert rows["evidence_against"][0]


def test_stale_crm_email_loses_to_the_newer_one_and_lineage_names_the_winner(conn, demo_data):
    persons = pl.read_parquet(demo_data / "demo" / "truth" / "persons.parquet")
    truth = pl.read_parquet(demo_data / "demo" / "truth" / "records.parquet").filter(
        ~pl.col("planted_bad")
    )
    movers = persons.filter(pl.col("old_email").is_not_null()).select(
        "person_id", "email", "old_email"
    )
    records = truth.join(movers, on="person_id").select(
        "person_id",
        "email",
        "old_email",
        record_key=pl.col("source") + ":" + pl.col("record_id"),
        source="source",
    )
    xref = conn.sql("select record_key, customer_id from mart.customer_xref").pl()
    linked = records.join(xref, on="record_key").filter(pl.col("customer_id").is_not_null())
    both = linked.group_by("person_id", "customer_id", "email", "old_email").agg(
        pl.col("source").alias("sources")
    )
    both = both.filter(
        pl.col("sources").list.contains("crm_contacts") & pl.col("sources").list.contains("orders")
    )
    assert both.height > 0
    golden = conn.sql("select customer_id, email from mart.customers").pl()
    lineage = conn.sql(
        "select customer_id, source, source_record_id, rule from mart.customer_attribute_lineage where attribute = 'email'"
    ).pl()
    checked = both.join(golden, on="customer_id", suffix="_golden").join(lineage, on="customer_id")
    # The same address as the person's current one, possibly in a variant they typed (a +tag).
    key = pl.col("email_golden").map_elements(email_match_key, return_dtype=pl.String)
    current = pl.col("email").map_elements(
        lambda e: email_match_key(e.lower()), return_dtype=pl.String
    )
    right = checked.filter(key == current)
    assert right.height == checked.height
    # ...and the lineage names the record that won: the most recent one with a valid email.
    latest = conn.sql(
        "select x.customer_id, arg_max(p.source_record_id, p.event_at) as latest_record "
        "from identity.person_records p join mart.customer_xref x using (record_key) "
        "where p.email is not null and x.customer_id is not null group by 1"
    ).pl()
    named = checked.join(latest, on="customer_id")
    assert (named["source_record_id"] == named["latest_record"]).all()
    assert (right["source"] != "crm_contacts").all()
    assert set(right["rule"]) <= {"most_recent", "only value"}
