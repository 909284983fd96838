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

from cdm_pipeline.resolve.blocking import BlockingRule, candidate_pairs
from cdm_pipeline.resolve.comparisons import Comparison, compare_pairs, default_comparisons
from cdm_pipeline.resolve.engine import (
    Resolution,
    ResolvePlan,
    blocking_rules,
    is_edge,
    link,
    score,
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
MODEL_VERSION = 1  # bump when scoring or clustering changes meaning: stored state is then stale


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
    profiles, membership = build_profiles(records)
    old = state.profiles.with_columns(
        pl.col(c).cast(profiles.schema[c]) for c in (*MATCH_FIELDS, *DERIVED_KEYS)
    )
    for flag in ("erased", "recheck"):
        if flag not in old.columns:
            old = old.with_columns(pl.lit(False).alias(flag))
    new_ids = profiles.join(old, on="profile_id", how="anti")["profile_id"]
    gone_ids = old.join(profiles, on="profile_id", how="anti")["profile_id"]
    rules = blocking_rules(settings)
    limit = settings["max_block_size"]

    identity = [*MATCH_FIELDS, *DERIVED_KEYS]
    arrived = profiles.filter(pl.col("profile_id").is_in(new_ids.implode())).select(identity)
    departed = old.filter(pl.col("profile_id").is_in(gone_ids.implode())).select(identity)
    # New profiles against everyone: which existing components do they reach?
    probe, _ = candidate_pairs(profiles, rules, limit, focus=new_ids)
    probe = score(
        compare_pairs(probe, profiles, comparisons),
        profiles,
        comparisons,
        state.model,
        settings,
        membership,
        None,
    )
    reached = probe.filter(is_edge()).select(ids=pl.concat_list("id_l", "id_r")).explode("ids")
    seeds = pl.concat(
        [
            reached["ids"],
            gone_ids,
            _override_profiles(overrides, membership),
            _crossing_block_profiles(profiles, old, arrived, departed, rules, limit),
            old.filter(pl.col("recheck"))["profile_id"],  # blocks an erasure shrank
        ]
    )
    affected = old.filter(pl.col("profile_id").is_in(seeds.implode()))["component"].unique()
    staying = profiles.join(old.select("profile_id", *STATE_COLUMNS), on="profile_id")
    refreshed = pl.concat(
        [
            new_ids,
            staying.filter(pl.col("component").is_in(affected.implode()))["profile_id"],
        ]
    ).sort()
    in_plan = pl.col("profile_id").is_in(refreshed.implode())
    pairs, report = candidate_pairs(profiles, rules, limit, within=refreshed)
    # Pairs of a new profile with an untouched one are no match edges (else the untouched one's
    # component would be affected); they are kept for match_pairs all the same.
    outside = probe.filter(
        ~(pl.col("id_l").is_in(refreshed.implode()) & pl.col("id_r").is_in(refreshed.implode()))
    ).with_columns(linked=pl.lit(False))
    return ResolvePlan(
        mode="incremental",
        profiles=profiles,
        membership=membership,
        unresolvable=unresolvable,
        pairs=pairs,
        report=report,
        model=state.model,
        refreshed=refreshed,
        gone=gone_ids,
        kept=staying.filter(~in_plan),
        outside=outside,
        stats={"new_profiles": new_ids.len(), "probe_pairs": probe.height},
    )


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
    profiles: pl.DataFrame,
    old: pl.DataFrame,
    new: pl.DataFrame,
    gone: pl.DataFrame,
    rules: list[BlockingRule],
    limit: int,
) -> pl.Series:
    """Profiles in a block that grew past its size limit (its pairs vanish) or shrank under it
    (its pairs appear) since the last run. Only blocks holding a new or vanished profile can;
    a block's size last night is its size now, less its new profiles, plus its vanished ones."""
    found = [pl.Series("profile_id", [], pl.Int64)]
    for rule in rules:
        keys = list(rule.keys)
        rule_limit = rule.max_block_size or limit
        arrived = new.select(keys).drop_nulls().group_by(keys).len("arrived")
        left = gone.select(keys).drop_nulls().group_by(keys).len("left")
        touched = pl.concat([arrived.select(keys), left.select(keys)]).unique()
        sizes = (
            profiles.select(keys)
            .join(touched, on=keys, how="semi")
            .group_by(keys)
            .len("now")
            .join(touched, on=keys, how="right")
            .join(arrived, on=keys, how="left")
            .join(left, on=keys, how="left")
            .with_columns(pl.col("now", "arrived", "left").fill_null(0))
            .with_columns(before=pl.col("now") - pl.col("arrived") + pl.col("left"))
        )
        crossed = sizes.filter(
            (pl.col("now") > rule_limit) != (pl.col("before") > rule_limit)
        ).select(keys)
        if crossed.height:
            for frame in (profiles, old):
                found.append(frame.join(crossed, on=keys, how="semi")["profile_id"])
    return pl.concat(found)


def blocks_left_under_limit(
    profiles: pl.DataFrame, leaving: pl.Series, rules: list[BlockingRule], limit: int
) -> pl.Series:
    """Profiles in a block that the ``leaving`` profiles' removal takes from above its size limit
    to within it (its pairs will appear). Erasure calls this before blanking the leaving
    profiles' keys, so the next incremental run knows which components to look at again."""
    is_leaving = pl.col("profile_id").is_in(leaving.implode())
    staying = profiles.filter(~is_leaving)
    crossed = _crossing_block_profiles(
        staying, staying, profiles.clear(), profiles.filter(is_leaving), rules, limit
    )
    return crossed.unique()
