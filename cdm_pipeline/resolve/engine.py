"""Run the resolver end to end on standardised person records (no Dagster, no warehouse)."""

from __future__ import annotations

from dataclasses import dataclass, field

import polars as pl

from cdm_pipeline.resolve.blocking import BlockingRule, RuleReport, candidate_pairs
from cdm_pipeline.resolve.clustering import guarded_clusters
from cdm_pipeline.resolve.comparisons import Comparison, compare_pairs, default_comparisons
from cdm_pipeline.resolve.profiles import build_profiles
from cdm_pipeline.resolve.scoring import (
    ModelParameters,
    cannot_link,
    estimate_m,
    estimate_u,
    identifier_u,
    score_pairs,
)


@dataclass
class Resolution:
    profiles: pl.DataFrame  # profile_id + match fields
    membership: pl.DataFrame  # record_key -> profile_id
    pairs: pl.DataFrame  # scored candidate pairs with levels, weights, decisions
    params: ModelParameters
    blocking: list[RuleReport]
    clusters: pl.DataFrame  # record_key -> cluster_key (smallest record key in cluster)
    stats: dict[str, float] = field(default_factory=dict)


def resolve(
    records: pl.DataFrame,
    settings: dict,
    overrides: pl.DataFrame | None = None,
    comparisons: list[Comparison] | None = None,
) -> Resolution:
    """Link standardised person records into clusters (``settings`` is pipeline.yaml's
    ``resolve`` section; ``overrides`` the steward's must-link / cannot-link pairs)."""
    comparisons = comparisons or default_comparisons()
    unresolvable = records.filter(~resolvable())
    records = records.filter(resolvable())
    profiles, membership = build_profiles(records)
    rules = [BlockingRule.from_config(entry) for entry in settings["blocking_rules"]]
    pairs, report = candidate_pairs(profiles, rules, settings["max_block_size"])
    levels = compare_pairs(pairs, profiles, comparisons)
    u = estimate_u(profiles, comparisons)
    single_keys = [rule.keys[0] for rule in rules if len(rule.keys) == 1]
    u = identifier_u(u, levels, comparisons, single_keys, profiles.height)
    params = estimate_m(
        levels, comparisons, u, iterations=settings["em_iterations"]
    ).with_global_prior(pairs.height, profiles.height)
    scored = score_pairs(levels, profiles, comparisons, params).with_columns(
        cannot_link=cannot_link(levels)
    )
    scored = _apply_overrides(scored, membership, overrides)
    scored = scored.with_columns(
        decision=_decision(settings["match_threshold"], settings.get("name_only_threshold", 1.0))
    )
    is_edge = pl.col("decision").is_in(["steward must-link"]) | (
        pl.col("decision").is_in(LINKING_DECISIONS) & ~pl.col("cannot_link")
    )
    edges = scored.filter(is_edge).select("id_l", "id_r", "match_weight")
    judged = scored.filter(judgeable() & ~pl.col("must_link")).select("id_l", "id_r", "cannot_link")
    # A wholly different birth date is a veto; a different first name is one vote among many
    # (a typo'd record should not split a customer, see clustering._GuardedUnion).
    hard = scored.filter(
        pl.col("steward_cannot_link") | ((pl.col("birth_date_level") == 0) & ~pl.col("must_link"))
    ).select("id_l", "id_r")
    clusters = guarded_clusters(profiles["profile_id"].to_numpy(), edges, judged, hard)
    clusters, ambiguous = _detach_ambiguous(clusters, edges, profiles)
    linked = (
        edges.join(clusters, left_on="id_l", right_on="node")
        .join(clusters, left_on="id_r", right_on="node", suffix="_r")
        .filter(pl.col("cluster") == pl.col("cluster_r"))
        .select("id_l", "id_r", linked=pl.lit(True))
    )
    scored = scored.join(linked, on=["id_l", "id_r"], how="left").with_columns(
        pl.col("linked").fill_null(False)
    )
    record_clusters = (
        membership.join(clusters, left_on="profile_id", right_on="node", how="left")
        .with_columns(
            cluster_key=pl.when(pl.col("cluster").is_not_null()).then(
                pl.col("record_key").min().over("cluster")
            )
        )
        .select("record_key", "profile_id", "cluster_key")
    )
    record_clusters = pl.concat(
        [
            record_clusters,
            unresolvable.select(
                "record_key", profile_id=pl.lit(None, pl.Int64), cluster_key=pl.lit(None, pl.String)
            ),
        ]
    )
    stats = {
        "records": records.height + unresolvable.height,
        "unresolvable_records": unresolvable.height,
        "profiles": profiles.height,
        "candidate_pairs": pairs.height,
        "match_edges": edges.height,
        "edges_refused_by_guard": edges.height - scored.filter(pl.col("linked")).height,
        "cannot_link_pairs": int(scored["cannot_link"].sum()),
        "clusters": record_clusters["cluster_key"].drop_nulls().n_unique(),
        "ambiguous_profiles": ambiguous,
        "em_iterations": params.em_iterations,
        "prior": params.prior,
        "global_prior": params.global_prior,
    }
    return Resolution(profiles, membership, scored, params, report, record_clusters, stats)


