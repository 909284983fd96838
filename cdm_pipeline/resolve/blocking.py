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
    profiles: pl.DataFrame,
    rules: list[BlockingRule],
    max_block_size: int,
    focus: pl.Series | None = None,
    within: pl.Series | None = None,
) -> tuple[pl.DataFrame, list[RuleReport]]:
    """Union of every rule's pairs (``id_l < id_r``), without duplicates, and a report per rule.

    A block larger than ``max_block_size`` (a shared office phone, "info@") is skipped and counted:
    it would add n^2 pairs of which almost none are matches. Block sizes are always counted over
    all ``profiles``; ``focus`` keeps only pairs with at least one end in it (tonight's new
    profiles) and ``within`` only pairs with both ends in it, so that an incremental run proposes
    exactly the pairs a full run would.
    """
    found = pl.DataFrame(schema={"id_l": pl.Int64, "id_r": pl.Int64})
    reports = []
    for rule in rules:
        keys = list(rule.keys)
        keyed = profiles.select("profile_id", *keys).drop_nulls()
        pool = (
            keyed if within is None else keyed.filter(pl.col("profile_id").is_in(within.implode()))
        )
        left = pool if focus is None else pool.filter(pl.col("profile_id").is_in(focus.implode()))
        # Sizes of the blocks the left side can reach, counted over all profiles.
        counted = (
            keyed
            if focus is None and within is None
            else keyed.join(left.select(keys).unique(), on=keys, how="semi")
        )
        skipped = oversized_blocks(counted, rule, max_block_size)
        left = left.join(skipped, on=keys, how="anti")
        pairs = (
            left.join(pool, on=keys, suffix="_r")
            .filter(pl.col("profile_id") != pl.col("profile_id_r"))
            .select(
                id_l=pl.min_horizontal("profile_id", "profile_id_r"),
                id_r=pl.max_horizontal("profile_id", "profile_id_r"),
            )
            .unique()
        )
        before = found.height
        found = pl.concat([found, pairs]).unique()
        reports.append(RuleReport(rule.name, pairs.height, found.height - before, skipped.height))
    return found.sort("id_l", "id_r"), reports


def oversized_blocks(keyed: pl.DataFrame, rule: BlockingRule, max_block_size: int) -> pl.DataFrame:
    """The key values of ``rule`` held by more profiles than its limit."""
    keys = list(rule.keys)
    sizes = keyed.select(keys).drop_nulls().group_by(keys).len()
    return sizes.filter(pl.col("len") > (rule.max_block_size or max_block_size)).select(keys)
