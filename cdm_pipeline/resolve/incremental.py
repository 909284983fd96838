"""Incremental resolution: tonight's new identities against what is already resolved.

Pairs are scored by the stored model (m, u, prior and term frequencies), so a pair weighs tonight
what it weighed when it was first scored, and what it weighs in a full rebuild with that model.
Then only three things can change a cluster: a new profile with a match edge into it, one of its
profiles disappearing (erased, purged, edited), or a blocking key whose block crossed its size
limit (pairs appear or vanish). Those clusters' connected components, together with the new
profiles, are blocked, scored and clustered again from scratch; every other profile keeps its
component and cluster. Clustering depends only on one component's edges and judgements, so the
result is the one a full rebuild with the same model gives (``test_incremental_equals_full``).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import polars as pl

from cdm_pipeline.resolve.blocking import (
    BlockingRule,
    block_column,
    block_keys,
    candidate_pairs,
)
from cdm_pipeline.resolve.comparisons import Comparison, compare_pairs, default_comparisons
from cdm_pipeline.resolve.decisions import is_edge, leaning, score
from cdm_pipeline.resolve.engine import (
    Resolution,
    ResolvePlan,
    blocking_rules,
    link,
    split_resolvable,
)
from cdm_pipeline.resolve.profiles import DERIVED_KEYS, MATCH_FIELDS, build_profiles
from cdm_pipeline.resolve.scoring import ModelParameters

STATE_COLUMNS = ("component", "cluster", "link_decision")
NOT_IN_MODEL = (
    "floor_weight",
    "retrain_growth",
    "shards",
)  # settings that change no score or cluster
MODEL_VERSION = 5  # bump when scoring or clustering changes meaning: stored state is then stale


@dataclass
class ResolverState:
    """What the last run left: its model and every profile's component and cluster."""

    model: ModelParameters
    profiles: pl.DataFrame  # profile_id, match fields and blocking keys, *STATE_COLUMNS
    fingerprint: str  # of the settings the model was trained under
    trained_records: int  # person records the model was trained on


def model_fingerprint(settings: dict, comparisons: list[Comparison] | None = None) -> str:
    """Changing the blocking, thresholds or comparisons invalidates stored state and model."""
    comparisons = comparisons or default_comparisons()
    described = {
        "version": MODEL_VERSION,
        "settings": {k: v for k, v in settings.items() if k not in NOT_IN_MODEL},
        "comparisons": [[c.name, list(c.labels)] for c in comparisons],
    }
    return hashlib.sha256(json.dumps(described, sort_keys=True, default=str).encode()).hexdigest()


def resolve_incremental(
    records: pl.DataFrame,
    settings: dict,
    state: ResolverState,
    overrides: pl.DataFrame | None = None,
    comparisons: list[Comparison] | None = None,
) -> Resolution:
    """Resolve ``records`` (all current person records) reusing ``state`` from the last run."""
    comparisons = comparisons or default_comparisons()
    plan = plan_incremental(records, settings, state, overrides, comparisons)
    levels = compare_pairs(plan.pairs, plan.profiles, comparisons)
    return link(plan, levels, settings, overrides, comparisons)


def plan_incremental(
    records: pl.DataFrame,
    settings: dict,
    state: ResolverState,
    overrides: pl.DataFrame | None = None,
    comparisons: list[Comparison] | None = None,
) -> ResolvePlan:
    """Find what tonight changes: the new profiles and every component they, a vanished
    profile, a steward override or a block crossing its limit touch; plan to re-resolve those."""
    comparisons = comparisons or default_comparisons()
    records, unresolvable = split_resolvable(records)
    old = _stored_profiles(state.profiles, records.schema)
    # An erased profile's identity is blanked: if it comes back it is resolved as new.
    live = (old.filter(~pl.col("erased")) if old["erased"].any() else old).drop("erased", "recheck")
    profiles, membership = build_profiles(records, known=live)
    ids = profiles.select("profile_id")  # narrow frames from here: a wide filter copies text
    new_ids = ids.join(live.select("profile_id"), on="profile_id", how="anti")["profile_id"]
    gone_ids = old.select("profile_id").join(ids, on="profile_id", how="anti")["profile_id"]
    rules = blocking_rules(settings)
    limit = settings["max_block_size"]
    blocks = block_keys(profiles, rules).sort("profile_id")

    # New profiles against everyone: which existing components do they reach?
    budget = settings.get("max_pairs_per_record")
    low_yield = frozenset(state.model.low_yield_rules)
    probe, _ = candidate_pairs(
        profiles,
        rules,
        limit,
        focus=new_ids,
        blocks=blocks,
        max_pairs_per_record=budget,
        low_yield=low_yield,
    )
    probe = score(
        compare_pairs(probe, profiles, comparisons),
        profiles,
        comparisons,
        state.model,
        settings,
    )
    # A nameless record leaning to a customer may make another one ambiguous: both are re-clustered.
    reached = (
        probe.filter(is_edge() | leaning())
        .select(ids=pl.concat_list("id_l", "id_r"))
        .explode("ids")
    )
    departed = block_keys(old.filter(pl.col("profile_id").is_in(gone_ids.implode())), rules)
    arrived = blocks.filter(pl.col("profile_id").is_in(new_ids.implode()))
    seeds = pl.concat(
        [
            reached["ids"],
            gone_ids,
            _override_profiles(overrides, membership),
            _crossing_block_profiles(blocks, arrived, departed, rules, limit),
            old.filter(pl.col("recheck"))["profile_id"],  # blocks an erasure shrank
        ]
    )
    components = old.select("profile_id", "component")
    affected = components.filter(pl.col("profile_id").is_in(seeds.implode()))["component"].unique()
    staying = profiles.select("profile_id", "component")
    refreshed = pl.concat(
        [new_ids, staying.filter(pl.col("component").is_in(affected.implode()))["profile_id"]]
    ).sort()
    in_plan = pl.col("profile_id").is_in(refreshed.implode())
    pairs, report = candidate_pairs(
        profiles,
        rules,
        limit,
        within=refreshed,
        blocks=blocks,
        max_pairs_per_record=budget,
        low_yield=low_yield,
    )
    # Pairs of a new profile with an untouched one are no match edges (else the untouched one's
    # component would be affected); they are kept for match_pairs all the same.
    outside = probe.filter(
        ~(pl.col("id_l").is_in(refreshed.implode()) & pl.col("id_r").is_in(refreshed.implode()))
    ).with_columns(linked=pl.lit(False))
    stored = [c for c in (*STATE_COLUMNS, "cluster_key") if c in profiles.columns]
    return ResolvePlan(
        mode="incremental",
        profiles=profiles.drop(stored),
        membership=membership,
        unresolvable=unresolvable,
        pairs=pairs,
        report=report,
        model=state.model,
        refreshed=refreshed,
        gone=gone_ids,
        kept=profiles.select("profile_id", *stored).filter(~in_plan),
        outside=outside,
        stats={"new_profiles": new_ids.len(), "probe_pairs": probe.height},
    )