def _detach_ambiguous(
    clusters: pl.DataFrame, edges: pl.DataFrame, profiles: pl.DataFrame
) -> tuple[pl.DataFrame, int]:
    """A profile with no name (an email-only survey answer) that matches two customers the guard
    kept apart (a shared family inbox) cannot be attributed: it stays unlinked, not guessed."""
    nameless = profiles.filter(
        pl.col("first_name_key").is_null() & pl.col("last_name_key").is_null()
    )["profile_id"]
    if nameless.len() == 0 or edges.height == 0:
        return clusters, 0
    both_ways = pl.concat(
        [
            edges.select(node="id_l", other="id_r"),
            edges.select(node="id_r", other="id_l"),
        ]
    ).filter(pl.col("node").is_in(nameless.implode()))
    reach = (
        both_ways.join(clusters, left_on="other", right_on="node")
        .group_by("node")
        .agg(pl.col("cluster").n_unique().alias("targets"))
    )
    ambiguous = reach.filter(pl.col("targets") > 1)["node"]
    detached = clusters.with_columns(
        cluster=pl.when(pl.col("node").is_in(ambiguous.implode()))
        .then(None)
        .otherwise(pl.col("cluster"))
    )
    return detached, ambiguous.len()


def _decision(threshold: float, name_only_threshold: float) -> pl.Expr:
    """Why a pair is (or is not) a match edge. Deterministic keys are used where they are
    trustworthy: the same normalised email with the same name, or a record that carries nothing
    but an identifier (an email-only survey answer) meeting the customer who holds it (and if
    several customers hold it, the record is left unlinked; see ``_detach_ambiguous``)."""
    exact = {c.name: c.exact_level for c in default_comparisons()}
    email_and_name = (
        (pl.col("email_norm_level") == exact["email_norm"])
        & (pl.col("first_name_key_level") >= 4)
        & (pl.col("last_name_key_level") >= 2)
    )
    nameless = (pl.col("first_name_key_level") == -1) & (pl.col("last_name_key_level") == -1)
    identifier = (pl.col("email_norm_level") == exact["email_norm"]) | (
        pl.col("phone_e164_level") == exact["phone_e164"]
    )
    return (
        pl.when(pl.col("must_link"))
        .then(pl.lit("steward must-link"))
        .when(pl.col("cannot_link"))
        .then(pl.lit("cannot-link"))
        .when(email_and_name.fill_null(False))
        .then(pl.lit("deterministic: email and name"))
        .when((nameless & identifier).fill_null(False))
        .then(pl.lit("deterministic: identifier-only record"))
        .when((pl.col("match_probability") >= threshold) & corroborated())
        .then(pl.lit("probabilistic"))
        .when(pl.col("match_probability") >= name_only_threshold)
        .then(pl.lit("probabilistic: rare full name"))
        .otherwise(pl.lit("no match"))
    )


