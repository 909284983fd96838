"""Blocking: candidate pairs are profiles that agree exactly on all keys of at least one rule."""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl


@dataclass(frozen=True)
class BlockingRule:
    """Profiles agreeing on every key are candidates; ``max_block_size`` and
    ``max_pairs_per_record`` override the global limits for this rule (a name-only rule only
    pays for rare names; a rule that rescues few pairs is used only where it is cheap).

    A key is a profile column (``birth_date``) or its first characters (``first_name_key:3``, as
    Splink's ``substr(first_name, 1, 3)``): a prefix survives a typo later in the value.
    """

    keys: tuple[str, ...]
    max_block_size: int | None = None
    max_pairs_per_record: float | None = None

    def __post_init__(self) -> None:
        for key in self.keys:
            _, _, length = key.partition(":")
            if length and not (length.isdigit() and int(length) > 0):
                raise ValueError(f"blocking key {key!r}: a prefix length is a positive number")

    @property
    def name(self) -> str:
        return " & ".join(self.keys)

    @property
    def columns(self) -> tuple[str, ...]:
        """The profile columns the keys read."""
        return tuple(key.partition(":")[0] for key in self.keys)

    def expressions(self) -> list[pl.Expr]:
        """One expression per key, named after the key."""
        out = []
        for key in self.keys:
            column, _, length = key.partition(":")
            value = pl.col(column)
            if length:
                value = value.cast(pl.String).str.slice(0, int(length))
            out.append(value.alias(key))
        return out

    @classmethod
    def from_config(cls, entry: list[str] | dict) -> BlockingRule:
        """A rule is a list of keys, or ``{keys: [...], max_block_size: N,
        max_pairs_per_record: X}`` (either limit optional)."""
        if isinstance(entry, dict):
            return cls(
                tuple(entry["keys"]),
                entry.get("max_block_size"),
                entry.get("max_pairs_per_record"),
            )
        return cls(tuple(entry))


@dataclass(frozen=True)
class RuleReport:
    rule: str
    pairs: int  # pairs the rule proposed tonight
    new_pairs: int  # ... that no earlier rule proposed
    skipped_blocks: int  # blocks over the size limit, left out
    rule_pairs: int = 0  # pairs the rule makes over every profile (from key frequencies)
    over_budget: bool = False  # left out whole: more pairs than the budget allows
    linked_pairs: int = 0  # ... of its new pairs, those linked (filled when written)
    sampled_pairs: int = 0  # of its new pairs, those compared first to judge its yield
    sampled_links: int = 0  # ... of which the model linked
    low_yield: bool = False  # left out: its sample linked too few (``yield_gate``)


def block_keys(profiles: pl.DataFrame, rules: list[BlockingRule]) -> pl.DataFrame:
    """``profile_id`` and one 64-bit hash per rule of the profile's key values (null when a key
    is missing). Joining and counting blocks on one integer instead of several strings makes
    every pass over a million profiles cheap; an incremental run hashes once and passes this to
    every step. Two different keys sharing a hash (about 1 in 10^7 at a million keys) only add
    pairs that are then compared like any other."""
    return profiles.select(
        "profile_id",
        *[
            pl.when(pl.all_horizontal(pl.col(c).is_not_null() for c in rule.columns))
            .then(pl.struct(rule.expressions()).hash())
            .alias(block_column(number))
            for number, rule in enumerate(rules)
        ],
    )


