"""Fellegi-Sunter scoring with three classes, every parameter learnt from the data, without labels.

A candidate pair is one of:

- **person**: two records of one person (``m``: how often each comparison level occurs);
- **household**: two people of one household (``h``): they share what a household shares (surname,
  address, a family phone or inbox, as learnt), a birth date only when twins (the twin share,
  learnt), and their own first names and ids differ as two strangers' do;
- **unrelated**: two random people (``u``), from a random sample of profile pairs; the exact level
  from how many different people share each value.

A pair links on P(person | levels). Where the data hold no households that class stays small and
a differing first name with everything else agreeing is only the mild evidence the data show it
to be (public sets replace first names outright); where households are common a twin with one
phone, inbox and address is judged a household member, not the same person. No rule overrides
the posterior but a steward's decision.

How the parameters are learnt: ``training``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

import numpy as np
import polars as pl

from cdm_pipeline.resolve.comparisons import (
    NULL_LEVEL,
    Comparison,
    HouseholdSharing,
    model_comparisons,
)

U_FLOOR = 1e-9
M_FLOOR = 1e-6


@dataclass
class ModelParameters:
    """m, h and u per comparison level, the class shares, and how training went."""

    m: dict[str, list[float]]
    u: dict[str, list[float]]
    prior: float  # share of one-person pairs among candidate pairs (what EM estimates)
    em_iterations: int
    em_converged: bool
    global_prior: float = 0.0  # probability that two random profiles are one person
    h: dict[str, list[float]] = field(default_factory=dict)  # empty: no household class
    household_prior: float = 0.0  # share of household pairs among candidates
    global_household_prior: float = 0.0  # probability that two random profiles are a household
    twin_share: float = 0.0  # share of household pairs sharing a birth date
    # Term frequencies at training time: comparison -> (value, share of people holding it), and
    # the people counted (an unseen value is held by one of them). Frozen with m and u so that a
    # record scored tonight weighs the same as it would in a full rebuild with this model.
    tf_shares: dict[str, pl.DataFrame] = field(default_factory=dict)
    tf_people: dict[str, int] = field(default_factory=dict)
    # Blocking rules the yield gate left out when this model was learnt: nights scored by it
    # leave them out too (``yield_gate``).
    low_yield_rules: list[str] = field(default_factory=list)

    def with_term_frequencies(
        self, profiles: pl.DataFrame, comparisons: list[Comparison]
    ) -> ModelParameters:
        for c in model_comparisons(comparisons):
            if c.tf_adjusted:
                counts, people = value_people(profiles, c.name)
                self.tf_shares[c.name] = counts.select(
                    value=pl.col("value").cast(pl.String),
                    share=pl.col("people") / people,
                )
                self.tf_people[c.name] = people
        return self

    def with_global_priors(self, candidate_pairs: int, profiles: int) -> ModelParameters:
        """Scale the candidate-pair shares to all pairs, as Splink's
        ``probability_two_random_records_match``: blocking selects pairs, it is not evidence."""
        all_pairs = max(profiles * (profiles - 1) / 2, 1.0)
        self.global_prior = min(max(self.prior * candidate_pairs / all_pairs, 1e-12), 0.5)
        self.global_household_prior = min(
            max(self.household_prior * candidate_pairs / all_pairs, 1e-12), 0.5
        )
        return self

    def to_json(self) -> str:
        """Everything but the term frequencies (see ``term_frequency_rows``)."""
        return json.dumps(
            {
                "m": self.m,
                "u": self.u,
                "h": self.h,
                "prior": self.prior,
                "household_prior": self.household_prior,
                "global_prior": self.global_prior,
                "global_household_prior": self.global_household_prior,
                "twin_share": self.twin_share,
                "em_iterations": self.em_iterations,
                "em_converged": self.em_converged,
                "tf_people": self.tf_people,
                "low_yield_rules": self.low_yield_rules,
            }
        )

    def term_frequency_rows(self) -> pl.DataFrame:
        """``comparison, value, share``: one row per value seen at training."""
        frames = [
            shares.select(pl.lit(name).alias("comparison"), "value", "share")
            for name, shares in self.tf_shares.items()
        ]
        return (
            pl.concat(frames)
            if frames
            else pl.DataFrame(
                schema={"comparison": pl.String, "value": pl.String, "share": pl.Float64}
            )
        )

    @classmethod
    def from_stored(cls, text: str, term_frequencies: pl.DataFrame) -> ModelParameters:
        data = json.loads(text)
        shares = {
            name: group.select("value", "share")
            for (name,), group in term_frequencies.group_by("comparison")
        }
        return cls(
            m=data["m"],
            u=data["u"],
            h=data.get("h", {}),
            prior=data["prior"],
            household_prior=data.get("household_prior", 0.0),
            em_iterations=data["em_iterations"],
            em_converged=data["em_converged"],
            global_prior=data["global_prior"],
            global_household_prior=data.get("global_household_prior", 0.0),
            twin_share=data.get("twin_share", 0.0),
            tf_shares={name: shares.get(name, _no_values()) for name in data["tf_people"]},
            tf_people=data["tf_people"],
            low_yield_rules=data.get("low_yield_rules", []),
        )

    def weight(self, comparison: str, level: int) -> float:
        """Bits of evidence for one person against two unrelated people."""
        return _log_ratio(self.m, self.u, comparison, level)

    def household_weight(self, comparison: str, level: int) -> float:
        """Bits of evidence for one household against two unrelated people."""
        return _log_ratio(self.h, self.u, comparison, level) if self.h else 0.0

    def as_rows(self, comparisons: list[Comparison]) -> list[dict]:
        rows = []
        for c in model_comparisons(comparisons):
            for level, label in enumerate(c.labels):
                rows.append(
                    {
                        "comparison": c.name,
                        "level": level,
                        "label": label,
                        "m_probability": self.m[c.name][level],
                        "u_probability": self.u[c.name][level],
                        "h_probability": (self.h.get(c.name) or self.u[c.name])[level],
                        "match_weight": self.weight(c.name, level),
                        "household_weight": self.household_weight(c.name, level),
                        "tf_adjusted": c.tf_adjusted and level == c.exact_level,
                    }
                )
        return rows


def _log_ratio(top: dict, bottom: dict, comparison: str, level: int) -> float:
    if level == NULL_LEVEL:
        return 0.0
    return math.log2(max(top[comparison][level], M_FLOOR) / max(bottom[comparison][level], U_FLOOR))


def _no_values() -> pl.DataFrame:
    return pl.DataFrame(schema={"value": pl.String, "share": pl.Float64})


def person_signature(profiles: pl.DataFrame) -> pl.Expr:
    """A stand-in for "one person" when counting how many people share a value: the nickname
    group of the first name plus the surname. Counting profiles instead would count the same
    person's ten orders as ten people sharing an email, and make an email match look common."""
    return pl.concat_str([pl.col("first_name_group"), pl.col("last_name_key")], separator="|")


