"""How the scoring model's parameters are learnt from the data, without labels.

m and h come from EM on training blocks, as Splink trains: among pairs agreeing exactly on a
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
    DIFFERENT,
    NULL_LEVEL,
    CombinedComparison,
    Comparison,
    HouseholdSharing,
    compare_pairs,
    model_comparisons,
)
from cdm_pipeline.resolve.profiles import DERIVED_FROM
from cdm_pipeline.resolve.scoring import M_FLOOR, U_FLOOR, ModelParameters, value_people

# A disagreement is never impossible for a true match: a sample where nobody changed phone says
# little about the next person who did. The floor keeps it a strong vote against (about -9
# bits), not a veto.
M_DIFFERENT_FLOOR = 0.002
# A class needs this many pairs' worth of mass in a block before its estimate there is used.
MIN_TRAINING_PAIRS = 200
# Fewer household pairs than this (or than 5% of the pairs) where households live: the data
# hold no households (on the development sets: none in Febrl1/2 or the generator's profiles
# without households; 180 in the demo at 1,500 people). The class is then left out. With fewer
# pairs than MIN_HOUSEHOLD_BLOCK there, nothing can be said: the class stays at its prior.
MIN_HOUSEHOLD_PAIRS = 25
MIN_HOUSEHOLD_BLOCK = 50
# A prior for m and h, as pseudo-pairs spread over the levels like the initial guess (a person's
# records mostly agree; a household's own fields differ): an unseen level is rare, not
# impossible, and a model learnt from a handful of pairs (a first night of a small shop) stays
# near the guess instead of going wherever three pairs point.
PRIOR_PAIRS = 20.0
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


@dataclass
class _Mixture:
    """One EM fit's parameters: m and h of the comparisons it weighed, the class shares."""

    m: dict[str, np.ndarray]
    h: dict[str, np.ndarray]
    shares: np.ndarray  # person, household, unrelated
    twin_share: float
    iterations: int
    converged: bool


def _household_levels(c: Comparison, u: list[float], twin_share: float) -> np.ndarray:
    """h of a comparison the household does not share: as two strangers; a birth date is also
    equal for twins."""
    values = np.asarray(u, dtype=float).copy()
    if c.household_sharing == HouseholdSharing.TWINS:
        values *= 1.0 - twin_share
        values[c.exact_level] += twin_share
    return values


def _initial_m(c: Comparison) -> np.ndarray:
    k = len(c.labels)
    values = np.array([0.05] + [0.15 / max(k - 2, 1)] * (k - 2) + [0.8])
    return values / values.sum()


def _initial_h(c: Comparison, u: list[float], twin_share: float) -> np.ndarray:
    if c.household_sharing != HouseholdSharing.SHARED:
        return _household_levels(c, u, twin_share)
    k = len(c.labels)
    values = np.array([0.5] + [0.1 / max(k - 2, 1)] * (k - 2) + [0.4])
    return values / values.sum()


