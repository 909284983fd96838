"""Run the resolver end to end on standardised person records (no Dagster, no warehouse)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import polars as pl

from cdm_pipeline.resolve.blocking import BlockingRule, RuleReport, candidate_pairs
from cdm_pipeline.resolve.clustering import (
    PairGraph,
    cluster_profiles,
    mark_linked,
    with_cluster_keys,
    with_link_decision,
)
from cdm_pipeline.resolve.comparisons import (
    Comparison,
    compare_pairs,
    default_comparisons,
)
from cdm_pipeline.resolve.decisions import (
    decision_of,
    flag_overrides,
    resolvable,
    score,
    steward_pairs,
)
from cdm_pipeline.resolve.profiles import DERIVED_KEYS, MATCH_FIELDS, build_profiles
from cdm_pipeline.resolve.scoring import ModelParameters
from cdm_pipeline.resolve.training import estimate_u, level_patterns, train_model
from cdm_pipeline.resolve.yield_gate import (
    YieldGate,
    pattern_weights,
    sample_links,
    sample_rules,
    weighted,
)


@dataclass
class Resolution:
    profiles: pl.DataFrame  # every profile: match fields, component, cluster, link_decision
    membership: pl.DataFrame  # record_key -> profile_id
    pairs: pl.DataFrame  # pairs scored in this run, with levels, weights, decisions
    params: ModelParameters
    blocking: list[RuleReport]
    clusters: pl.DataFrame  # record_key -> profile_id, cluster_key (smallest record key)
    mode: str = "full"  # full | incremental
    # Profiles whose pairs among themselves were scored again in this run (all of them in a full
    # run) and profiles of the previous run that no longer exist: what match_pairs must replace.
    refreshed: pl.Series = field(default_factory=lambda: pl.Series("profile_id", [], pl.Int64))
    gone: pl.Series = field(default_factory=lambda: pl.Series("profile_id", [], pl.Int64))
    stats: dict[str, float] = field(default_factory=dict)
    # Set when the scored pairs were written to disk piece by piece (``link(spill=...)``): then
    # ``pairs`` is empty and ``scored_pairs`` reads them back.
    pair_files: list[Path] = field(default_factory=list)

    def scored_pairs(self) -> Iterator[pl.DataFrame]:
        """Every pair scored in this run, a piece at a time, with ``linked``."""
        if not self.pair_files:
            yield self.pairs
            return
        clusters = self.profiles.select(node="profile_id", cluster="cluster")
        for path in self.pair_files:
            piece = pl.read_parquet(path)
            yield piece if "linked" in piece.columns else mark_linked(piece, clusters)


@dataclass
class ResolvePlan:
    """What a run compares (the costly part, which can run in shards on other processes) and
    everything needed to score and cluster afterwards (``link``)."""

    mode: str  # full | incremental
    profiles: pl.DataFrame  # every current profile
    membership: pl.DataFrame  # record_key -> profile_id
    unresolvable: pl.DataFrame  # record keys of records with nothing to link on
    pairs: pl.DataFrame  # id_l, id_r: the pairs to compare
    report: list[RuleReport]
    model: ModelParameters | None  # None: learn it from the compared pairs first
    refreshed: pl.Series  # profiles to cluster (all of them in a full run)
    gone: pl.Series = field(default_factory=lambda: pl.Series("profile_id", [], pl.Int64))
    # Incremental: ``profile_id`` and stored state of the profiles that keep it (not re-clustered),
    # in ``profiles``' order; their identity columns are in ``profiles``.
    kept: pl.DataFrame | None = None
    outside: pl.DataFrame | None = None  # incremental: scored pairs of new x untouched profiles
    # Pairs of rules under the yield gate beyond their samples: compared only if a sample links
    # enough (``yield_gate``).
    set_aside: pl.DataFrame | None = None
    stats: dict[str, float] = field(default_factory=dict)


def resolve(
    records: pl.DataFrame,
    settings: dict,
    overrides: pl.DataFrame | None = None,
    comparisons: list[Comparison] | None = None,
    model: ModelParameters | None = None,
) -> Resolution:
    """Link standardised person records into clusters (``settings`` is pipeline.yaml's
    ``resolve`` section; ``overrides`` the steward's must-link / cannot-link pairs). Without a
    ``model`` one is trained on these records first; with one, every pair is scored by it (a
    full rebuild that gives what incremental runs with that model give)."""
    comparisons = comparisons or default_comparisons()
    plan = plan_full(records, settings, model)
    levels = compare_pairs(plan.pairs, plan.profiles, comparisons)
    return link(plan, levels, settings, overrides, comparisons)


def plan_full(
    records: pl.DataFrame, settings: dict, model: ModelParameters | None = None
) -> ResolvePlan:
    """Every profile, every candidate pair. Learning a model, a rule with many new pairs is
    planned as a sample (``yield_gate``); with one, the rules it found of low yield are left out."""
    records, unresolvable = split_resolvable(records)
    profiles, membership = build_profiles(records)
    pairs, report = candidate_pairs(
        profiles,
        blocking_rules(settings),
        settings["max_block_size"],
        max_pairs_per_record=settings.get("max_pairs_per_record"),
        low_yield=frozenset(model.low_yield_rules) if model else frozenset(),
    )
    set_aside = None
    if model is None:
        pairs, set_aside, report = sample_rules(pairs, report, YieldGate.from_settings(settings))
    return ResolvePlan(
        "full",
        profiles,
        membership,
        unresolvable,
        pairs,
        report,
        model,
        profiles["profile_id"],
        set_aside=set_aside,
    )


def link(
    plan: ResolvePlan,
    levels: pl.DataFrame | list[Path],
    settings: dict,
    overrides: pl.DataFrame | None = None,
    comparisons: list[Comparison] | None = None,
    spill: Path | None = None,
) -> Resolution:
    """Score the compared pairs (learning the model first if the plan has none), then cluster
    the plan's profiles. ``levels`` is one frame, or the shards' level files in any order. With
    ``spill`` (a folder) the levels are scored a slice at a time and the scored pairs written
    there: memory holds the match edges and the steward's pairs (``PairGraph``), not every
    scored pair, which is what lets ten million records resolve on one machine."""
    comparisons = comparisons or default_comparisons()
    pieces = _level_pieces(levels, comparisons)
    weights = {} if plan.model else pattern_weights(plan.report)
    model = plan.model or train(
        weighted(
            level_patterns(
                pl.concat([level_patterns(p, comparisons) for p in pieces()]), comparisons
            ),
            weights,
        ),
        plan.profiles,
        comparisons,
        settings,
        plan.report,
    )
    incremental = plan.kept is not None
    in_plan = pl.col("profile_id").is_in(plan.refreshed.implode())
    membership = plan.membership.filter(in_plan) if incremental else plan.membership
    steward = steward_pairs(membership, overrides)
    graph = PairGraph()
    held: list[pl.DataFrame] = []
    files: list[Path] = []

    def keep(scored: pl.DataFrame) -> pl.DataFrame | Path:
        if spill is None:
            held.append(scored)
            return scored
        files.append(spill / f"scored-{len(files):03d}.parquet")
        scored.write_parquet(files[-1])
        return files[-1]

    schema = None
    samples: list[pl.DataFrame] = []
    for piece in pieces():
        scored = score(piece, plan.profiles, comparisons, model, settings, steward)
        schema = scored.schema
        if weights:  # a sampled rule's pairs wait for the gate's decision
            sampled = pl.col("blocking_rule").is_in(list(weights))
            samples.append(scored.filter(sampled))
            scored = scored.filter(~sampled)
        graph.add(scored, keep(scored))
    if weights:
        plan.report = _through_yield_gate(
            plan, samples, model, settings, steward, comparisons, lambda s: graph.add(s, keep(s))
        )
        del samples
    extra = _unproposed(steward, graph, schema, settings)
    if extra.height:
        graph.add(extra, keep(extra))
    subset = plan.profiles.filter(in_plan) if incremental else plan.profiles
    labels, ambiguous = cluster_profiles(subset, graph)
    edges = mark_linked(graph.frame("edges"), labels)
    # The clustering's columns are joined to the profile ids alone and put beside the wide
    # identity columns (a join of the wide frame would copy all of them).
    state = subset.select("profile_id").join(
        labels.rename({"node": "profile_id"}), on="profile_id", how="left", maintain_order="left"
    )
    state = with_link_decision(state, edges)
    if not state["profile_id"].equals(subset["profile_id"]):
        raise RuntimeError("clustering state out of step with the profiles")
    profiles = subset.hstack(state.drop("profile_id"))
    if incremental:
        kept = plan.profiles.filter(~in_plan)  # in the order plan.kept was taken
        if not kept["profile_id"].equals(plan.kept["profile_id"]):
            raise RuntimeError("the plan's kept profiles are out of step with its profiles")
        kept = kept.hstack(plan.kept.drop("profile_id"))
        if "cluster_key" in kept.columns:
            profiles = profiles.with_columns(cluster_key=pl.lit(None, pl.String))
        profiles = pl.concat([kept, profiles.select(kept.columns)])
        graph.count(plan.outside)
    scored = pl.DataFrame()
    if spill is None:
        scored = mark_linked(pl.concat(held), labels)
        if incremental:
            scored = pl.concat([scored, plan.outside.select(scored.columns)])
    elif incremental:
        keep(plan.outside)
    result = Resolution(
        profiles, plan.membership, scored, model, plan.report, pl.DataFrame(), mode=plan.mode
    )
    result.pair_files = files
    counts = {
        "candidate_pairs": graph.pairs,
        "match_edges": edges.height,
        "edges_refused_by_guard": edges.height - int(edges["linked"].sum()),
        "cannot_link_pairs": graph.cannot_link,
    }
    result = finish_resolution(
        result,
        plan.unresolvable,
        refreshed=plan.refreshed,
        ambiguous=ambiguous,
        gone=plan.gone,
        counts=counts,
    )
    result.stats.update(plan.stats)
    return result


def _through_yield_gate(
    plan: ResolvePlan,
    samples: list[pl.DataFrame],
    model: ModelParameters,
    settings: dict,
    steward: pl.DataFrame,
    comparisons: list[Comparison],
    add: Callable[[pl.DataFrame], None],
) -> list[RuleReport]:
    """Judge each sampled rule by its scored sample: one that links enough has its sample and its
    set-aside pairs compared, scored and ``add``-ed; one that does not is left out whole and
    written into the model. Returns the report with each decision."""
    gate = YieldGate.from_settings(settings)
    scored_samples = pl.concat(samples)
    links = sample_links(scored_samples, [n for n, r in enumerate(plan.report) if r.sampled_pairs])
    report = list(plan.report)
    for number, rule in enumerate(report):
        if not rule.sampled_pairs:
            continue
        found = links.get(number, 0)
        passes = gate is not None and gate.passes(found, rule.sampled_pairs)
        report[number] = replace(rule, sampled_links=found, low_yield=not passes)
        if not passes:
            model.low_yield_rules.append(rule.rule)
            continue
        add(scored_samples.filter(pl.col("blocking_rule") == number))
        rest = plan.set_aside.filter(pl.col("blocking_rule") == number).sort("id_l", "id_r")
        for start in range(0, rest.height, GATED_PIECE_PAIRS):
            piece = rest.slice(start, GATED_PIECE_PAIRS)
            levels = compare_pairs(piece, plan.profiles, comparisons)
            add(score(levels, plan.profiles, comparisons, model, settings, steward))
    return report


def _level_pieces(
    levels: pl.DataFrame | list[Path], comparisons: list[Comparison]
) -> Callable[[], Iterator[pl.DataFrame]]:
    """A way to go over the levels a piece at a time, as often as needed: a frame is one piece
    (sorted, so that the result does not depend on the order pairs were compared in), a list of
    files a piece per file."""
    if isinstance(levels, pl.DataFrame):
        ordered = levels.sort("id_l", "id_r")
        return lambda: iter([ordered])
    paths = sorted(levels)
    if not paths:
        empty = pl.DataFrame(
            schema={
                "id_l": pl.Int64,
                "id_r": pl.Int64,
                **{f"{c.name}_level": pl.Int8 for c in comparisons},
            }
        )
        return lambda: iter([empty])
    return lambda: (piece for path in paths for piece in _file_pieces(path))


# Pairs scored at a time from a shard's level file: a piece, scored, is ~130 bytes a pair.
LINK_PIECE_PAIRS = 2_000_000
# Set-aside pairs compared at a time in the link step, beside every profile held in memory:
# smaller than a shard's pieces, as the joined text of both sides is held too.
GATED_PIECE_PAIRS = 500_000


def _file_pieces(path: Path) -> Iterator[pl.DataFrame]:
    """A level file in slices of ``LINK_PIECE_PAIRS`` rows (Parquet reads only their row
    groups), so that a piece's memory does not grow with the shard."""
    rows = pl.scan_parquet(path).select(pl.len()).collect().item()
    for start in range(0, max(rows, 1), LINK_PIECE_PAIRS):
        yield pl.scan_parquet(path).slice(start, LINK_PIECE_PAIRS).collect()


def train(
    patterns: pl.DataFrame,
    profiles: pl.DataFrame,
    comparisons: list[Comparison],
    settings: dict,
    report: list[RuleReport] | None = None,
) -> ModelParameters:
    """u from the profiles, m and h by EM over the candidate pairs' levels (``level_patterns``:
    each distinct row of levels and its count), the class shares, the term frequencies:
    everything scoring needs, learnt without labels. ``report`` (the blocking's) says which
    rules ran: a field blocked on alone by a rule that ran has every pair sharing a value among
    the candidates, which ``identifier_u`` counts on."""
    u = estimate_u(profiles, comparisons)
    rules = blocking_rules(settings)
    ran = [
        r
        for r, done in zip(rules, report or [None] * len(rules), strict=True)
        if not (done and done.over_budget)
    ]
    alone = {rule.columns[0] for rule in ran if len(rule.columns) == 1 and ":" not in rule.keys[0]}
    return (
        train_model(patterns, comparisons, u, settings, rules, profiles.height, alone)
        .with_global_priors(int(patterns["pairs"].sum()), profiles.height)
        .with_term_frequencies(profiles, comparisons)
    )


def blocking_rules(settings: dict) -> list[BlockingRule]:
    return [BlockingRule.from_config(entry) for entry in settings["blocking_rules"]]


def split_resolvable(records: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(records that can be linked, the keys of those that cannot), keeping only the columns
    the resolver reads: person records carry every original value too, and copying those would
    double the resolver's memory at a million people."""
    records = records.select("record_key", *MATCH_FIELDS, *DERIVED_KEYS)
    linkable = records.select(resolvable()).to_series()
    if linkable.all():  # the usual case: no copy
        return records, records.clear().select("record_key")
    return records.filter(linkable), records.filter(~linkable).select("record_key")


def finish_resolution(
    result: Resolution,
    unresolvable: pl.DataFrame,
    refreshed: pl.Series,
    ambiguous: int,
    gone: pl.Series | None = None,
    counts: dict[str, int] | None = None,
) -> Resolution:
    """Record-level clusters and run statistics (``counts``: of the scored pairs, from ``link``)."""
    result.profiles = with_cluster_keys(result.profiles)
    record_clusters = result.membership.join(
        result.profiles.select("profile_id", "cluster_key"), on="profile_id", how="left"
    ).select("record_key", "profile_id", "cluster_key")
    result.clusters = pl.concat(
        [
            record_clusters,
            unresolvable.select(
                "record_key", profile_id=pl.lit(None, pl.Int64), cluster_key=pl.lit(None, pl.String)
            ),
        ]
    )
    result.refreshed = refreshed
    if gone is not None:
        result.gone = gone
    result.stats = {
        "mode": result.mode,
        "records": result.membership.height + unresolvable.height,
        "unresolvable_records": unresolvable.height,
        "profiles": result.profiles.height,
        "profiles_reclustered": refreshed.len(),
        "profiles_gone": result.gone.len(),
        **(counts or {}),
        "clusters": result.profiles["cluster"].drop_nulls().n_unique(),
        "ambiguous_profiles": ambiguous,
        "em_iterations": result.params.em_iterations,
        "prior": result.params.prior,
        "global_prior": result.params.global_prior,
    }
    return result


def _unproposed(
    steward: pl.DataFrame, graph: PairGraph, schema: pl.Schema, settings: dict
) -> pl.DataFrame:
    """Steward pairs the blocking did not propose, as pairs with no model evidence."""
    seen = pl.concat([graph.frame("must"), graph.frame("hard")])
    extra = (
        steward.select("id_l", "id_r")
        .unique()
        .join(seen, on=["id_l", "id_r"], how="anti")
        .sort("id_l", "id_r")
    )
    if extra.height == 0:
        return extra
    evidence = {
        c: pl.lit(None, dtype=dtype)
        for c, dtype in schema.items()
        if c not in ("id_l", "id_r", "must_link", "steward_cannot_link", "decision")
    }
    filler = extra.with_columns(**evidence).with_columns(
        match_weight=pl.lit(0.0), match_probability=pl.lit(0.0), cannot_link=pl.lit(False)
    )
    return flag_overrides(filler, steward).with_columns(decision=decision_of(settings))
