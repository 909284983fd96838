"""Field-level survivorship: for each customer and attribute, choose one value by rules.

Each attribute has an ordered rule chain from configuration, e.g. ``[most_recent, trust_rank]``;
later rules break ties of earlier ones and the record key breaks the rest, so the choice is
deterministic. Only valid values compete (an email that failed validation never wins while a valid
one exists). The winner's source record and the rule that decided are kept as lineage.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

RULES = {
    # rule name -> (sort column, descending)
    "most_recent": ("event_at", True),
    "trust_rank": ("trust_rank", False),
    "most_frequent": ("frequency", True),
    "most_complete": ("completeness", True),
}


@dataclass(frozen=True)
class Attribute:
    """A golden attribute: the columns chosen together from one record, and what makes a
    candidate valid (all of ``required`` present)."""

    name: str
    columns: tuple[str, ...]
    required: tuple[str, ...]


ATTRIBUTES = (
    Attribute("name", ("first_name", "last_name"), ("first_name",)),
    Attribute("email", ("email",), ("email",)),
    Attribute("phone", ("phone_e164",), ("phone_e164",)),
    Attribute(
        "address", ("street", "unit", "city", "state", "postal_code", "country"), ("street",)
    ),
    Attribute("birth_date", ("birth_date",), ("birth_date",)),
    Attribute("country", ("country",), ("country",)),
)


def choose(candidates: pl.DataFrame, attribute: Attribute, rules: list[str]) -> pl.DataFrame:
    """Pick one value per customer (see ``choose_lazy``)."""
    return choose_lazy(candidates.lazy(), attribute, rules).collect()


def choose_lazy(candidates: pl.LazyFrame, attribute: Attribute, rules: list[str]) -> pl.LazyFrame:
    """Pick one value per customer: a query, so that every attribute's choice can run in one
    parallel collect.

    Args:
        candidates: one row per source record with ``customer_id, record_key, source,
            source_record_id, trust_rank, event_at`` and the attribute's columns.
        attribute: which columns to choose, and which must be present.
        rules: the rule chain, names from ``RULES``.

    Returns:
        ``customer_id``, the attribute's columns, ``source, source_record_id, rule`` (the rule
        that separated the winning value from the best other value, or ``only value``) and
        ``candidates`` (how many distinct values competed).
    """
    unknown = [r for r in rules if r not in RULES]
    if unknown:
        raise ValueError(
            f"{attribute.name}: unknown survivorship rule(s) {unknown}; choose from {sorted(RULES)}"
        )
    columns = list(attribute.columns)
    valid = candidates.filter(
        pl.all_horizontal(pl.col(c).is_not_null() for c in attribute.required)
    )
    # Most customers have one valid record: its value is the only one, nothing to rank.
    alone = pl.len().over("customer_id") == 1
    only = valid.filter(alone).select(
        "customer_id",
        *columns,
        "source",
        "source_record_id",
        rule=pl.lit("only value"),
        candidates=pl.lit(1, dtype=pl.UInt32),
    )
    derived = {
        "frequency": pl.len().over("customer_id", *columns),
        "completeness": pl.sum_horizontal(pl.col(c).is_not_null().cast(pl.Int32) for c in columns),
    }
    ranked = valid.filter(~alone).with_columns(
        derived[RULES[r][0]].alias(RULES[r][0]) for r in rules if RULES[r][0] in derived
    )
    # Sorted by customer, then by the rules: a value's first row is its best record, and each
    # customer's values follow in the order they rank (the winner first, then the runner-up).
    order = ["customer_id", *[RULES[r][0] for r in rules], "record_key"]
    descending = [False, *[RULES[r][1] for r in rules], False]
    best_per_value = (
        ranked.sort(order, descending=descending, nulls_last=True)
        .filter(pl.struct("customer_id", *columns).is_first_distinct())
        .with_columns(winner=pl.col("customer_id").is_first_distinct())
    )
    others = best_per_value.filter(~pl.col("winner"))
    runner_up = others.filter(pl.col("customer_id").is_first_distinct()).select(
        "customer_id", *[pl.col(RULES[r][0]).alias(f"_{r}") for r in rules]
    )
    counts = best_per_value.group_by("customer_id").agg(candidates=pl.len())
    decided = (
        best_per_value.filter(pl.col("winner"))
        .join(runner_up, on="customer_id", how="left", maintain_order="left")
        .join(counts, on="customer_id", how="left", maintain_order="left")
    )
    rule = pl.lit("record key (tie)")
    for r in reversed(rules):
        column = RULES[r][0]
        differs = pl.col(column).ne_missing(pl.col(f"_{r}"))
        rule = pl.when(differs).then(pl.lit(r)).otherwise(rule)
    rule = pl.when(pl.col("candidates") == 1).then(pl.lit("only value")).otherwise(rule)
    chosen = decided.select(
        "customer_id", *columns, "source", "source_record_id", rule.alias("rule"), "candidates"
    )
    return pl.concat([only, chosen.cast(only.collect_schema())])