def fit_mixture(
    patterns: pl.DataFrame,
    comparisons: list[Comparison],
    u: dict[str, list[float]],
    settings: dict,
    m: dict[str, np.ndarray] | None = None,
    h: dict[str, np.ndarray] | None = None,
    learn: tuple[bool, bool] = (True, True),
    household_share: float | None = None,
    tied: frozenset[str] = frozenset(),
) -> _Mixture:
    """EM over level patterns (``level_patterns``) with u held fixed.

    ``learn`` says whether m and h are learnt (else the given ones are held). The household
    class learns what households share (``HouseholdSharing.SHARED``) and the twin share, bounded
    by ``settings["max_twin_share"]``: without a bound, a person's records whose first names
    differ (Febrl replaces first names outright) would be explained as twins whatever the data
    say about households. ``household_share`` holds that class's share (0: no household class);
    the comparisons in ``tied`` are shared by a household as one person's records share them
    (h = m: the same address, typed the same ways).
    """
    names = [c.name for c in comparisons]
    counts = pair_counts(patterns)
    levels = {n: patterns[f"{n}_level"].to_numpy().astype(np.int64) for n in names}
    max_twins = float(settings.get("max_twin_share", 0.25))
    twin_share = min(0.1, max_twins)
    m = {c.name: np.asarray(m[c.name]) if m else _initial_m(c) for c in comparisons}
    h = {
        c.name: np.asarray(h[c.name]) if h else _initial_h(c, u[c.name], twin_share)
        for c in comparisons
    }
    for name in tied & set(names):
        h[name] = m[name]
    uu = {n: np.asarray(u[n], dtype=float) for n in names}
    guess = np.array([0.3, 0.05, 0.65])  # also the prior of the shares, as PRIOR_PAIRS pairs
    if household_share is not None:
        guess = np.array([0.3, household_share, 0.7 - household_share])
    shares = guess
    converged, done = False, 0
    for done in range(1, int(settings.get("em_iterations", 25)) * 4 + 1):  # noqa: B007
        log_lik = np.zeros((3, len(counts)))
        for n in names:
            present = levels[n] != NULL_LEVEL
            for k, table in enumerate((m, h, uu)):
                log_lik[k, present] += np.log(np.maximum(table[n], U_FLOOR)[levels[n][present]])
        log_lik += np.log(np.maximum(shares, 1e-300))[:, None]
        posterior = np.exp(log_lik - log_lik.max(axis=0))
        posterior /= posterior.sum(axis=0)
        weighted = posterior * counts
        new_shares = (weighted.sum(axis=1) + PRIOR_PAIRS * guess) / (counts.sum() + PRIOR_PAIRS)
        if household_share is not None:
            rest = max(new_shares[0] + new_shares[2], 1e-300)
            new_shares = np.array(
                [
                    new_shares[0] / rest * (1 - household_share),
                    household_share,
                    new_shares[2] / rest * (1 - household_share),
                ]
            )
        change = float(np.abs(new_shares - shares).max())
        shares = np.clip(new_shares, 1e-12, 1.0)
        if learn[1]:
            for c in comparisons:
                if c.household_sharing == HouseholdSharing.TWINS:
                    twin_share = _twin_share(c, levels[c.name], weighted[1], uu[c.name], max_twins)
        for c in comparisons:
            present = levels[c.name] != NULL_LEVEL
            for k, table, on in ((0, m, learn[0]), (1, h, learn[1])):
                if not on or (k == 1 and c.name in tied):
                    continue
                if k == 1 and c.household_sharing != HouseholdSharing.SHARED:
                    new = _household_levels(c, u[c.name], twin_share)
                else:
                    totals = np.bincount(
                        levels[c.name][present],
                        weights=weighted[k][present],
                        minlength=len(c.labels),
                    )
                    prior = _initial_m(c) if k == 0 else _initial_h(c, u[c.name], twin_share)
                    new = (totals + PRIOR_PAIRS * prior) / (totals.sum() + PRIOR_PAIRS)
                    if k == 0:
                        new = _floored(new)
                change = max(change, float(np.abs(new - table[c.name]).max()))
                table[c.name] = new
        for name in tied & set(names):
            h[name] = m[name]
        if change < 1e-6:
            converged = True
            break
    return _Mixture(m, h, shares, twin_share, done, converged)


def _twin_share(
    c: Comparison, levels: np.ndarray, weights: np.ndarray, u: np.ndarray, bound: float
) -> float:
    """The share of household pairs with equal birth dates beyond what strangers share."""
    present = levels != NULL_LEVEL
    total = weights[present].sum()
    if total <= 0:
        return min(0.1, bound)
    equal = weights[present & (levels == c.exact_level)].sum() / total
    chance = u[c.exact_level]
    return float(min(max((equal - chance) / max(1 - chance, 1e-12), 0.0), bound))


def _floored(m: np.ndarray) -> np.ndarray:
    m = np.maximum(np.asarray(m, dtype=float), M_FLOOR)
    m[DIFFERENT] = max(m[DIFFERENT], M_DIFFERENT_FLOOR)
    return m / m.sum()


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
            _initial_h(c, u[c.name], twin_share)
            if too_few
            else _household_levels(c, u[c.name], twin_share),
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
        n: _floored(m_estimates.get(n)) if m_estimates.get(n) is not None else fallback.m[n]
        for n in by_name
    }
    h = {n: m[n] if n in tied else h_held[n] for n in by_name}
    total = pair_counts(patterns).sum()
    household_share = None if too_few else min(household_pairs / max(total, 1.0), 0.5)
    given = given_blocking(patterns, comparisons, rules)

    def fit_shares() -> _Mixture:
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


def pair_counts(levels: pl.DataFrame) -> np.ndarray:
    """How many pairs each row stands for: its ``pairs`` count in ``level_patterns``, else 1."""
    if "pairs" in levels.columns:
        return levels["pairs"].to_numpy().astype(float)
    return np.ones(levels.height)
