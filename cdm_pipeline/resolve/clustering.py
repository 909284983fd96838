"""Clustering that does not chain households together.

Plain connected components join everything reachable: one shared family phone or inbox links
every member into one "customer". Here, match edges are added strongest first (Kruskal order),
and an edge is refused when it would put two records with cannot-link evidence between them
into one cluster. Components with no cannot-link pair inside are settled by fast connected
components (scipy); only the rest go through the guarded union.
"""

from __future__ import annotations

import numpy as np
import polars as pl
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components


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
