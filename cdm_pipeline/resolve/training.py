"""How the scoring model's parameters are learnt from the data, without labels.

m and h come from EM (``mixture.py``) on training blocks, as Splink trains: among pairs agreeing exactly on a
block's fields, the other comparisons are learnt. Household sharing is learnt where households
live (street and surname agree). Exact name and city matches are term-frequency adjusted: two
"Smith"s are weaker evidence than two "Zwicky"s.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from cdm_pipeline.resolve.blocking import BlockingRule
from cdm_pipeline.resolve.comparisons import (
    NULL_LEVEL,
    CombinedComparison,
    Comparison,
    HouseholdSharing,
    compare_pairs,
    model_comparisons,
)
from cdm_pipeline.resolve.mixture import (
    Mixture,
    fit_mixture,
    floored,
    household_levels,
    initial_h,
    pair_counts,
)
from cdm_pipeline.resolve.profiles import DERIVED_FROM
from cdm_pipeline.resolve.scoring import U_FLOOR, ModelParameters, value_people

# A class needs this many pairs' worth of mass in a block before its estimate there is used.
MIN_TRAINING_PAIRS = 200
# Fewer household pairs than this (or than 5% of the pairs) where households live: the data
# hold no households (on the development sets: none in Febrl1/2 or the generator's profiles
# without households; 180 in the demo at 1,500 people). The class is then left out. With fewer
# pairs than MIN_HOUSEHOLD_BLOCK there, nothing can be said: the class stays at its prior.
MIN_HOUSEHOLD_PAIRS = 25
MIN_HOUSEHOLD_BLOCK = 50
# Below this many people, "nobody shares this value" says little about how rare sharing is: u
# of an exact match is bounded as if there were this many.
MIN_POPULATION = 1000


def estimate_u(
    profiles: pl.DataFrame,
    comparisons: list[Comparison],
    sample_pairs: int = 300_000,
    seed: int = 42,
) -> dict[str, list[float]]:
    """u per level of each comparison the model weighs: exact levels from how many different
    people share each value, the other levels from a random sample of profile pairs
    (Laplace-smoothed, so an unseen level is rare, not impossible)."""
    weighed = model_comparisons(comparisons)
    rng = np.random.default_rng(seed)
    n = profiles.height
    if n < 2:
        return {c.name: [1.0 / len(c.labels)] * len(c.labels) for c in weighed}
    size = min(sample_pairs, n * (n - 1) // 2)
    left = rng.integers(0, n, size)
    right = rng.integers(0, n, size)
    keep = left != right
    ids = profiles["profile_id"].to_numpy()
    sample = pl.DataFrame({"id_l": ids[left[keep]], "id_r": ids[right[keep]]})
    levels = compare_pairs(sample, profiles, comparisons)
    u: dict[str, list[float]] = {}
    for c in weighed:
        observed = levels[f"{c.name}_level"].filter(levels[f"{c.name}_level"] != NULL_LEVEL)
        counts = np.bincount(observed.to_numpy().astype(np.int64), minlength=len(c.labels))
        exact = _exact_levels(profiles, c)
        sampled = [lv for lv in range(len(c.labels)) if lv not in exact]
        smoothed = (counts[sampled] + 1.0) / (counts[sampled].sum() + len(sampled))
        values = np.zeros(len(c.labels))
        values[sampled] = smoothed * (1.0 - sum(exact.values()))
        for level, share in exact.items():
            values[level] = share
        u[c.name] = [max(float(v), U_FLOOR) for v in values]
    return u


def _exact_levels(profiles: pl.DataFrame, c: Comparison) -> dict[int, float]:
    """The levels whose u comes from value frequencies: a comparison's exact level, and for a
    combined comparison each part's exact level, less what the more specific parts take (two
    people on one street share its postal code too)."""
    if not isinstance(c, CombinedComparison):
        return {c.exact_level: _exact_share(profiles, c.name)}
    out, taken = {}, 0.0
    for part in c.parts:  # most specific first
        share = _exact_share(profiles, part.name)
        level = next(
            lv for lv in range(len(c.labels)) if c.part_level(lv) == (part, part.exact_level)
        )
        out[level] = max(share - taken, share * 0.01)
        taken = max(taken, share)
    return out


def _exact_share(profiles: pl.DataFrame, field: str) -> float:
    """Probability that two different random people share a value of ``field``."""
    counts, people = value_people(profiles, field)
    shared = float((counts["people"].cast(pl.Float64) * (counts["people"] - 1)).sum())
    floor = max(people, MIN_POPULATION)
    return max(shared / (people * (people - 1)), 1.0 / (floor * (floor - 1)))


# Where households live: pairs sharing a street and surname are one person's records or two
# people of one household (seldom strangers). EM there learns what members share, the twin
# share, and whether the data hold households at all.
HOUSEHOLD_BLOCK = ("street_key", "last_name_key")


# Training blocks for the person class, as Splink trains: EM runs on the candidate pairs that
# agree exactly on a block's fields and learns the other comparisons (the block's own always
# agree there). Among pairs sharing a surname and birth date, two different people look like
# two random people on the other fields, which is what u says; among all candidates they do not
# (every candidate agrees on something). None is on email or phone, which family contacts share.
TRAINING_BLOCKS = (
    HOUSEHOLD_BLOCK,
    ("last_name_key", "birth_date"),
    ("first_name_key", "birth_date"),
    ("first_name_key", "postal_code"),
    ("identifier_key",),
)


@dataclass
class _Estimates:
    """Estimates of m (or h) per comparison from several blocks, each weighted by the mass of
    its class there that could see the comparison."""

    sums: dict[str, np.ndarray]
    mass: dict[str, float]

    @classmethod
    def over(cls, comparisons: list[Comparison]) -> _Estimates:
        return cls(
            {c.name: np.zeros(len(c.labels)) for c in comparisons},
            {c.name: 0.0 for c in comparisons},
        )

    def add(self, name: str, values: np.ndarray, mass: float) -> None:
        if mass >= MIN_TRAINING_PAIRS:
            self.sums[name] += mass * np.asarray(values)
            self.mass[name] += mass

    def get(self, name: str) -> np.ndarray | None:
        return self.sums[name] / self.mass[name] if self.mass[name] else None


def train_model(
    patterns: pl.DataFrame,
    comparisons: list[Comparison],
    u: dict[str, list[float]],
    settings: dict,
    rules: list[BlockingRule] | None = None,
    profiles: int = 0,
    blocked_alone: set[str] | None = None,
) -> ModelParameters:
    """m and h per comparison, then the class shares among all candidates.

    1. The household block: EM with all three classes learns what a household shares (the
       comparisons free there) and the twin share. Where it finds too few household pairs to
       learn from, the data hold no households and the class is left out.
    2. The training blocks: EM learns m of each comparison free in a block (averaged over the
       blocks, weighted by the person mass that saw it), the household class held (a household
       shares its surname and address as one person's records do: those h follow m).
    3. The class shares among all candidates with m, h and u held, each pair judged on what its
       blocking rule did not select it by (``given_blocking``); then the exact-level u of
       the fields in ``blocked_alone`` (``identifier_u``) and the shares again.
    """
    exact = {c.name: c.exact_level for c in comparisons}
    comparisons = model_comparisons(comparisons)
    by_name = {c.name: c for c in comparisons}

    def inside(block: tuple[str, ...]) -> tuple[pl.DataFrame, list[Comparison]]:
        held = set(block)
        for c in comparisons:
            if isinstance(c, CombinedComparison) and held & {p.name for p in c.parts}:
                held.add(c.name)
        rows = patterns.filter(pl.all_horizontal(pl.col(f"{f}_level") == exact[f] for f in block))
        return rows, [c for c in comparisons if c.name not in held]

    def seen(rows: pl.DataFrame, c: Comparison, mass: float) -> float:
        weights = pair_counts(rows)
        present = weights[rows[f"{c.name}_level"].ne(NULL_LEVEL).to_numpy()].sum()
        return mass * present / max(weights.sum(), 1.0)

    def usable(block: tuple[str, ...]) -> bool:
        return all(f"{f}_level" in patterns.columns for f in block)

    m_estimates = _Estimates.over(comparisons)
    twin_share, household_pairs = 0.0, 0.0
    learnt_h: dict[str, np.ndarray] = {}
    rows, free = (
        inside(HOUSEHOLD_BLOCK)
        if usable(HOUSEHOLD_BLOCK)
        else (patterns.clear(), [c for c in comparisons if c.name not in HOUSEHOLD_BLOCK])
    )
    too_few = pair_counts(rows).sum() < MIN_HOUSEHOLD_BLOCK
    if too_few:
        # Too little data to say whether households are there (a first night of a few
        # hundred customers): the class stays, with its prior guess of what members share,
        # and its share is learnt with the rest below.
        twin_share = min(0.1, float(settings.get("max_twin_share", 0.25)))
    else:
        fit = fit_mixture(rows, free, u, settings)
        mass = fit.shares * pair_counts(rows).sum()
        for c in free:
            m_estimates.add(c.name, fit.m[c.name], seen(rows, c, mass[0]))
        if mass[1] >= min(MIN_HOUSEHOLD_PAIRS, 0.05 * mass.sum()):
            household_pairs, twin_share = mass[1], fit.twin_share
            learnt_h = {
                c.name: fit.h[c.name]
                for c in free
                if c.household_sharing == HouseholdSharing.SHARED
            }
    households = household_pairs > 0 or too_few
    # What a household shares that the household block cannot show (its own fields: the
    # street and surname, and so the whole address) it shares as one person's records do.
    in_block = {c.name for c in free}
    tied = frozenset(
        c.name
        for c in comparisons
        if c.household_sharing == HouseholdSharing.SHARED and c.name not in in_block
    )
    h_held = {
        c.name: learnt_h.get(
            c.name,
            initial_h(c, u[c.name], twin_share)
            if too_few
            else household_levels(c, u[c.name], twin_share),
        )
        for c in comparisons
    }
    for block in TRAINING_BLOCKS[1:]:
        if not usable(block):
            continue
        rows, free = inside(block)
        if pair_counts(rows).sum() < MIN_TRAINING_PAIRS:
            continue
        fit = fit_mixture(
            rows,
            free,
            u,
            settings,
            h={c.name: h_held[c.name] for c in free},
            learn=(True, False),
            household_share=None if households else 0.0,
            tied=tied,
        )
        mass = fit.shares * pair_counts(rows).sum()
        for c in free:
            m_estimates.add(c.name, fit.m[c.name], seen(rows, c, mass[0]))
    fallback = fit_mixture(
        patterns, comparisons, u, settings, household_share=None if households else 0.0
    )
    m = {
        n: floored(m_estimates.get(n)) if m_estimates.get(n) is not None else fallback.m[n]
        for n in by_name
    }
    h = {n: m[n] if n in tied else h_held[n] for n in by_name}
    total = pair_counts(patterns).sum()
    household_share = None if too_few else min(household_pairs / max(total, 1.0), 0.5)
    given = given_blocking(patterns, comparisons, rules)

    def fit_shares() -> Mixture:
        return fit_mixture(
            given,
            comparisons,
            u,
            settings,
            m=m,
            h=h,
            learn=(False, False),
            household_share=household_share,
        )

    shares = fit_shares()
    identifiers = blocked_alone or set()
    if identifiers and profiles > 1:
        u = identifier_u(
            patterns,
            comparisons,
            u,
            m,
            h,
            shares.shares,
            identifiers,
            max(profiles, MIN_POPULATION) ** 2 / 2,
        )
        shares = fit_shares()
    return ModelParameters(
        m={n: [float(v) for v in m[n]] for n in by_name},
        u=u,
        h={n: [float(v) for v in h[n]] for n in by_name} if households else {},
        prior=float(shares.shares[0]),
        household_prior=float(shares.shares[1]),
        twin_share=float(twin_share),
        em_iterations=fallback.iterations,
        em_converged=fallback.converged,
    )


def identifier_u(
    patterns: pl.DataFrame,
    comparisons: list[Comparison],
    u: dict[str, list[float]],
    m: dict[str, np.ndarray],
    h: dict[str, np.ndarray],
    shares: np.ndarray,
    identifiers: set[str],
    all_pairs: float,
) -> dict[str, list[float]]:
    """Exact-level u of identifiers that block on their own (email, phone): every pair sharing
    the value is a candidate, so count how many of them are two unrelated people, judged by the
    model on everything else they carry (pairs with nothing else to judge by are counted at the
    judged pairs' rate).

    Value frequencies cannot tell one person's records under two spellings of a name from two
    people sharing an inbox, and so make an email match look far more common between strangers
    than it is."""
    u = dict(u)
    counts = pair_counts(patterns)
    for c in comparisons:
        if c.name not in identifiers or f"{c.name}_level" not in patterns.columns:
            continue
        agree = patterns[f"{c.name}_level"].to_numpy() == c.exact_level
        others = [o for o in comparisons if o is not c]
        judged = np.zeros(patterns.height, dtype=bool)
        log_lik = np.zeros((3, patterns.height))
        for o in others:
            levels = patterns[f"{o.name}_level"].to_numpy().astype(np.int64)
            present = levels != NULL_LEVEL
            judged |= present
            for k, table in enumerate((m, h, u)):
                log_lik[k, present] += np.log(
                    np.maximum(np.asarray(table[o.name]), U_FLOOR)[levels[present]]
                )
        log_lik += np.log(np.maximum(shares, 1e-300))[:, None]
        posterior = np.exp(log_lik - log_lik.max(axis=0))
        posterior /= posterior.sum(axis=0)
        sharing = counts[agree].sum()
        judged_pairs = counts[agree & judged]
        if sharing == 0 or judged_pairs.sum() == 0:
            continue
        unrelated = (judged_pairs * posterior[2][agree & judged]).sum() / judged_pairs.sum()
        exact = max(sharing * unrelated, 1.0) / all_pairs
        rest = np.asarray(u[c.name], dtype=float)
        rest[c.exact_level] = 0.0
        rest = rest / max(rest.sum(), 1e-300) * (1.0 - exact)
        rest[c.exact_level] = exact
        u[c.name] = [max(float(v), U_FLOOR) for v in rest]
    return u


def given_blocking(
    patterns: pl.DataFrame, comparisons: list[Comparison], rules: list[BlockingRule] | None
) -> pl.DataFrame:
    """The patterns with the comparisons of the blocking rule that proposed each pair made
    missing: a pair proposed because two people share a surname and birth date agrees on those
    whatever it is, so that agreement is no evidence of how common matches are among candidates
    (counted as evidence, every candidate looks like a match and the prior is overstated)."""
    if not rules or "blocking_rule" not in patterns.columns:
        return patterns
    held_by = {}
    for c in comparisons:
        fields = {p.name for p in c.parts} if isinstance(c, CombinedComparison) else {c.name}
        held_by[c.name] = [
            number
            for number, rule in enumerate(rules)
            if fields & {f for key in rule.columns for f in DERIVED_FROM.get(key, (key,))}
        ]
    blanked = patterns.with_columns(
        pl.when(pl.col("blocking_rule").is_in(numbers))
        .then(pl.lit(NULL_LEVEL, pl.Int8))
        .otherwise(pl.col(f"{name}_level"))
        .alias(f"{name}_level")
        for name, numbers in held_by.items()
        if f"{name}_level" in patterns.columns
    )
    return level_patterns(blanked.drop("blocking_rule"), comparisons)


def level_patterns(levels: pl.DataFrame, comparisons: list[Comparison]) -> pl.DataFrame:
    """Each distinct row of levels with the number of pairs showing it (``pairs``): all that
    training reads, a few thousand rows however many pairs were compared. Patterns of several
    shards add up (``pl.concat`` them and call this again)."""
    columns = [f"{c.name}_level" for c in comparisons]
    if "blocking_rule" in levels.columns:
        columns.append("blocking_rule")
    return (
        levels.with_columns(pairs=pair_counts(levels))
        .group_by(columns)
        .agg(pl.col("pairs").sum())
        .sort(columns)
    )
