"""Clustering that does not chain households together.

Plain connected components join everything reachable: one shared family phone or inbox links
every member into one "customer". Here, match edges are added strongest first (Kruskal order),
and an edge is refused when it would put two records with cannot-link evidence between them
into one cluster. Components with no cannot-link pair inside are settled by fast connected
components (scipy); only the rest go through the guarded union. ``cluster_profiles`` runs it on
what a night's scored pairs leave (``PairGraph``); ``mark_linked`` and ``with_link_decision`` say
afterwards which pairs joined whom.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from cdm_pipeline.resolve.decisions import WEIGHED_LEVELS, disagrees, is_edge, judgeable, leaning


def connected_component_labels(
    nodes: np.ndarray, edges_l: np.ndarray, edges_r: np.ndarray
) -> np.ndarray:
    """Component label (the smallest node id in it) for each node."""
    if len(nodes) == 0:
        return np.array([], dtype=np.int64)
    order = np.argsort(nodes)
    sorted_nodes = nodes[order]
    li = order[np.searchsorted(sorted_nodes, edges_l)]
    ri = order[np.searchsorted(sorted_nodes, edges_r)]
    graph = coo_matrix((np.ones(len(li), dtype=np.int8), (li, ri)), shape=(len(nodes), len(nodes)))
    _, labels = connected_components(graph, directed=False)
    smallest = (
        pl.DataFrame({"label": labels, "node": nodes})
        .group_by("label")
        .agg(pl.col("node").min().alias("root"))
    )
    return (
        pl.DataFrame({"label": labels})
        .join(smallest, on="label", how="left", maintain_order="left")["root"]
        .to_numpy()
    )


class _GuardedUnion:
    """Union-find that refuses a union when the evidence between the two sets says "different".

    Between two sets, every scored pair whose first names or birth dates can be compared is a
    judgement; a union is refused when more than half of those judgements say "two people" (a
    household: every pair between two members is judged so), or when any steward cannot-link
    crosses. One typo'd record in a large cluster does not veto a merge.
    """

    def __init__(
        self,
        nodes: list[int],
        judged: dict[int, dict[int, bool]],
        hard: dict[int, set[int]],
    ):
        self.parent = {n: n for n in nodes}
        self.members = {n: [n] for n in nodes}
        self.judged = judged
        self.hard = hard

    def find(self, n: int) -> int:
        root = n
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[n] != root:
            self.parent[n], n = root, self.parent[n]
        return root

    def try_union(self, a: int, b: int) -> bool:
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return True
        if len(self.members[ra]) < len(self.members[rb]):
            ra, rb = rb, ra
        cannot = judged = 0
        for x in self.members[rb]:
            if any(self.find(y) == ra for y in self.hard.get(x, ())):
                return False
            for y, is_cannot in self.judged.get(x, {}).items():
                if self.find(y) == ra:
                    judged += 1
                    cannot += is_cannot
        if cannot and 2 * cannot > judged:
            return False
        self.parent[rb] = ra
        self.members[ra] += self.members.pop(rb)
        return True


def guarded_clusters(
    nodes: np.ndarray,
    edges: pl.DataFrame,
    judged: pl.DataFrame,
    hard_cannot: pl.DataFrame | None = None,
    roots: np.ndarray | None = None,
) -> pl.DataFrame:
    """Cluster nodes from match edges without joining people the evidence says are different.

    Args:
        nodes: every node id (singletons included).
        edges: ``id_l, id_r, match_weight``: pairs judged matches.
        judged: ``id_l, id_r, cannot_link``: scored pairs whose personal fields could be compared
            (``cannot_link``: the model judges them two people).
        hard_cannot: ``id_l, id_r``: steward cannot-links, never crossed.
        roots: ``connected_component_labels`` of ``nodes`` and ``edges``, if known.

    Returns:
        ``node, cluster, component``: ``cluster`` is the smallest node id in the cluster,
        ``component`` the smallest in the connected component of the match edges (what an
        incremental run must re-cluster together when one of its nodes changes).

    Example:
        >>> import numpy as np, polars as pl
        >>> e = pl.DataFrame({"id_l": [1, 2], "id_r": [2, 3], "match_weight": [9.0, 8.0]})
        >>> j = pl.DataFrame({"id_l": [1], "id_r": [3], "cannot_link": [True]})
        >>> guarded_clusters(np.array([1, 2, 3]), e, j)["cluster"].to_list()
        [1, 1, 3]
    """
    nodes = np.asarray(nodes, dtype=np.int64)
    hard_cannot = (
        hard_cannot
        if hard_cannot is not None
        else pl.DataFrame(schema={"id_l": pl.Int64, "id_r": pl.Int64})
    )
    if roots is None:
        roots = connected_component_labels(
            nodes, edges["id_l"].to_numpy(), edges["id_r"].to_numpy()
        )
    labels = pl.DataFrame({"node": nodes, "cc": roots})
    conflicts = pl.concat(
        [
            judged.filter(pl.col("cannot_link")).select("id_l", "id_r"),
            hard_cannot.select("id_l", "id_r"),
        ]
    )
    conflicted = (
        conflicts.join(labels, left_on="id_l", right_on="node")
        .join(labels, left_on="id_r", right_on="node", suffix="_r")
        .filter(pl.col("cc") == pl.col("cc_r"))
        .select("cc")
        .unique()
    )
    if conflicted.height == 0:
        return labels.select("node", cluster="cc", component="cc")
    # Re-cluster only the components that hold a conflict, strongest edges first.
    bad_nodes = labels.filter(pl.col("cc").is_in(conflicted["cc"].implode()))["node"]
    inside = pl.col("id_l").is_in(bad_nodes.implode()) & pl.col("id_r").is_in(bad_nodes.implode())
    judged_map: dict[int, dict[int, bool]] = {}
    for a, b, flag in judged.filter(inside).select("id_l", "id_r", "cannot_link").iter_rows():
        judged_map.setdefault(a, {})[b] = flag
        judged_map.setdefault(b, {})[a] = flag
    hard: dict[int, set[int]] = {}
    for a, b in hard_cannot.filter(inside).iter_rows():
        hard.setdefault(a, set()).add(b)
        hard.setdefault(b, set()).add(a)
    union = _GuardedUnion(bad_nodes.to_list(), judged_map, hard)
    local = edges.filter(inside).sort(
        ["match_weight", "id_l", "id_r"], descending=[True, False, False]
    )
    for a, b in local.select("id_l", "id_r").iter_rows():
        union.try_union(a, b)
    fixed = pl.DataFrame(
        {"node": bad_nodes, "root": [union.find(n) for n in bad_nodes.to_list()]},
        schema={"node": pl.Int64, "root": pl.Int64},
    )
    fixed = fixed.with_columns(cluster=pl.col("node").min().over("root")).select("node", "cluster")
    return labels.join(fixed, on="node", how="left").select(
        "node", pl.coalesce("cluster", "cc").alias("cluster"), component="cc"
    )


@dataclass
class PairGraph:
    """What clustering reads of the scored pairs, gathered a piece at a time: the match edges,
    the steward's pairs and counts; the pairs the guard judges are read again from each piece
    (``source``: the scored piece, or the file it was written to) once the edges are known."""

    pieces: dict[str, list[pl.DataFrame]] = field(
        default_factory=lambda: {"edges": [], "hard": [], "must": [], "leaning": []}
    )
    sources: list[pl.DataFrame | Path] = field(default_factory=list)
    pairs: int = 0
    cannot_link: int = 0

    def add(self, scored: pl.DataFrame, source: pl.DataFrame | Path) -> None:
        ids = ["id_l", "id_r"]
        self.pieces["edges"].append(
            scored.filter(is_edge()).select(*ids, "match_weight", "decision", "cannot_link")
        )
        self.sources.append(source)
        self.pieces["hard"].append(scored.filter(pl.col("steward_cannot_link")).select(ids))
        self.pieces["must"].append(scored.filter(pl.col("must_link")).select(ids))
        self.pieces["leaning"].append(scored.filter(leaning()).select(ids))
        self.count(scored)

    def count(self, scored: pl.DataFrame) -> None:
        self.pairs += scored.height
        self.cannot_link += int(scored["cannot_link"].sum())

    def frame(self, name: str) -> pl.DataFrame:
        return pl.concat(self.pieces[name])

    def judged(self, components: pl.DataFrame) -> pl.DataFrame:
        """``id_l, id_r, cannot_link`` of the pairs the guard weighs: first names or birth dates
        present on both sides, both ends in one connected component of the match edges
        (``components``: ``id, root`` of every profile in a component of two or more; the guard
        looks inside components only). ``cannot_link`` here is the pair's vote: not a match
        edge (two named records the model would not link are not joined through a nameless
        record that matches both); a pair that is no edge and disagrees on no field (a shared
        name, nothing else to compare) abstains. Of 68M pairs at 10M records, 57M are cannot-link pairs
        between strangers in different components: they are never held."""
        found = [_JUDGED_EMPTY]
        columns = [*_JUDGED_EMPTY.columns, "decision", "must_link"]
        for source in self.sources:
            present = pl.read_parquet_schema(source) if isinstance(source, Path) else source.schema
            levels = [c for c in WEIGHED_LEVELS if c in present]
            piece = (
                pl.read_parquet(source, columns=columns + levels)
                if isinstance(source, Path)
                else source
            )
            found.append(
                piece.filter(judgeable() & ~pl.col("must_link") & (is_edge() | disagrees(levels)))
                .select("id_l", "id_r", cannot_link=~is_edge())
                .join(components, left_on="id_l", right_on="id")
                .join(components, left_on="id_r", right_on="id", suffix="_r")
                .filter(pl.col("root") == pl.col("root_r"))
                .select(_JUDGED_EMPTY.columns)
            )
        return pl.concat(found)


_JUDGED_EMPTY = pl.DataFrame(schema={"id_l": pl.Int64, "id_r": pl.Int64, "cannot_link": pl.Boolean})


def cluster_profiles(profiles: pl.DataFrame, graph: PairGraph) -> tuple[pl.DataFrame, int]:
    """``node, component, cluster`` for every profile (cluster null: detached as ambiguous)."""
    edges = graph.frame("edges").select("id_l", "id_r", "match_weight")
    nodes = profiles["profile_id"].to_numpy()
    roots = connected_component_labels(nodes, edges["id_l"].to_numpy(), edges["id_r"].to_numpy())
    components = pl.DataFrame({"id": nodes, "root": roots}).filter(pl.col("root").is_duplicated())
    # Only a steward's cannot-link is a veto; the model's is one vote among many (a typo'd
    # record should not split a customer, see clustering._GuardedUnion).
    labels = guarded_clusters(
        nodes, edges, graph.judged(components), graph.frame("hard"), roots=roots
    )
    reach = pl.concat([edges.select("id_l", "id_r"), graph.frame("leaning")])
    return _detach_ambiguous(labels, reach, profiles, graph.frame("must"))


def _detach_ambiguous(
    labels: pl.DataFrame, edges: pl.DataFrame, profiles: pl.DataFrame, steward: pl.DataFrame
) -> tuple[pl.DataFrame, int]:
    """A profile with no name (an email-only survey answer) that matches two customers the guard
    kept apart, or could as well be either of two (a shared family inbox), cannot be attributed:
    it stays unlinked, not guessed, unless a steward said where it belongs. ``edges``: its match
    edges and ``leaning`` pairs."""
    nameless = profiles.filter(
        pl.col("first_name_key").is_null()
        & pl.col("last_name_key").is_null()
        & ~pl.col("profile_id").is_in(pl.concat([steward["id_l"], steward["id_r"]]).implode())
    )["profile_id"]
    if nameless.len() == 0 or edges.height == 0:
        return labels, 0
    both_ways = pl.concat(
        [
            edges.select(node="id_l", other="id_r"),
            edges.select(node="id_r", other="id_l"),
        ]
    ).filter(pl.col("node").is_in(nameless.implode()))
    reach = (
        both_ways.join(labels.select("node", "cluster"), left_on="other", right_on="node")
        .group_by("node")
        .agg(pl.col("cluster").n_unique().alias("targets"))
    )
    ambiguous = reach.filter(pl.col("targets") > 1)["node"]
    detached = labels.with_columns(
        cluster=pl.when(pl.col("node").is_in(ambiguous.implode()))
        .then(None)
        .otherwise(pl.col("cluster"))
    )
    return detached, ambiguous.len()


def mark_linked(scored: pl.DataFrame, profile_state: pl.DataFrame) -> pl.DataFrame:
    """``linked``: the pair is a match edge and both ends ended in the same cluster."""
    clusters = profile_state.select("node", "cluster")
    same = (
        scored.select("id_l", "id_r")
        .join(clusters, left_on="id_l", right_on="node", how="left", maintain_order="left")
        .join(
            clusters,
            left_on="id_r",
            right_on="node",
            how="left",
            suffix="_r",
            maintain_order="left",
        )
        .select((pl.col("cluster") == pl.col("cluster_r")).fill_null(False))
        .to_series()
    )
    return scored.with_columns(linked=same & is_edge())


def with_link_decision(profiles: pl.DataFrame, scored: pl.DataFrame) -> pl.DataFrame:
    """The decision of each profile's strongest linked pair: how it joined its customer."""
    best = (
        scored.filter(pl.col("linked"))
        .select(pl.concat_list("id_l", "id_r").alias("profile_id"), "decision", "match_weight")
        .explode("profile_id")
        .sort(["match_weight", "decision"], descending=[True, False])
        .group_by("profile_id", maintain_order=True)
        .first()
        .select("profile_id", link_decision="decision")
    )
    return profiles.drop("link_decision", strict=False).join(
        best, on="profile_id", how="left", maintain_order="left"
    )


def with_cluster_keys(profiles: pl.DataFrame) -> pl.DataFrame:
    """A cluster's key is its smallest record key: the smallest of its profiles' first keys.
    Keys an incremental run kept (``cluster_key`` present) stand; a cluster with any profile
    lacking one is keyed again, over its profiles only."""
    if "cluster_key" not in profiles.columns:
        profiles = profiles.with_columns(cluster_key=pl.lit(None, pl.String))
    todo = (
        profiles.select("cluster", "cluster_key")
        .filter(pl.col("cluster_key").is_null())["cluster"]
        .drop_nulls()
        .unique()
    )
    keyed = (
        profiles.select("cluster", "first_record_key")  # narrow first: a filter copies columns
        .filter(pl.col("cluster").is_in(todo.implode()))
        .group_by("cluster")
        .agg(pl.col("first_record_key").min())
    )
    fresh = pl.col("cluster").replace_strict(
        keyed["cluster"], keyed["first_record_key"], default=None, return_dtype=pl.String
    )
    return profiles.with_columns(cluster_key=pl.coalesce(fresh, "cluster_key"))
