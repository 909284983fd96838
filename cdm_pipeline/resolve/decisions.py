"""What the resolver decides of each scored pair: the model's probability against the threshold,
the model's judgement that two records are two people, and the steward's overrides, which win."""

from __future__ import annotations

import polars as pl

from cdm_pipeline.resolve.comparisons import (
    DIFFERENT,
    NULL_LEVEL,
    Comparison,
    default_comparisons,
    model_comparisons,
)
from cdm_pipeline.resolve.scoring import ModelParameters, different_people, score_pairs

LINKING_DECISIONS = ["probabilistic"]


def _decision(threshold: float) -> pl.Expr:
    """Why a pair is (or is not) a match edge: a steward said so, or the model's probability
    that the two records are one person (a steward's cannot-link sets ``cannot_link`` too)."""
    return (
        pl.when(pl.col("must_link"))
        .then(pl.lit("steward must-link"))
        .when(pl.col("cannot_link"))
        .then(pl.lit("cannot-link"))
        .when(pl.col("match_probability") >= threshold)
        .then(pl.lit("probabilistic"))
        .otherwise(pl.lit("no match"))
    )


def decision_of(settings: dict) -> pl.Expr:
    return _decision(settings["match_threshold"])


def is_edge() -> pl.Expr:
    return pl.col("decision").is_in(["steward must-link"]) | (
        pl.col("decision").is_in(LINKING_DECISIONS) & ~pl.col("cannot_link")
    )


def judgeable() -> pl.Expr:
    """Pairs whose first names or birth dates are both present: the ones cannot-link can judge."""
    return (pl.col("first_name_key_level") != NULL_LEVEL) | (
        pl.col("birth_date_level") != NULL_LEVEL
    )


# The level columns of the fields the model weighs (street, postcode and town as one: location).
WEIGHED_LEVELS = tuple(f"{c.name}_level" for c in model_comparisons(default_comparisons()))


def disagrees(levels: list[str]) -> pl.Expr:
    """Pairs with a field present on both sides and different (of the level columns
    ``levels``): evidence of two people, which two records that share a name and nothing else
    to compare do not hold."""
    return pl.any_horizontal(pl.lit(False), *(pl.col(c) == DIFFERENT for c in levels))


def leaning() -> pl.Expr:
    """Pairs with no name on one side that the model thinks more likely one person than not,
    without being sure enough to link: a nameless record on a household's phone or inbox."""
    return (
        ~is_edge()
        & (pl.col("match_probability") >= 0.5)
        & (pl.col("first_name_key_level") == NULL_LEVEL)
        & (pl.col("last_name_key_level") == NULL_LEVEL)
    )


def resolvable() -> pl.Expr:
    """A record can be linked when it carries something the model can weigh: an identifier
    (email, phone, a customer-given id), or a name with one more personal or location fact
    (surname + birth date + postcode is evidence). One with less (a consent event whose only
    phone number is invalid) stays unlinked rather than pooling with every other thin record."""
    name = pl.col("first_name_key").is_not_null() | pl.col("last_name_key").is_not_null()
    facts = pl.sum_horizontal(
        pl.col(c).is_not_null().cast(pl.Int8)
        for c in ("first_name_key", "last_name_key", "birth_date", "street_key", "postal_code")
    )
    return (
        pl.col("email_norm").is_not_null()
        | pl.col("phone_e164").is_not_null()
        | pl.col("identifier_key").is_not_null()
        | (name & (facts >= 2))
    )


def score(
    levels: pl.DataFrame,
    profiles: pl.DataFrame,
    comparisons: list[Comparison],
    model: ModelParameters,
    settings: dict,
    steward: pl.DataFrame | None = None,
) -> pl.DataFrame:
    """Weights, probability, the model's cannot-link judgement, steward overrides
    (``steward_pairs``) and the decision per pair."""
    scored = score_pairs(levels, profiles, comparisons, model)
    scored = scored.with_columns(cannot_link=(different_people() & judgeable()).fill_null(False))
    scored = flag_overrides(scored, steward)
    return scored.with_columns(decision=decision_of(settings))


def steward_pairs(membership: pl.DataFrame, overrides: pl.DataFrame | None) -> pl.DataFrame:
    """The steward's must-link / cannot-link decisions as profile pairs: ``rule, id_l, id_r``."""
    empty = pl.DataFrame(schema={"rule": pl.String, "id_l": pl.Int64, "id_r": pl.Int64})
    if overrides is None or overrides.height == 0:
        return empty
    keyed = (
        overrides.with_columns(
            key_l=pl.col("source_l") + ":" + pl.col("record_id_l"),
            key_r=pl.col("source_r") + ":" + pl.col("record_id_r"),
        )
        .join(membership.rename({"record_key": "key_l", "profile_id": "p_l"}), on="key_l")
        .join(membership.rename({"record_key": "key_r", "profile_id": "p_r"}), on="key_r")
        .filter(pl.col("p_l") != pl.col("p_r"))
        .select("rule", id_l=pl.min_horizontal("p_l", "p_r"), id_r=pl.max_horizontal("p_l", "p_r"))
    )
    return keyed.cast(empty.schema)


def flag_overrides(scored: pl.DataFrame, steward: pl.DataFrame | None) -> pl.DataFrame:
    """Steward decisions win over the model: must-link adds an edge, cannot-link forbids one."""
    scored = scored.with_columns(must_link=pl.lit(False), steward_cannot_link=pl.lit(False))
    if steward is None or steward.height == 0:
        return scored
    must = steward.filter(pl.col("rule") == "must_link").select("id_l", "id_r", m=pl.lit(True))
    never = steward.filter(pl.col("rule") == "cannot_link").select("id_l", "id_r", c=pl.lit(True))
    return (
        scored.join(must.unique(["id_l", "id_r"]), on=["id_l", "id_r"], how="left")
        .join(never.unique(["id_l", "id_r"]), on=["id_l", "id_r"], how="left")
        .with_columns(
            must_link=pl.col("m").fill_null(False),
            cannot_link=pl.col("cannot_link") | pl.col("c").fill_null(False),
            steward_cannot_link=pl.col("c").fill_null(False),
        )
        .drop("m", "c")
    )
