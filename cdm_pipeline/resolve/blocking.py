"""Blocking: candidate pairs are profiles that agree exactly on all keys of at least one rule."""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl


@dataclass(frozen=True)
class BlockingRule:
    """Profiles agreeing on every key are candidates; ``max_block_size`` overrides the global
    limit for this rule (a name-only rule only pays for rare names)."""

    keys: tuple[str, ...]
    max_block_size: int | None = None

    @property
    def name(self) -> str:
        return " & ".join(self.keys)

    @classmethod
    def from_config(cls, entry: list[str] | dict) -> BlockingRule:
        """A rule is a list of keys, or ``{keys: [...], max_block_size: N}``."""
        if isinstance(entry, dict):
            return cls(tuple(entry["keys"]), entry.get("max_block_size"))
        return cls(tuple(entry))


@dataclass(frozen=True)
class RuleReport:
    rule: str
    pairs: int
    new_pairs: int
    skipped_blocks: int


def candidate_pairs(
    profiles: pl.DataFrame, rules: list[BlockingRule], max_block_size: int
) -> tuple[pl.DataFrame, list[RuleReport]]:
    """Union of every rule's pairs (``id_l < id_r``), without duplicates, and a report per rule.

    A block larger than ``max_block_size`` (a shared office phone, "info@") is skipped and counted:
    it would add n^2 pairs of which almost none are matches.
    """
    found = pl.DataFrame(schema={"id_l": pl.Int64, "id_r": pl.Int64})
    reports = []
    for rule in rules:
        keys = list(rule.keys)
        keyed = profiles.select("profile_id", *keys).drop_nulls()
        sizes = keyed.group_by(keys).len()
        skipped = sizes.filter(pl.col("len") > (rule.max_block_size or max_block_size))
        keyed = keyed.join(skipped.select(keys), on=keys, how="anti")
        pairs = (
            keyed.join(keyed, on=keys, suffix="_r")
            .filter(pl.col("profile_id") < pl.col("profile_id_r"))
            .select(pl.col("profile_id").alias("id_l"), pl.col("profile_id_r").alias("id_r"))
            .unique()
        )
        before = found.height
        found = pl.concat([found, pairs]).unique()
        reports.append(RuleReport(rule.name, pairs.height, found.height - before, skipped.height))
    return found.sort("id_l", "id_r"), reports
