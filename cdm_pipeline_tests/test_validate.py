"""Stage 2: each source's contract, table-driven: good rows pass, each planted defect is caught."""

from __future__ import annotations

import polars as pl
import pytest

from cdm_pipeline.locations import PACKAGE_DATA
from cdm_pipeline.registry import load_registry
from cdm_pipeline.validate.contracts import split, to_typed

SOURCES = load_registry(PACKAGE_DATA / "sources.yaml")

GOOD = {
    "crm_contacts": {
        "contact_id": "C1",
        "first_name": "Ann",
        "email": "ann@example.com",
        "birth_date": "1980-01-02",
        "created_at": "2024-01-01T10:00:00",
        "updated_at": "2024-02-01 10:00:00",
    },
    "web_signups": {
        "signup_id": "W1",
        "email": "a@b.co",
        "marketing_opt_in": "true",
        "signed_up_at": "2024-01-01T10:00:00Z",
    },
    "orders": {
        "order_id": "O1",
        "customer_email": "a@b.co",
        "ordered_at": "2024-01-01 10:00:00.123456",
        "amount": "12.50",
        "currency": "USD",
        "status": "placed",
    },
    "support_interactions": {
        "interaction_id": "I1",
        "channel": "voice",
        "started_at": "2024-01-01T10:00:00",
        "duration_seconds": "60",
        "csat": "5",
        "resolution": "resolved",
    },
    "consent_events": {
        "event_id": "E1",
        "email": "a@b.co",
        "purpose": "analytics",
        "action": "revoke",
        "event_at": "2024-01-01T10:00:00",
    },
    "surveys": {
        "response_id": "S1",
        "email": "a@b.co",
        "nps": "0",
        "submitted_at": "2024-01-01T10:00:00",
    },
    "privacy_requests": {
        "request_id": "R1",
        "request_type": "erasure",
        "received_at": "2024-01-01",
        "jurisdiction": "GDPR",
    },
}

BAD = [
    ("crm_contacts", {"email": "not-an-email@"}, "email: email_shape"),
    ("crm_contacts", {"birth_date": "1987-02-30"}, "birth_date: date_parses"),
    ("crm_contacts", {"birth_date": "2091-04-01"}, "birth_date: date_in_range"),
    ("crm_contacts", {"contact_id": None}, "contact_id: required"),
    ("crm_contacts", {"created_at": "yesterday"}, "created_at: timestamp_parses"),
    ("web_signups", {"email": None}, "email: required"),
    ("web_signups", {"marketing_opt_in": "maybe"}, "marketing_opt_in: is_boolean"),
    ("orders", {"amount": "-42.5"}, "amount: at_least_0"),
    ("orders", {"amount": "twelve"}, "amount: is_decimal"),
    ("orders", {"currency": "XYZ"}, "currency: allowed_value"),
    ("support_interactions", {"csat": "7"}, "csat: at_most_5"),
    ("support_interactions", {"channel": "fax"}, "channel: allowed_value"),
    ("support_interactions", {"duration_seconds": "-5"}, "duration_seconds: at_least_0"),
    ("consent_events", {"purpose": "spam_me"}, "purpose: allowed_value"),
    ("surveys", {"nps": "ten"}, "nps: is_integer"),
    ("surveys", {"nps": "11"}, "nps: at_most_10"),
    ("privacy_requests", {"request_type": "delete_everything"}, "request_type: allowed_value"),
]


def frame(source: str, rows: list[dict]) -> pl.DataFrame:
    spec = SOURCES[source]
    rows = [
        r
        if i == 0 or r.get(spec.record_id) is None
        else r | {spec.record_id: f"{r[spec.record_id]}-{i}"}
        for i, r in enumerate(rows)
    ]
    return pl.DataFrame(
        [
            {c: r.get(c) for c in spec.column_names}
            | {"_extra": None, "_parse_error": None, "_row_number": i + 1, "_file_sha256": "f1"}
            for i, r in enumerate(rows)
        ],
        schema={c: pl.String for c in spec.column_names}
        | {
            "_extra": pl.String,
            "_parse_error": pl.String,
            "_row_number": pl.Int64,
            "_file_sha256": pl.String,
        },
    )


