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
    linked = clusters.filter(pl.col("cluster_key").is_not_null())
    overlap = (
        linked.join(
            previous.filter(pl.col("customer_id").is_not_null()), on="record_key", how="inner"
        )
        .group_by("cluster_key", "customer_id")
        .len("overlap")
        .sort(["overlap", "customer_id", "cluster_key"], descending=[True, False, False])
    )
    taken_clusters: set[str] = set()
    taken_ids: set[str] = set()
    inherited: dict[str, str] = {}
    for cluster_key, customer_id, _ in overlap.iter_rows():
        if cluster_key in taken_clusters or customer_id in taken_ids:
            continue
        inherited[cluster_key] = customer_id
        taken_clusters.add(cluster_key)
        taken_ids.add(customer_id)
    sizes = linked.group_by("cluster_key").len("record_count")
    assignment = sizes.with_columns(
        customer_id=pl.col("cluster_key").map_elements(
            lambda k: inherited.get(k) or mint_id(k), return_dtype=pl.String
        )
    )
    events: list[dict] = []
    cluster_of_id = {cid: ck for ck, cid in inherited.items()}
    id_of_cluster = dict(zip(assignment["cluster_key"], assignment["customer_id"], strict=True))
    count_of_cluster = dict(zip(sizes["cluster_key"], sizes["record_count"], strict=True))
    previous_ids = set(previous["customer_id"].drop_nulls().unique().to_list())
    # Old ids that lost their records to other clusters: merged into where most of them went.
    best_target = overlap.group_by("customer_id", maintain_order=True).first()
    for customer_id, cluster_key, n in best_target.select(
        "customer_id", "cluster_key", "overlap"
    ).iter_rows():
        if customer_id not in cluster_of_id:
            events.append(
                {
                    "event": "merged",
                    "customer_id": customer_id,
                    "related_customer_id": id_of_cluster[cluster_key],
                    "record_count": n,
                }
            )
    # New clusters: a split when they hold records of an existing id, else a creation.
    source_id = overlap.group_by("cluster_key", maintain_order=True).first()
    split_from = dict(zip(source_id["cluster_key"], source_id["customer_id"], strict=True))
    for cluster_key, customer_id in id_of_cluster.items():
        if cluster_key in inherited:
            continue
        parent = split_from.get(cluster_key)
        events.append(
            {
                "event": "split" if parent else "created",
                "customer_id": customer_id,
                "related_customer_id": parent,
                "record_count": count_of_cluster[cluster_key],
            }
        )
    # Ids whose records all disappeared (erased or purged) are closed, not silently dropped.
    gone = (
        previous_ids
        - set(id_of_cluster.values())
        - {e["customer_id"] for e in events if e["event"] == "merged"}
    )
    for customer_id in sorted(gone):
        events.append(
            {
                "event": "retired",
                "customer_id": customer_id,
                "related_customer_id": None,
                "record_count": 0,
            }
        )
    history = (
        pl.DataFrame(events, schema=HISTORY_SCHEMA)
        if events
        else pl.DataFrame(schema=HISTORY_SCHEMA)
    )
    return assignment.select("cluster_key", "customer_id"), history