def _stored_profiles(stored: pl.DataFrame, schema: pl.Schema) -> pl.DataFrame:
    """Last night's profiles with tonight's column types and both erasure flags."""
    old = stored.with_columns(pl.col(c).cast(schema[c]) for c in (*MATCH_FIELDS, *DERIVED_KEYS))
    for flag in ("erased", "recheck"):
        if flag not in old.columns:
            old = old.with_columns(pl.lit(False).alias(flag))
    return old.with_columns(pl.col("erased", "recheck").fill_null(False))


def _override_profiles(overrides: pl.DataFrame | None, membership: pl.DataFrame) -> pl.Series:
    """Profiles named by a steward override: re-clustered every night, so an edited overrides
    file takes effect without a full rebuild."""
    if overrides is None or overrides.height == 0:
        return pl.Series("profile_id", [], pl.Int64)
    keys = pl.concat(
        [
            overrides.select(record_key=pl.col("source_l") + ":" + pl.col("record_id_l")),
            overrides.select(record_key=pl.col("source_r") + ":" + pl.col("record_id_r")),
        ]
    )
    return membership.join(keys, on="record_key", how="semi")["profile_id"]


def _crossing_block_profiles(
    blocks: pl.DataFrame,
    arrived: pl.DataFrame,
    departed: pl.DataFrame,
    rules: list[BlockingRule],
    limit: int,
) -> pl.Series:
    """Profiles in a block that grew past its size limit (its pairs vanish) or shrank under it
    (its pairs appear) since the last run. All three frames are ``block_keys`` of, in turn, the
    profiles now, the new ones and the vanished ones. Only blocks holding a new or vanished
    profile can cross; a block's size last night is its size now, less its new profiles, plus
    its vanished ones."""
    found = [pl.Series("profile_id", [], pl.Int64)]
    for number, rule in enumerate(rules):
        column = block_column(number)
        rule_limit = rule.max_block_size or limit
        came = arrived.select(block=column).drop_nulls().group_by("block").len("arrived")
        left = departed.select(block=column).drop_nulls().group_by("block").len("left")
        touched = pl.concat([came.select("block"), left.select("block")]).unique()
        now = blocks.select("profile_id", block=column)
        sizes = (
            now.join(touched, on="block", how="semi")
            .group_by("block")
            .len("now")
            .join(touched, on="block", how="right")
            .join(came, on="block", how="left")
            .join(left, on="block", how="left")
            .with_columns(pl.col("now", "arrived", "left").fill_null(0))
            .with_columns(before=pl.col("now") - pl.col("arrived") + pl.col("left"))
        )
        crossed = sizes.filter((pl.col("now") > rule_limit) != (pl.col("before") > rule_limit))
        if crossed.height:
            found.append(now.join(crossed, on="block", how="semi")["profile_id"])
    return pl.concat(found)


def blocks_left_under_limit(
    profiles: pl.DataFrame, leaving: pl.Series, rules: list[BlockingRule], limit: int
) -> pl.Series:
    """Profiles in a block that the ``leaving`` profiles' removal takes from above its size limit
    to within it (its pairs will appear). Erasure calls this before blanking the leaving
    profiles' keys, so the next incremental run knows which components to look at again."""
    blocks = block_keys(profiles, rules).sort("profile_id")
    is_leaving = pl.col("profile_id").is_in(leaving.implode())
    crossed = _crossing_block_profiles(
        blocks.filter(~is_leaving), blocks.clear(), blocks.filter(is_leaving), rules, limit
    )
    return crossed.unique()