@pytest.mark.parametrize("source", sorted(GOOD), ids=sorted(GOOD))
def test_a_good_row_passes_and_casts_to_its_types(source):
    valid, rejected = split(frame(source, [GOOD[source]]), SOURCES[source])
    assert (valid.height, rejected.height) == (1, 0)
    typed = to_typed(valid, SOURCES[source])
    spec = SOURCES[source]
    assert typed.schema[spec.event_at] in (pl.Datetime("us"), pl.Date)


@pytest.mark.parametrize(("source", "change", "reason"), BAD, ids=[f"{s}-{r}" for s, _, r in BAD])
def test_a_bad_row_is_quarantined_with_its_reason(source, change, reason):
    valid, rejected = split(frame(source, [GOOD[source], GOOD[source] | change]), SOURCES[source])
    assert valid.height == 1
    assert rejected.height == 1
    assert reason in rejected["failed_checks"][0]
    assert rejected["raw_row"][0].startswith("{")


def test_a_duplicate_id_in_one_file_rejects_only_the_repeat():
    rows = [GOOD["orders"], GOOD["orders"] | {"amount": "3"}]
    data = frame("orders", rows).with_columns(order_id=pl.lit("O1"))
    valid, rejected = split(data, SOURCES["orders"])
    assert valid["amount"].to_list() == ["12.50"]
    assert rejected["failed_checks"].to_list() == ["order_id: unique_in_file"]


def test_every_failed_check_of_a_row_is_reported():
    _, rejected = split(
        frame("orders", [GOOD["orders"] | {"amount": "-1", "currency": "XYZ"}]), SOURCES["orders"]
    )
    assert rejected["failed_checks"][0] == "amount: at_least_0; currency: allowed_value"


def test_dates_and_timestamps_read_as_the_first_format_that_reads_them():
    """Each format only sees the values the formats before it could not read: the result is
    what trying every format on every value and keeping the first success gives."""
    from cdm_pipeline.validate import parsing

    values = [
        "2024-02-29",
        "2024/02/29",
        "02/29/2024",
        "29.02.2024",
        "20240229",
        "2023-02-29",  # no such day
        "2024-03-01T10:15:30",
        "2024-03-01 10:15:30.250",
        "2024-03-01T10:15",
        "03/01/2024 10:15:30",
        "2024-03-01T10:15:30+02:00",
        "2024-03-01T10:15:30Z",
        " 2024-03-01 ",
        "",
        None,
        "yesterday",
        "1' or '1'='1",
    ]
    frame = pl.DataFrame({"v": values * 3}, schema={"v": pl.String})

    def every_format(column: str, dtype, formats, aware=()) -> pl.Expr:
        value = parsing.text(column).str.replace(r"Z$", "+00:00")
        tried = [value.str.strptime(dtype, f, strict=False, exact=True) for f in formats]
        tried += [
            value.str.strptime(pl.Datetime("us", "UTC"), f, strict=False, exact=True)
            .dt.replace_time_zone(None)
            .cast(dtype)
            for f in aware
        ]
        return pl.coalesce(*tried).alias(column)

    dates = frame.select(parsing.parse_date("v"))["v"]
    expected_dates = frame.select(every_format("v", pl.Date, parsing.DATE_FORMATS))["v"]
    assert dates.to_list() == expected_dates.to_list()
    assert dates.drop_nulls().len() == 3 * 6  # five formats, and the padded one

    stamps = frame.select(parsing.parse_timestamp("v"))["v"]
    expected = frame.select(
        pl.coalesce(
            every_format(
                "v",
                pl.Datetime("us"),
                parsing.TIMESTAMP_FORMATS,
                parsing.TZ_TIMESTAMP_FORMATS,
            ),
            every_format("v", pl.Date, parsing.DATE_FORMATS).cast(pl.Datetime("us")),
        ).alias("v")
    )["v"]
    assert stamps.to_list() == expected.to_list()
    assert stamps.drop_nulls().len() == 3 * 12  # the dates, the stamps, the padded date
