"""Golden records: run survivorship for every attribute and keep the lineage of each winner."""

from __future__ import annotations

import polars as pl

from cdm_pipeline.golden.survivorship import ATTRIBUTES, choose_lazy

CANDIDATE_COLUMNS = (
    "customer_id",
    "record_key",
    "source",
    "source_record_id",
    "trust_rank",
    "event_at",
)


# What survivorship reads of each linked person record (besides its customer_id).
PERSON_RECORD_COLUMNS = (
    "record_key",
    "source",
    "source_record_id",
    "trust_rank",
    "event_at",
    "first_name",
    "last_name",
    "email",
    "phone_e164",
    "street_key",
    "street_raw",
    "unit",
    "city_raw",
    "state",
    "postal_code",
    "country",
    "birth_date",
)


def candidates_from(linked: pl.DataFrame) -> pl.DataFrame:
    """One candidate per linked source record (``PERSON_RECORD_COLUMNS`` and its
    ``customer_id``), with display values for each golden field."""
    return linked.filter(pl.col("customer_id").is_not_null()).select(
        *CANDIDATE_COLUMNS,
        "first_name",
        "last_name",
        pl.when(pl.col("email").is_not_null()).then(pl.col("email")).alias("email"),
        "phone_e164",
        pl.when(pl.col("street_key").is_not_null()).then(pl.col("street_raw")).alias("street"),
        "unit",
        pl.col("city_raw").alias("city"),
        pl.col("state"),
        "postal_code",
        "country",
        "birth_date",
    )


def golden_records(
    candidates: pl.DataFrame, rules: dict[str, list[str]]
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(one row per customer with every golden attribute, lineage: one row per customer and
    attribute naming the winning source record and the deciding rule)."""
    # Customers are grouped by a small integer code (grouping by the id string costs twice as
    # much); the id comes back by one join at the end.
    coded = candidates.with_columns(
        customer_code=pl.col("customer_id").cast(pl.Categorical).to_physical(),
        # The record key only breaks ties: its rank sorts the same and costs less than text.
        record_key=pl.col("record_key").rank("ordinal"),
    )
    ids = coded.select("customer_code", "customer_id").unique("customer_code")
    coded = coded.drop("customer_id").rename({"customer_code": "customer_id"}).lazy()
    # One collect: the attributes are chosen side by side, the candidates read once.
    chosen_all = pl.collect_all(
        [choose_lazy(coded, attribute, rules[attribute.name]) for attribute in ATTRIBUTES]
    )
    golden = ids.select("customer_id", customer_code="customer_code")
    lineage = []
    for attribute, chosen in zip(ATTRIBUTES, chosen_all, strict=True):
        renamed = {"country": "address_country"} if attribute.name == "address" else {}
        renamed |= {"phone_e164": "phone"}
        golden = golden.join(
            chosen.select(pl.col("customer_id").alias("customer_code"), *attribute.columns).rename(
                renamed, strict=False
            ),
            on="customer_code",
            how="left",
        )
        lineage.append(
            chosen.select(
                pl.col("customer_id").alias("customer_code"),
                pl.lit(attribute.name).alias("attribute"),
                pl.concat_str(
                    [pl.col(c).cast(pl.String) for c in attribute.columns],
                    separator=" | ",
                    ignore_nulls=True,
                ).alias("value"),
                "source",
                "source_record_id",
                "rule",
                pl.lit(" > ".join(rules[attribute.name])).alias("rule_chain"),
                "candidates",
            )
        )
    lineage = (
        pl.concat(lineage)
        .join(ids, on="customer_code")
        .select("customer_id", pl.exclude("customer_id", "customer_code"))
    )
    return golden.drop("customer_code").sort("customer_id"), lineage
