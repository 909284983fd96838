"""The three-class Fellegi-Sunter mixture, fitted by EM: a candidate pair is one person's two
records (m), two people of one household (h) or two unrelated people (u, held fixed). Nothing in
it is labelled: the data say how often one person's records differ and what a household shares.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from cdm_pipeline.resolve.comparisons import DIFFERENT, NULL_LEVEL, Comparison, HouseholdSharing
from cdm_pipeline.resolve.scoring import M_FLOOR, U_FLOOR

# A disagreement is never impossible for a true match: a sample where nobody changed phone says
# little about the next person who did. The floor keeps it a strong vote against (about -9
# bits), not a veto.
M_DIFFERENT_FLOOR = 0.002


# A prior for m and h, as pseudo-pairs spread over the levels like the initial guess (a person's
# records mostly agree; a household's own fields differ): an unseen level is rare, not
# impossible, and a model learnt from a handful of pairs (a first night of a small shop) stays
# near the guess instead of going wherever three pairs point.
PRIOR_PAIRS = 20.0


@dataclass
class Mixture:
    """One EM fit's parameters: m and h of the comparisons it weighed, the class shares."""

    m: dict[str, np.ndarray]
    h: dict[str, np.ndarray]
    shares: np.ndarray  # person, household, unrelated
    twin_share: float
    iterations: int
    converged: bool


def household_levels(c: Comparison, u: list[float], twin_share: float) -> np.ndarray:
    """h of a comparison the household does not share: as two strangers; a birth date is also
    equal for twins."""
    values = np.asarray(u, dtype=float).copy()
    if c.household_sharing == HouseholdSharing.TWINS:
        values *= 1.0 - twin_share
        values[c.exact_level] += twin_share
    return values


def initial_m(c: Comparison) -> np.ndarray:
    k = len(c.labels)
    values = np.array([0.05] + [0.15 / max(k - 2, 1)] * (k - 2) + [0.8])
    return values / values.sum()


def initial_h(c: Comparison, u: list[float], twin_share: float) -> np.ndarray:
    if c.household_sharing != HouseholdSharing.SHARED:
        return household_levels(c, u, twin_share)
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
) -> Mixture:
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
    m = {c.name: np.asarray(m[c.name]) if m else initial_m(c) for c in comparisons}
    h = {
        c.name: np.asarray(h[c.name]) if h else initial_h(c, u[c.name], twin_share)
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
                    new = household_levels(c, u[c.name], twin_share)
                else:
                    totals = np.bincount(
                        levels[c.name][present],
                        weights=weighted[k][present],
                        minlength=len(c.labels),
                    )
                    prior = initial_m(c) if k == 0 else initial_h(c, u[c.name], twin_share)
                    new = (totals + PRIOR_PAIRS * prior) / (totals.sum() + PRIOR_PAIRS)
                    if k == 0:
                        new = floored(new)
                change = max(change, float(np.abs(new - table[c.name]).max()))
                table[c.name] = new
        for name in tied & set(names):
            h[name] = m[name]
        if change < 1e-6:
            converged = True
            break
    return Mixture(m, h, shares, twin_share, done, converged)


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


def floored(m: np.ndarray) -> np.ndarray:
    m = np.maximum(np.asarray(m, dtype=float), M_FLOOR)
    m[DIFFERENT] = max(m[DIFFERENT], M_DIFFERENT_FLOOR)
    return m / m.sum()


def pair_counts(levels: pl.DataFrame) -> np.ndarray:
    """How many pairs each row stands for: its ``pairs`` count in ``level_patterns``, else 1."""
    if "pairs" in levels.columns:
        return levels["pairs"].to_numpy().astype(float)
    return np.ones(levels.height)
