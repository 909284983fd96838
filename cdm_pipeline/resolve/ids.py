"""Customer ids that stay stable night to night.

Each new cluster inherits the previous id that most of its records carried (one id per cluster,
one cluster per id, largest overlap first, ties to the smaller id). An id whose records all went to
a cluster that kept another id is recorded as merged into it; a cluster with no inheritable id
gets a new id derived from its earliest record key, so a full rebuild mints the same ids.
"""

from __future__ import annotations

import hashlib

import polars as pl

HISTORY_SCHEMA = {
    "event": pl.String,  # created | merged | split
    "customer_id": pl.String,  # the id the event is about
    "related_customer_id": pl.String,  # merged: the survivor; split: the id it split from
    "record_count": pl.Int64,
}


def mint_id(cluster_key: str) -> str:
    return "CUS-" + hashlib.sha256(cluster_key.encode("utf-8")).hexdigest()[:12].upper()


def assign_customer_ids(
    clusters: pl.DataFrame, previous: pl.DataFrame
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Map clusters to customer ids and describe what changed.

    Args:
        clusters: ``record_key, cluster_key`` for this run (cluster_key null = unlinked).
        previous: ``record_key, customer_id`` from the last run (may be empty).

    Returns:
        (``cluster_key, customer_id``, history events with ``HISTORY_SCHEMA``).
    """
    linked = clusters.filter(pl.col("cluster_key").is_not_null()).select(
        "record_key", "cluster_key"
    )
    carried = previous.filter(pl.col("customer_id").is_not_null()).select(
        "record_key", "customer_id"
    )
    overlap = (
        linked.join(carried, on="record_key", how="inner")
        .group_by("cluster_key", "customer_id")
        .len("overlap")
    )
    return assign_from_overlap(
        linked.group_by("cluster_key").len("record_count"),
        overlap,
        carried.select("customer_id").unique(),
    )


def assign_from_overlap(
    sizes: pl.DataFrame, overlap: pl.DataFrame, previous_ids: pl.DataFrame
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """``assign_customer_ids`` from what it counts: ``cluster_key, record_count`` of tonight's
    linked clusters, ``cluster_key, customer_id, overlap`` (records of each cluster that carried
    each previous id) and the previous ``customer_id`` values. The warehouse counts these
    itself (``write_resolution``), without reading every record into memory."""
    inherited = _inherit(overlap)
    assignment = sizes.join(inherited, on="cluster_key", how="left")
    fresh = assignment.filter(pl.col("customer_id").is_null())
    assignment = pl.concat(
        [
            assignment.filter(pl.col("customer_id").is_not_null()),
            fresh.with_columns(
                customer_id=pl.col("cluster_key").map_elements(mint_id, return_dtype=pl.String)
            ),
        ]
    )
    ranked = _ranked(overlap)
    # Old ids that lost their records to other clusters: merged into where most of them went.
    merged = (
        ranked.join(inherited, on="customer_id", how="anti")
        .group_by("customer_id", maintain_order=True)
        .first()
        .join(assignment.select("cluster_key", related_customer_id="customer_id"), on="cluster_key")
        .select(
            event=pl.lit("merged"),
            customer_id="customer_id",
            related_customer_id="related_customer_id",
            record_count=pl.col("overlap").cast(pl.Int64),
        )
    )
    # New clusters: a split when they hold records of an existing id, else a creation.
    parent = (
        ranked.join(inherited, on="cluster_key", how="anti")
        .group_by("cluster_key", maintain_order=True)
        .first()
        .select("cluster_key", related_customer_id="customer_id")
    )
    new = (
        assignment.join(inherited, on="cluster_key", how="anti")
        .join(parent, on="cluster_key", how="left")
        .select(
            event=pl.when(pl.col("related_customer_id").is_not_null())
            .then(pl.lit("split"))
            .otherwise(pl.lit("created")),
            customer_id="customer_id",
            related_customer_id="related_customer_id",
            record_count=pl.col("record_count").cast(pl.Int64),
        )
    )
    # Ids whose records all disappeared (erased or purged) are closed, not silently dropped.
    retired = (
        previous_ids.join(assignment, on="customer_id", how="anti")
        .join(merged, on="customer_id", how="anti")
        .select(
            event=pl.lit("retired"),
            customer_id="customer_id",
            related_customer_id=pl.lit(None, pl.String),
            record_count=pl.lit(0, pl.Int64),
        )
    )
    history = pl.concat(
        [frame.sort("customer_id").cast(HISTORY_SCHEMA) for frame in (merged, new, retired)]
    )
    return assignment.select("cluster_key", "customer_id"), history


def _ranked(overlap: pl.DataFrame) -> pl.DataFrame:
    """Largest overlap first, ties to the smaller id, then to the smaller cluster key."""
    return overlap.sort(["overlap", "customer_id", "cluster_key"], descending=[True, False, False])


def _inherit(overlap: pl.DataFrame) -> pl.DataFrame:
    """``cluster_key, customer_id``: one id per cluster, one cluster per id, taken greedily in
    ``_ranked`` order. A cluster that met one old id which met no other cluster (nearly all of
    them, night after night) inherits it without a contest; only the rest go through the greedy
    loop, which gives the same answer as running it over everything."""
    alone = (pl.len().over("cluster_key") == 1) & (pl.len().over("customer_id") == 1)
    uncontested = overlap.filter(alone).select("cluster_key", "customer_id")
    taken_clusters: set[str] = set()
    taken_ids: set[str] = set()
    won: list[tuple[str, str]] = []
    for cluster_key, customer_id in (
        _ranked(overlap.filter(~alone)).select("cluster_key", "customer_id").iter_rows()
    ):
        if cluster_key in taken_clusters or customer_id in taken_ids:
            continue
        won.append((cluster_key, customer_id))
        taken_clusters.add(cluster_key)
        taken_ids.add(customer_id)
    contested = pl.DataFrame(
        won, schema={"cluster_key": pl.String, "customer_id": pl.String}, orient="row"
    )
    return pl.concat([uncontested, contested])
