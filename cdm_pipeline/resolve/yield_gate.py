"""The yield gate: a rule that proposes many new pairs is compared on a sample first, and the
rest only if the sample links enough of them.

What a blocking rule costs can be counted from key frequencies (the budget in ``blocking``);
what it finds cannot. The full name alone costs about two pairs a record among a million
people in every profile we measured, and finds 37 links per 10,000 of its new pairs in the
seven-channel demo but 0.02-0.04 in one-source sets (docs/benchmarks.md): a cost budget cannot
tell the two apart, a yield estimate can. So on a night that learns its model, each rule whose
new pairs (those no earlier rule proposed) number more than ``min_new_pairs`` is planned as a
random sample of ``sample_pairs`` of them, the rest set aside. The model is learnt with each
sampled pattern counted for the pairs it stands for; the sample is scored; a rule whose sample
links fewer than ``min_links_per_10k`` per 10,000 pairs is left out, its sample with it, and
the others have their set-aside pairs compared and scored. The decision is stored with the model
(``ModelParameters.low_yield_rules``), so that nights scored by that model (incremental, or a
full rebuild with it) leave out the same rules and still equal each other.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import polars as pl

from cdm_pipeline.resolve.blocking import RuleReport
from cdm_pipeline.resolve.decisions import LINKING_DECISIONS

SAMPLE_SEED = 20261203


@dataclass(frozen=True)
class YieldGate:
    min_new_pairs: int
    sample_pairs: int
    min_links_per_10k: float

    @classmethod
    def from_settings(cls, settings: dict) -> YieldGate | None:
        """The gate of ``settings['yield_gate']``; None when it is absent or switched off."""
        gate = settings.get("yield_gate")
        if not gate or not gate.get("min_new_pairs"):
            return None
        return cls(
            int(gate["min_new_pairs"]),
            int(gate["sample_pairs"]),
            float(gate["min_links_per_10k"]),
        )

    def passes(self, links: int, sampled: int) -> bool:
        return sampled > 0 and links * 10_000 >= self.min_links_per_10k * sampled


def sample_rules(
    pairs: pl.DataFrame, report: list[RuleReport], gate: YieldGate | None
) -> tuple[pl.DataFrame, pl.DataFrame | None, list[RuleReport]]:
    """(pairs to compare now, pairs set aside or None, the report with each gated rule's
    sample size). The sample is each rule's pairs with the smallest hashes of their ids: random,
    and the same whatever order the pairs came in."""
    gated = [
        number
        for number, r in enumerate(report)
        if gate is not None and r.new_pairs > max(gate.min_new_pairs, gate.sample_pairs)
    ]
    if not gated:
        return pairs, None, report
    in_gate = pl.col("blocking_rule").is_in(gated)
    ranked = pairs.filter(in_gate).with_columns(
        rank=pl.struct("id_l", "id_r").hash(SAMPLE_SEED).rank("ordinal").over("blocking_rule")
    )
    sampled = ranked["rank"] <= gate.sample_pairs
    aside = ranked.filter(~sampled).drop("rank")
    pairs = pl.concat([pairs.filter(~in_gate), ranked.filter(sampled).drop("rank")])
    report = [
        replace(r, sampled_pairs=gate.sample_pairs) if n in gated else r
        for n, r in enumerate(report)
    ]
    return pairs, aside, report


def pattern_weights(report: list[RuleReport]) -> dict[int, float]:
    """How many of its new pairs each compared pair of a sampled rule stands for."""
    return {n: r.new_pairs / r.sampled_pairs for n, r in enumerate(report) if r.sampled_pairs}


def weighted(patterns: pl.DataFrame, weights: dict[int, float]) -> pl.DataFrame:
    """``level_patterns`` with a sampled rule's pairs counted for all its new pairs: the model
    is learnt as if every pair had been compared."""
    if not weights or "blocking_rule" not in patterns.columns:
        return patterns
    factor = pl.col("blocking_rule").replace_strict(weights, default=1.0, return_dtype=pl.Float64)
    return patterns.with_columns(pairs=pl.col("pairs") * factor)


def sample_links(scored: pl.DataFrame, rules: list[int]) -> dict[int, int]:
    """Pairs of each sampled rule the model links (the steward's decisions aside)."""
    counted = (
        scored.filter(
            pl.col("blocking_rule").is_in(rules) & pl.col("decision").is_in(LINKING_DECISIONS)
        )
        .group_by("blocking_rule")
        .len()
    )
    return dict(counted.iter_rows())