def candidate_pairs(
    profiles: pl.DataFrame,
    rules: list[BlockingRule],
    max_block_size: int,
    focus: pl.Series | None = None,
    within: pl.Series | None = None,
    blocks: pl.DataFrame | None = None,
    max_pairs_per_record: float | None = None,
    low_yield: frozenset[str] = frozenset(),
) -> tuple[pl.DataFrame, list[RuleReport]]:
    """Union of every rule's pairs (``id_l < id_r``), without duplicates, and a report per rule.

    A block larger than ``max_block_size`` (a shared office phone, "info@") is skipped and counted:
    it would add n^2 pairs of which almost none are matches. A rule is costed before any pair is
    made, from its key frequencies (as Splink's ``count_comparisons_from_blocking_rule``): one
    that would make more than ``max_pairs_per_record`` pairs per profile is left out whole and
    reported (a birth date alone is cheap among five thousand people and costs tens of millions
    of pairs among a million). Sizes are always counted over all ``profiles``; ``focus`` keeps
    only pairs with at least one end in it (tonight's new profiles) and ``within`` only pairs
    with both ends in it, so that an incremental run proposes exactly the pairs a full run
    would. ``blocks`` is ``block_keys(profiles, rules)`` if known. Rules named in ``low_yield``
    (the model's ``low_yield_rules``) are left out and reported so.
    """
    if blocks is None:
        blocks = block_keys(profiles, rules)
    ordered = blocks if blocks["profile_id"].is_sorted() else blocks.sort("profile_id")
    ids = ordered["profile_id"]
    indexed = ordered.with_row_index(
        "ix"
    )  # row order is id order, so ix_l < ix_r means id_l < id_r
    per_rule, reports = [], []
    budget = (max_pairs_per_record or float("inf")) * max(ids.len(), 1)
    for number, rule in enumerate(rules):
        keyed = indexed.select("ix", "profile_id", block=block_column(number)).drop_nulls("block")
        limit = rule.max_block_size or max_block_size
        rule_pairs = _rule_pairs(keyed, limit)
        if rule.max_pairs_per_record is not None:
            over = rule_pairs > rule.max_pairs_per_record * max(ids.len(), 1)
        else:
            over = rule_pairs > budget
        if over or rule.name in low_yield:
            reports.append((rule.name, 0, 0, rule_pairs, over))
            continue
        pool = (
            keyed if within is None else keyed.filter(pl.col("profile_id").is_in(within.implode()))
        )
        left = pool if focus is None else pool.filter(pl.col("profile_id").is_in(focus.implode()))
        # Sizes of the blocks the left side can reach, counted over all profiles.
        counted = (
            keyed
            if focus is None and within is None
            else keyed.join(left.select("block").unique(), on="block", how="semi")
        )
        skipped = _oversized(counted, limit)
        left = left.join(skipped, on="block", how="anti")
        joined = left.select("ix", "block").join(
            pool.select("ix", "block"), on="block", suffix="_r"
        )
        joined = joined.filter(
            pl.col("ix") < pl.col("ix_r") if focus is None else pl.col("ix") != pl.col("ix_r")
        )
        pairs = joined.select(pair=_pack(pl.col("ix"), pl.col("ix_r")))
        if focus is not None:  # both ends in focus: the pair was found from each side
            pairs = pairs.unique()
        # (Otherwise each pair is found once: a profile has one block per rule.)
        per_rule.append(pairs.with_columns(rule=pl.lit(number, pl.UInt16)))
        reports.append((rule.name, pairs.height, skipped.height, rule_pairs, False))
        del joined, pairs
    # Each pair once, credited to the first rule that proposed it: a stable sort keeps the
    # rules in order within a pair (a sort needs less memory than a group-by at 10^8 pairs).
    empty = pl.DataFrame(schema={"pair": pl.UInt64, "rule": pl.UInt16})
    first = pl.concat([empty, *per_rule]).sort("pair", maintain_order=True)
    del per_rule
    first = first.filter(pl.col("pair").ne_missing(pl.col("pair").shift(1)))
    new = dict(first.group_by("rule").len().iter_rows())
    found = first.select(
        id_l=ids.gather(first["pair"] // _SHIFT),
        id_r=ids.gather(first["pair"] % _SHIFT),
        blocking_rule="rule",
    )
    return found, [
        RuleReport(
            name,
            made,
            new.get(number, 0),
            skipped,
            rule_pairs,
            over,
            low_yield=not over and name in low_yield,
        )
        for number, (name, made, skipped, rule_pairs, over) in enumerate(reports)
    ]


def _rule_pairs(keyed: pl.DataFrame, limit: int) -> int:
    """Pairs a rule makes over every profile, blocks over ``limit`` left out."""
    sizes = keyed.group_by("block").len()["len"].cast(pl.Int64)
    sizes = sizes.filter(sizes <= limit)
    return int((sizes * (sizes - 1) // 2).sum())


def block_column(number: int) -> str:
    """The ``block_keys`` column of rule ``number``."""
    return f"block_{number}"


def _oversized(keyed: pl.DataFrame, limit: int) -> pl.DataFrame:
    sizes = keyed.group_by("block").len()
    return sizes.filter(pl.col("len") > limit).select("block")


_SHIFT = 1 << 32  # a pair of row numbers packed into one UInt64: unique() on one column is fast


def _pack(a: pl.Expr, b: pl.Expr) -> pl.Expr:
    low, high = pl.min_horizontal(a, b).cast(pl.UInt64), pl.max_horizontal(a, b).cast(pl.UInt64)
    return low * _SHIFT + high


def oversized_blocks(keyed: pl.DataFrame, rule: BlockingRule, max_block_size: int) -> pl.DataFrame:
    """The key values of ``rule`` held by more profiles than its limit."""
    keys = list(rule.keys)
    sizes = keyed.select(rule.expressions()).drop_nulls().group_by(keys).len()
    return sizes.filter(pl.col("len") > (rule.max_block_size or max_block_size)).select(keys)