def value_people(profiles: pl.DataFrame, field: str) -> tuple[pl.DataFrame, int]:
    """(value, people holding it) and the number of people, both by ``person_signature``."""
    signed = profiles.select(person=person_signature(profiles), value=pl.col(field)).filter(
        pl.col("person").is_not_null()
    )
    people = max(signed["person"].n_unique(), 2)
    counts = signed.drop_nulls().unique().group_by("value").len("people")
    return counts, people


def score_pairs(
    levels: pl.DataFrame,
    profiles: pl.DataFrame,
    comparisons: list[Comparison],
    params: ModelParameters,
) -> pl.DataFrame:
    """Add ``<comparison>_weight`` per comparison the model weighs (bits for one person against
    two unrelated people), ``household_weight`` (what the chance of one household, other person,
    takes back), ``match_weight`` (their sum with the prior: the log2-odds of one person) and
    ``match_probability``."""
    comparisons = model_comparisons(comparisons)
    tf_fields = [c.name for c in comparisons if c.tf_adjusted and c.name in params.tf_shares]
    if tf_fields and levels.height < profiles.height // 4:  # a night's pairs: look up few values
        named = levels["id_l"].unique().implode()
        profiles = profiles.select("profile_id", *tf_fields).filter(
            pl.col("profile_id").is_in(named)
        )
    person, household = [], []
    for c in comparisons:
        level = levels.select(pl.col(f"{c.name}_level").alias("lv"))
        person_weight = _level_weights(level, c, params.weight)
        household_weight = _level_weights(level, c, params.household_weight)
        if c.tf_adjusted:
            person_weight, household_weight = _tf_adjust(
                levels, profiles, c, params, person_weight, household_weight
            )
        person.append(person_weight.alias(f"{c.name}_weight"))
        household.append(household_weight)
    prior = params.global_prior or params.prior
    unrelated = 1.0 - prior - params.global_household_prior
    if params.h and params.global_household_prior > 0:
        household_odds = math.log2(params.global_household_prior / unrelated) + sum(
            w.to_numpy() for w in household
        )
        # log2(1 + 2^x), without overflow
        take_back = -(np.maximum(household_odds, 0.0) + np.log2(1 + 2.0 ** -np.abs(household_odds)))
    else:
        take_back = np.zeros(levels.height)
    return (
        levels.with_columns(*person, household_weight=pl.Series(take_back, dtype=pl.Float64))
        .with_columns(
            match_weight=pl.lit(math.log2(prior / unrelated))
            + pl.sum_horizontal([pl.lit(0.0), *(w.name for w in person)])
            + pl.col("household_weight")
        )
        .with_columns(match_probability=1.0 / (1.0 + (2.0 ** (-pl.col("match_weight")))))
    )


