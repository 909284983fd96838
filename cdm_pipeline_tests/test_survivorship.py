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