def corroborated() -> pl.Expr:
    """Names alone never link two records: at least one of email, phone, birth date or street
    must agree too. Two "Stephanie Pacheco"s with nothing else in common stay two customers."""
    agree = [
        pl.col("email_norm_level") >= 1,
        pl.col("phone_e164_level") >= 1,
        pl.col("birth_date_level") >= 1,
        pl.col("street_key_level") >= 1,
    ]
    return pl.any_horizontal(agree).fill_null(False)


def judgeable() -> pl.Expr:
    """Pairs whose first names or birth dates are both present: the ones cannot-link can judge."""
    return (pl.col("first_name_key_level") != -1) | (pl.col("birth_date_level") != -1)


LINKING_DECISIONS = [
    "deterministic: email and name",
    "deterministic: identifier-only record",
    "probabilistic",
    "probabilistic: rare full name",
]


def resolvable() -> pl.Expr:
    """A record can be linked only with an identifier or a full name; one with neither (say, a
    consent event whose only phone number is invalid) stays unlinked rather than pooling with
    every other empty record."""
    return (
        pl.col("email_norm").is_not_null()
        | pl.col("phone_e164").is_not_null()
        | (pl.col("first_name_key").is_not_null() & pl.col("last_name_key").is_not_null())
    )


def _apply_overrides(
    scored: pl.DataFrame, membership: pl.DataFrame, overrides: pl.DataFrame | None
) -> pl.DataFrame:
    """Steward decisions win over the model: must-link adds an edge, cannot-link forbids one."""
    scored = scored.with_columns(must_link=pl.lit(False), steward_cannot_link=pl.lit(False))
    if overrides is None or overrides.height == 0:
        return scored
    keyed = (
        overrides.with_columns(
            key_l=pl.col("source_l") + ":" + pl.col("record_id_l"),
            key_r=pl.col("source_r") + ":" + pl.col("record_id_r"),
        )
        .join(membership.rename({"record_key": "key_l", "profile_id": "p_l"}), on="key_l")
        .join(membership.rename({"record_key": "key_r", "profile_id": "p_r"}), on="key_r")
        .filter(pl.col("p_l") != pl.col("p_r"))
        .select("rule", id_l=pl.min_horizontal("p_l", "p_r"), id_r=pl.max_horizontal("p_l", "p_r"))
    )
    if keyed.height == 0:
        return scored
    # Steward pairs the blocking did not propose are added as pairs with no model evidence.
    extra = keyed.join(scored.select("id_l", "id_r"), on=["id_l", "id_r"], how="anti").select(
        "id_l", "id_r"
    )
    if extra.height:
        filler = {
            c: (pl.lit(None, dtype=scored.schema[c]))
            for c in scored.columns
            if c not in ("id_l", "id_r")
        }
        scored = pl.concat([scored, extra.with_columns(**filler).select(scored.columns)])
        scored = scored.with_columns(
            pl.col("match_weight").fill_null(0.0),
            pl.col("match_probability").fill_null(0.0),
            pl.col("cannot_link").fill_null(False),
            pl.col("must_link").fill_null(False),
            pl.col("steward_cannot_link").fill_null(False),
        )
    must = keyed.filter(pl.col("rule") == "must_link").select("id_l", "id_r", m=pl.lit(True))
    never = keyed.filter(pl.col("rule") == "cannot_link").select("id_l", "id_r", c=pl.lit(True))
    return (
        scored.join(must, on=["id_l", "id_r"], how="left")
        .join(never, on=["id_l", "id_r"], how="left")
        .with_columns(
            must_link=pl.col("m").fill_null(False),
            cannot_link=pl.col("cannot_link") | pl.col("c").fill_null(False),
            steward_cannot_link=pl.col("c").fill_null(False),
        )
        .drop("m", "c")
    )
