"""Golden records: run survivorship for every attribute and keep the lineage of each winner."""

from __future__ import annotations

import polars as pl

from cdm_pipeline.golden.survivorship import ATTRIBUTES, choose

CANDIDATE_COLUMNS = (
    "customer_id",
    "record_key",
    "source",
    "source_record_id",
    "trust_rank",
    "event_at",
)


def candidates_from(person_records: pl.DataFrame, xref: pl.DataFrame) -> pl.DataFrame:
    """One candidate per linked source record, with display values for each golden field."""
    return person_records.join(
        xref.filter(pl.col("customer_id").is_not_null()).select("record_key", "customer_id"),
        on="record_key",
    ).select(
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
    customers = candidates.select("customer_id").unique().sort("customer_id")
    golden = customers
    lineage = []
    for attribute in ATTRIBUTES:
        chain = rules[attribute.name]
        chosen = choose(candidates, attribute, chain)
        renamed = {"country": "address_country"} if attribute.name == "address" else {}
        renamed |= {"phone_e164": "phone"}
        golden = golden.join(
            chosen.select("customer_id", *attribute.columns).rename(renamed, strict=False),
            on="customer_id",
            how="left",
        )
        lineage.append(
            chosen.select(
                "customer_id",
                pl.lit(attribute.name).alias("attribute"),
                pl.concat_str(
                    [pl.col(c).cast(pl.String) for c in attribute.columns],
                    separator=" | ",
                    ignore_nulls=True,
                ).alias("value"),
                "source",
                "source_record_id",
                "rule",
                pl.lit(" > ".join(chain)).alias("rule_chain"),
                "candidates",
            )
        )
    return golden, pl.concat(lineage)