def _level_weights(level: pl.DataFrame, c: Comparison, weight) -> pl.Series:
    table = pl.DataFrame(
        {
            "lv": list(range(len(c.labels))),
            "w": [weight(c.name, lv) for lv in range(len(c.labels))],
        },
        schema={"lv": pl.Int8, "w": pl.Float64},
    )
    return level.join(table, on="lv", how="left", maintain_order="left")["w"].fill_null(0.0)


def _tf_adjust(
    levels: pl.DataFrame,
    profiles: pl.DataFrame,
    c: Comparison,
    params: ModelParameters,
    person: pl.Series,
    household: pl.Series,
) -> tuple[pl.Series, pl.Series]:
    """Exact matches weigh against the share of people holding that value instead of the
    average u; a value the model never saw is as rare as a value held by one person."""
    if c.name not in params.tf_shares:
        params.with_term_frequencies(profiles, [c])
    value = levels.select("id_l").join(
        profiles.select("profile_id", pl.col(c.name).cast(pl.String)),
        left_on="id_l",
        right_on="profile_id",
        how="left",
        maintain_order="left",
    )[c.name]
    shares = params.tf_shares[c.name]
    shares = shares.filter(pl.col("value").is_in(value.unique().implode()))
    share = (
        value.to_frame("value")
        .join(shares, on="value", how="left", maintain_order="left")["share"]
        .fill_null(1.0 / params.tf_people[c.name])
        .clip(lower_bound=U_FLOOR)
    )
    exact = levels[f"{c.name}_level"] == c.exact_level
    m_exact = params.m[c.name][c.exact_level]
    adjusted = [(m_exact / share).log(2)]
    if c.household_sharing == HouseholdSharing.SHARED and params.h:
        adjusted.append((params.h[c.name][c.exact_level] / share).log(2))
    else:  # a household member's own value is as common as anyone's: no evidence either way
        adjusted.append(pl.Series([0.0] * share.len()))
    person, household = (
        pl.select(pl.when(exact).then(tf).otherwise(weight)).to_series()
        for tf, weight in zip(adjusted, (person, household), strict=True)
    )
    return person, household


def different_people(match_probability: str = "match_probability") -> pl.Expr:
    """The model's judgement that a pair is two people (a household's or strangers): what the
    clustering weighs when it decides whether two groups of records may join."""
    return pl.col(match_probability) < 0.5
