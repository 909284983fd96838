"""Survivorship: one value per customer and attribute, chosen by the configured rule chain."""

from __future__ import annotations

from datetime import datetime

import polars as pl

from cdm_pipeline.golden.survivorship import ATTRIBUTES, choose

EMAIL = next(a for a in ATTRIBUTES if a.name == "email")


def candidates(rows: list[tuple]) -> pl.DataFrame:
    return pl.DataFrame(
        rows,
        schema={
            "customer_id": pl.String,
            "record_key": pl.String,
            "source": pl.String,
            "source_record_id": pl.String,
            "trust_rank": pl.Int64,
            "event_at": pl.Datetime,
            "email": pl.String,
        },
        orient="row",
    )


def test_each_customer_gets_the_value_its_rules_choose():
    old, new = datetime(2024, 1, 1), datetime(2025, 1, 1)
    frame = candidates(
        [
            ("A", "crm:1", "crm", "1", 1, old, "a@x.org"),  # alone: the only value
            ("B", "crm:2", "crm", "2", 1, old, "b.old@x.org"),
            ("B", "web:2", "web", "2", 3, new, "b.new@x.org"),  # most recent wins
            ("C", "crm:3", "crm", "3", 1, new, None),  # not valid: never competes
            ("C", "web:3", "web", "3", 3, old, "c@x.org"),
            ("D", "crm:4", "crm", "4", 1, old, "d@x.org"),  # same value twice: one candidate
            ("D", "web:4", "web", "4", 3, old, "d@x.org"),
            ("E", "crm:5", "crm", "5", 1, old, None),  # no valid value: no row
        ]
    )
    chosen = choose(frame, EMAIL, ["most_recent", "trust_rank"]).sort("customer_id")
    assert chosen.select("customer_id", "email", "source", "rule", "candidates").rows() == [
        ("A", "a@x.org", "crm", "only value", 1),
        ("B", "b.new@x.org", "web", "most_recent", 2),
        ("C", "c@x.org", "web", "only value", 1),
        ("D", "d@x.org", "crm", "only value", 1),
    ]


def _crm_file(path, contacts: list[dict[str, str]]) -> None:
    from cdm_pipeline.locations import PACKAGE_DATA
    from cdm_pipeline.registry import load_registry

    columns = load_registry(PACKAGE_DATA / "sources.yaml")["crm_contacts"].column_names
    base = {"country": "US", "created_at": "2026-01-01T00:00:00"}
    rows = [
        ",".join(({c: ""} | base | contact).get(c, "") for c in columns) for contact in contacts
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(",".join(columns) + "\n" + "\n".join(rows) + "\n")


def test_a_night_chooses_again_only_for_the_customers_whose_records_changed(tmp_path):
    """Night 2 lands a new version of Anna's CRM row (another email and account owner, one
    record as before): her golden record and lineage follow it, and Bob's, unchanged, is kept
    as chosen the night before, not chosen again."""
    import duckdb

    from cdm_pipeline_tests.conftest import make_settings, run_pipeline

    def contact(contact_id, first, email, owner, updated):
        return {
            "contact_id": contact_id,
            "first_name": first,
            "last_name": "Berg" if first == "Anna" else "Stone",
            "email": email,
            "phone": "213-555-0101" if first == "Anna" else "312-555-0177",
            "account_owner": owner,
            "updated_at": updated,
        }

    landing = tmp_path / "landing"
    _crm_file(
        landing / "crm_contacts" / "day1.csv",
        [
            contact("C1", "Anna", "anna@example.org", "kim", "2026-01-02T00:00:00"),
            contact("C2", "Bob", "bob@example.org", "lee", "2026-01-02T00:00:00"),
        ],
    )
    settings = make_settings(tmp_path, landing)
    assert run_pipeline(settings).success
    _crm_file(
        landing / "crm_contacts" / "day2.csv",
        [contact("C1", "Anna", "anna.berg@example.net", "ray", "2026-02-01T00:00:00")],
    )
    night = run_pipeline(settings)
    assert night.success
    (built,) = [
        e.materialization.metadata
        for e in night.get_asset_materialization_events()
        if e.asset_key.path == ["mart", "customers"]
    ]
    assert built["customers"].value == 2
    assert built["customers_chosen_for_tonight"].value == 1
    with duckdb.connect(str(settings.warehouse_path), read_only=True) as conn:
        customers = conn.execute(
            "select first_name, email, account_owner from mart.customers order by 1"
        ).fetchall()
        lineage = conn.execute(
            "select value from mart.customer_attribute_lineage where attribute = 'email' order by 1"
        ).fetchall()
    assert customers == [
        ("Anna", "anna.berg@example.net", "ray"),
        ("Bob", "bob@example.org", "lee"),
    ]
    assert lineage == [("anna.berg@example.net",), ("bob@example.org",)]
