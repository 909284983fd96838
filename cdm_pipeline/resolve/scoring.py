"""Fellegi-Sunter scoring with parameters learnt from the data itself, without labels.

- u (how often a level occurs between two different people) comes from a random sample of
  profile pairs, except the exact level: from how many different people share each value (a
  person counted once however many records repeat the value), and for identifiers that block on
  their own (email, phone) from how many of the pairs sharing one show cannot-link evidence.
- The prior is that of two random profiles (EM's share among candidates, scaled to all pairs):
  blocking chooses which pairs to score, it is not evidence that they match.
- m (how often the level occurs between two records of the same person) comes from EM on training
  blocks (``train_m``: each comparison learnt where the block does not force it to agree), with
  guards from ER_NOTES: a differing birth date or first name may not look
  like a common trait of true matches (their m is bounded), and location fields (street, postal
  code, city) count as one correlated fact, so their combined weight is capped.
- Exact name and city matches are term-frequency adjusted: two "Smith"s are weaker evidence than
  two "Zwicky"s.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

import numpy as np
import polars as pl

from cdm_pipeline.resolve.comparisons import DIFFERENT, NULL_LEVEL, Comparison, compare_pairs

# Upper bounds on m for "different": a true match rarely has a wholly different birth date or
# first name. Without them EM absorbs households into its match class (ER_NOTES.md).
M_DIFFERENT_BOUNDS = {"birth_date": 0.02, "first_name_key": 0.05, "last_name_key": 0.10}
# Bits: the street, postal code and city together (one fact, where someone lives) ...
LOCATION_WEIGHT_CAP = 8.0
# ... and all a household can share, when judging a personal conflict (``household_evidence_cap``)
HOUSEHOLD_EVIDENCE_CAP = 12.0
U_FLOOR = 1e-9
M_FLOOR = 1e-6
# A disagreement is never impossible for a true match: a sample where nobody changed phone says
# little about the next person who did. The floor keeps it a strong vote against (about -9
# bits), not a veto.
M_DIFFERENT_FLOOR = 0.002


@dataclass
class ModelParameters:
    """m and u per comparison level, the prior match share, and how training went."""

    m: dict[str, list[float]]
    u: dict[str, list[float]]
    prior: float  # share of matches among candidate pairs (what EM estimates)
    em_iterations: int
    em_converged: bool
    global_prior: float = 0.0  # probability that two random profiles match: the scoring prior
    # Term frequencies at training time: comparison -> (value, share of people holding it), and
    # the people counted (an unseen value is held by one of them). Frozen with m and u so that a
    # record scored tonight weighs the same as it would in a full rebuild with this model.
    tf_shares: dict[str, pl.DataFrame] = field(default_factory=dict)
    tf_people: dict[str, int] = field(default_factory=dict)

    def with_term_frequencies(
        self, profiles: pl.DataFrame, comparisons: list[Comparison]
    ) -> ModelParameters:
        for c in comparisons:
            if c.tf_adjusted:
                counts, people = value_people(profiles, c.name)
                self.tf_shares[c.name] = counts.select(
                    value=pl.col("value").cast(pl.String),
                    share=pl.col("people") / people,
                )
                self.tf_people[c.name] = people
        return self

    def with_global_prior(self, candidate_pairs: int, profiles: int) -> ModelParameters:
        """Scale the candidate-pair prior to all pairs, as Splink's
        ``probability_two_random_records_match``: blocking selects pairs, it is not evidence."""
        all_pairs = max(profiles * (profiles - 1) / 2, 1.0)
        expected_matches = self.prior * candidate_pairs
        self.global_prior = min(max(expected_matches / all_pairs, 1e-12), 0.5)
        return self

    def to_json(self) -> str:
        """Everything but the term frequencies (see ``term_frequency_rows``)."""
        return json.dumps(
            {
                "m": self.m,
                "u": self.u,
                "prior": self.prior,
                "global_prior": self.global_prior,
                "em_iterations": self.em_iterations,
                "em_converged": self.em_converged,
                "tf_people": self.tf_people,
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
            prior=data["prior"],
            em_iterations=data["em_iterations"],
            em_converged=data["em_converged"],
            global_prior=data["global_prior"],
            tf_shares={name: shares.get(name, _no_values()) for name in data["tf_people"]},
            tf_people=data["tf_people"],
        )

    def weight(self, comparison: str, level: int) -> float:
        if level == NULL_LEVEL:
            return 0.0
        return math.log2(
            max(self.m[comparison][level], M_FLOOR) / max(self.u[comparison][level], U_FLOOR)
        )

    def as_rows(self, comparisons: list[Comparison]) -> list[dict]:
        rows = []
        for c in comparisons:
            for level, label in enumerate(c.labels):
                rows.append(
                    {
                        "comparison": c.name,
                        "level": level,
                        "label": label,
                        "m_probability": self.m[c.name][level],
                        "u_probability": self.u[c.name][level],
                        "match_weight": self.weight(c.name, level),
                        "tf_adjusted": c.tf_adjusted and level == c.exact_level,
                        "location_group": c.location,
                    }
                )
        return rows


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


def estimate_u(
    profiles: pl.DataFrame,
    comparisons: list[Comparison],
    sample_pairs: int = 300_000,
    seed: int = 42,
) -> dict[str, list[float]]:
    """u per level: the exact level from how many different people share each value, the other
    levels from a random sample of profile pairs (Laplace-smoothed, so an unseen level is rare,
    not impossible)."""
    rng = np.random.default_rng(seed)
    n = profiles.height
    if n < 2:
        return {c.name: [1.0 / len(c.labels)] * len(c.labels) for c in comparisons}
    size = min(sample_pairs, n * (n - 1) // 2)
    left = rng.integers(0, n, size)
    right = rng.integers(0, n, size)
    keep = left != right
    ids = profiles["profile_id"].to_numpy()
    sample = pl.DataFrame({"id_l": ids[left[keep]], "id_r": ids[right[keep]]})
    levels = compare_pairs(sample, profiles, comparisons)
    u: dict[str, list[float]] = {}
    for c in comparisons:
        observed = levels[f"{c.name}_level"]
        observed = observed.filter((observed != NULL_LEVEL) & (observed != c.exact_level))
        counts = np.bincount(observed.to_numpy().astype(np.int64), minlength=len(c.labels))[
            :-1
        ].astype(float)
        exact = _exact_share(profiles, c.name)
        rest = (counts + 1.0) / (counts.sum() + len(counts)) * (1.0 - exact)
        u[c.name] = [max(float(v), U_FLOOR) for v in [*rest, exact]]
    return u


def identifier_u(
    u: dict[str, list[float]],
    levels: pl.DataFrame,
    comparisons: list[Comparison],
    fields: list[str],
    profiles: int,
) -> dict[str, list[float]]:
    """Exact-level u for identifiers that block on their own (email, phone): every pair sharing
    the value is a candidate, so count how many of them are different people, judged by the
    cannot-link evidence (different first name or birth date) where it can be judged. ``levels``
    may be ``level_patterns`` (a ``pairs`` count per distinct row of levels).

    Value frequencies would say two random people share an email as often as one person's
    records repeat it; this counts only sharing between people who are evidently different.
    """
    all_pairs = max(profiles * (profiles - 1) / 2, 1.0)
    different = personal_conflict(levels)
    judged = pl.lit(False)
    for column in ("first_name_key_level", "birth_date_level"):
        if column in levels.columns:
            judged = judged | (pl.col(column) != NULL_LEVEL)
    flags = levels.with_columns(different=different).with_columns(judged=judged)
    for c in comparisons:
        if c.name not in fields:
            continue
        agreeing = flags.filter(pl.col(f"{c.name}_level") == c.exact_level)
        judged_pairs = agreeing.filter(pl.col("judged"))
        different_pairs = float(
            (pair_counts(judged_pairs) * judged_pairs["different"].to_numpy()).sum()
        )
        share_different = (different_pairs + 1) / (pair_counts(judged_pairs).sum() + 2)
        exact = max(pair_counts(agreeing).sum() * share_different, 1.0) / all_pairs
        others = np.asarray(u[c.name][:-1], dtype=float)
        others = (
            others / others.sum() * (1.0 - exact)
            if others.sum() > 0
            else np.full(len(others), (1.0 - exact) / len(others))
        )
        u[c.name] = [*(float(v) for v in others), float(exact)]
    return u


def _exact_share(profiles: pl.DataFrame, field: str) -> float:
    """Probability that two different random people share a value of ``field``."""
    counts, people = value_people(profiles, field)
    shared = float((counts["people"].cast(pl.Float64) * (counts["people"] - 1)).sum())
    return max(shared / (people * (people - 1)), 1.0 / (people * (people - 1)))


def estimate_m(
    levels: pl.DataFrame,
    comparisons: list[Comparison],
    u: dict[str, list[float]],
    iterations: int = 25,
    fixed_m: dict[str, list[float]] | None = None,
) -> ModelParameters:
    """EM over the distinct level patterns of the candidate pairs, u held fixed (and the m of
    ``fixed_m``, when given: then only the prior is learnt)."""
    names = [c.name for c in comparisons]
    patterns = level_patterns(levels, comparisons)
    counts = patterns["pairs"].to_numpy().astype(float)
    pattern_levels = {n: patterns[f"{n}_level"].to_numpy().astype(np.int64) for n in names}
    m = dict(fixed_m) if fixed_m else {c.name: _initial_m(c) for c in comparisons}
    prior = 0.1
    converged = False
    done = 0
    for done in range(1, iterations + 1):  # noqa: B007 - the count is reported after the loop
        log_m = np.full(len(counts), math.log(prior))
        log_u = np.full(len(counts), math.log(1 - prior))
        for n in names:
            lv = pattern_levels[n]
            present = lv != NULL_LEVEL
            log_m[present] += np.log(np.asarray(m[n])[lv[present]])
            log_u[present] += np.log(np.asarray(u[n])[lv[present]])
        posterior = 1.0 / (1.0 + np.exp(np.clip(log_u - log_m, -700, 700)))
        weighted = posterior * counts
        new_prior = float(weighted.sum() / max(counts.sum(), 1.0))
        change = abs(new_prior - prior)
        prior = min(max(new_prior, 1e-6), 1 - 1e-6)
        for c in comparisons if not fixed_m else ():
            lv = pattern_levels[c.name]
            present = lv != NULL_LEVEL
            totals = np.bincount(lv[present], weights=weighted[present], minlength=len(c.labels))
            new_m = _bounded(c, totals / max(totals.sum(), 1e-12))
            change = max(change, max(abs(a - b) for a, b in zip(new_m, m[c.name], strict=True)))
            m[c.name] = new_m
        if change < 1e-5:
            converged = True
            break
    return ModelParameters(m=m, u=u, prior=prior, em_iterations=done, em_converged=converged)


# Training blocks, as Splink trains: EM runs on the candidate pairs that agree exactly on a
# block's fields, and learns m only for the other comparisons (the block's own always agree
# there). Among pairs sharing a surname and birth date, two different people look like two random
# people on the other fields, which is what u says; among all candidates they do not (every
# candidate agrees on something), and EM over all of them takes nearly every pair for a match,
# so that a different email or street would weigh almost nothing against. Blocks on a location
# field hold out every location field (one street, one city); none is on email or phone, which
# shared family contacts pollute.
TRAINING_BLOCKS = (
    ("last_name_key", "birth_date"),
    ("first_name_key", "postal_code"),
    ("identifier_key",),
)
MIN_TRAINING_PAIRS = 200


def train_m(
    levels: pl.DataFrame,
    comparisons: list[Comparison],
    u: dict[str, list[float]],
    iterations: int = 25,
) -> ModelParameters:
    """m per comparison from EM on each training block it is not part of (averaged over the
    blocks that estimated it), then the share of matches among all candidates with m held.

    Location fields describe one fact, so EM would count a move (street, postal code and city
    all different) as three independent disagreements and learn that people never move. They
    are left out of EM and their m read off afterwards, weighted by how sure the other
    comparisons are that a pair is one person. A comparison no block could estimate (the data
    lacks the fields) keeps the m of EM over all candidates."""
    location = [c for c in comparisons if c.location]
    estimates: dict[str, list[list[float]]] = {c.name: [] for c in comparisons}
    exact = {c.name: c.exact_level for c in comparisons}
    for block in TRAINING_BLOCKS:
        if any(f"{f}_level" not in levels.columns for f in block):
            continue
        inside = levels.filter(pl.all_horizontal(pl.col(f"{f}_level") == exact[f] for f in block))
        weights = pair_counts(inside)
        if weights.sum() < MIN_TRAINING_PAIRS:
            continue
        free = [c for c in comparisons if c.name not in block and not c.location]
        session = estimate_m(inside, free, u, iterations)
        present_pairs = {
            c.name: weights[inside[f"{c.name}_level"].ne(NULL_LEVEL).to_numpy()].sum()
            for c in free + location
        }
        observed = [c for c in free if present_pairs[c.name] > 0]
        for c in observed:
            if present_pairs[c.name] >= MIN_TRAINING_PAIRS:
                estimates[c.name].append(session.m[c.name])
        if location and not {c.name for c in location} & set(block):
            posterior = _posterior(inside, observed, session.m, u, session.prior) * weights
            for c in location:
                lv = inside[f"{c.name}_level"].to_numpy().astype(np.int64)
                present = lv != NULL_LEVEL
                if present_pairs[c.name] >= MIN_TRAINING_PAIRS:
                    totals = np.bincount(
                        lv[present], weights=posterior[present], minlength=len(c.labels)
                    )
                    estimates[c.name].append(list(totals / max(totals.sum(), 1e-12)))
    fallback = estimate_m(levels, comparisons, u, iterations)
    m = {
        c.name: (
            _bounded(c, np.mean(np.asarray(estimates[c.name]), axis=0))
            if estimates[c.name]
            else fallback.m[c.name]
        )
        for c in comparisons
    }
    params = estimate_m(levels, comparisons, u, iterations, fixed_m=m)
    params.em_iterations = fallback.em_iterations
    params.em_converged = fallback.em_converged
    return params


def level_patterns(levels: pl.DataFrame, comparisons: list[Comparison]) -> pl.DataFrame:
    """Each distinct row of levels with the number of pairs showing it (``pairs``): all that
    training reads, a few thousand rows however many pairs were compared. Patterns of several
    shards add up (``pl.concat`` them and call this again)."""
    columns = [f"{c.name}_level" for c in comparisons]
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


def _posterior(
    levels: pl.DataFrame,
    comparisons: list[Comparison],
    m: dict[str, list[float]],
    u: dict[str, list[float]],
    prior: float,
) -> np.ndarray:
    """Probability that each pair is a match, under these comparisons only."""
    log_ratio = np.full(levels.height, math.log(prior / (1 - prior)))
    for c in comparisons:
        lv = levels[f"{c.name}_level"].to_numpy().astype(np.int64)
        present = lv != NULL_LEVEL
        log_ratio[present] += np.log(np.asarray(m[c.name])[lv[present]]) - np.log(
            np.asarray(u[c.name])[lv[present]]
        )
    return 1.0 / (1.0 + np.exp(-np.clip(log_ratio, -700, 700)))


def _initial_m(c: Comparison) -> list[float]:
    k = len(c.labels)
    values = [0.05] + [0.15 / max(k - 2, 1)] * (k - 2) + [0.8]
    return _bounded(c, np.asarray(values))


def _bounded(c: Comparison, m: np.ndarray) -> list[float]:
    m = np.maximum(np.asarray(m, dtype=float), M_FLOOR)
    m[DIFFERENT] = max(m[DIFFERENT], M_DIFFERENT_FLOOR)
    bound = M_DIFFERENT_BOUNDS.get(c.name)
    if bound is not None and m[DIFFERENT] > bound:
        excess = m[DIFFERENT] - bound
        m[DIFFERENT] = bound
        others = m[1:].sum()
        m[1:] += excess * m[1:] / others
    m /= m.sum()
    return [float(v) for v in m]


def score_pairs(
    levels: pl.DataFrame,
    profiles: pl.DataFrame,
    comparisons: list[Comparison],
    params: ModelParameters,
) -> pl.DataFrame:
    """Add ``<field>_weight`` per comparison, ``match_weight`` and ``match_probability``; the
    location fields together count for at most ``LOCATION_WEIGHT_CAP`` bits."""
    tf_fields = [c.name for c in comparisons if c.tf_adjusted and c.name in params.tf_shares]
    if tf_fields and levels.height < profiles.height // 4:  # a night's pairs: look up few values
        named = levels["id_l"].unique().implode()
        profiles = profiles.select("profile_id", *tf_fields).filter(
            pl.col("profile_id").is_in(named)
        )
    weights = []
    for c in comparisons:
        table = pl.DataFrame(
            {
                "lv": list(range(len(c.labels))),
                "w": [params.weight(c.name, lv) for lv in range(len(c.labels))],
            },
            schema={"lv": pl.Int8, "w": pl.Float64},
        )
        weight = (
            levels.select(pl.col(f"{c.name}_level").alias("lv"))
            .join(table, on="lv", how="left", maintain_order="left")["w"]
            .fill_null(0.0)
        )
        if c.tf_adjusted:
            weight = _tf_adjust(levels, profiles, c, params, weight)
        weights.append(weight.alias(f"{c.name}_weight"))
    scored = levels.with_columns(weights)
    location = [f"{c.name}_weight" for c in comparisons if c.location]
    prior = params.global_prior or params.prior
    prior_weight = math.log2(prior / (1 - prior))
    personal = [f"{c.name}_weight" for c in comparisons if not c.location]
    location_sum = pl.sum_horizontal(location) if location else pl.lit(0.0)
    total = (
        prior_weight
        + pl.sum_horizontal(personal)
        + pl.min_horizontal(location_sum, pl.lit(LOCATION_WEIGHT_CAP))
    )
    return scored.with_columns(match_weight=total).with_columns(
        match_probability=1.0 / (1.0 + (2.0 ** (-pl.col("match_weight"))))
    )


def _tf_adjust(
    levels: pl.DataFrame,
    profiles: pl.DataFrame,
    c: Comparison,
    params: ModelParameters,
    weight: pl.Series,
) -> pl.Series:
    """Exact matches weigh log2(m_exact / share of that value) instead of the average u; a value
    the model never saw is as rare as a value held by one person."""
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
    )
    m_exact = params.m[c.name][c.exact_level]
    tf_weight = (m_exact / share.clip(lower_bound=U_FLOOR)).log(2)
    exact = levels[f"{c.name}_level"] == c.exact_level
    return pl.select(pl.when(exact).then(tf_weight).otherwise(weight)).to_series()


FIRST_NAME_CONFLICT_LEVELS = (0, 2)  # different, or only Jaro-Winkler 0.70-0.80 (Evan / Ethan)


def personal_conflict(levels: pl.DataFrame) -> pl.Series:
    """Personal fields that disagree: a different first name (not a nickname, a close typo or an
    initial) or a birth date that is not a slip of the same date. Strong evidence against a
    match, but evidence: a pair whose other fields outweigh it still links (``cannot_link``)."""
    evidence = pl.lit(False)
    if "first_name_key_level" in levels.columns:
        evidence = evidence | pl.col("first_name_key_level").is_in(FIRST_NAME_CONFLICT_LEVELS)
    if "birth_date_level" in levels.columns:
        evidence = evidence | (pl.col("birth_date_level") == DIFFERENT)
    return levels.select(evidence.alias("conflict"))["conflict"]


def cannot_link(
    scored: pl.DataFrame,
    comparisons: list[Comparison],
    params: ModelParameters,
    threshold: float,
    household_cap: float = HOUSEHOLD_EVIDENCE_CAP,
) -> pl.Series:
    """Different people, as far as the evidence says: a personal field disagrees, and what a
    household cannot share outweighs it too little to reach the threshold, with what it can
    share counting for at most ``household_cap`` bits. Twins share a surname, address, phone,
    inbox and birth date, so a different first name is overcome only by an id the person gave
    (a national id); a different birth date also by an agreeing first name (a father and son
    may share one, which is why the cap holds). So a typo'd birth date with the same name and
    national id links, and twins stay two people. The guard keeps such pairs apart."""
    prior = params.global_prior or params.prior
    prior_weight = math.log2(prior / (1 - prior))
    names = {c.name for c in comparisons}

    def outweighed(own: list[str]) -> pl.Expr:
        own = [f for f in own if f in names]
        rest = [f"{c.name}_weight" for c in comparisons if c.name not in own]
        weight = (
            prior_weight
            + pl.sum_horizontal([pl.lit(0.0), *(pl.col(f"{f}_weight") for f in own)])
            + pl.min_horizontal(pl.sum_horizontal(rest), pl.lit(household_cap))
        )
        return (1.0 / (1.0 + 2.0 ** (-weight))) < threshold

    first = pl.col("first_name_key_level").is_in(FIRST_NAME_CONFLICT_LEVELS)
    birth = pl.col("birth_date_level") == DIFFERENT
    verdict = (first & outweighed(["first_name_key", "identifier_key"])) | (
        birth & outweighed(["birth_date", "first_name_key", "identifier_key"])
    )
    return scored.select(verdict.fill_null(False).alias("cannot_link"))["cannot_link"]
