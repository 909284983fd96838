"""Stage 4: comparisons (table-driven), EM on a planted model, clustering against networkx,
the over-merge guard on planted household chains, and stable ids."""

from __future__ import annotations

import math
import random
from datetime import date

import networkx as nx
import numpy as np
import polars as pl
import pytest

from cdm_pipeline.resolve.blocking import BlockingRule, candidate_pairs
from cdm_pipeline.resolve.clustering import PairGraph, guarded_clusters
from cdm_pipeline.resolve.comparisons import (
    Comparison,
    HouseholdSharing,
    SimilarityComparison,
    compare_pairs,
    default_comparisons,
)
from cdm_pipeline.resolve.ids import assign_customer_ids, mint_id
from cdm_pipeline.resolve.mixture import fit_mixture

COMPARISONS = {c.name: c for c in default_comparisons()}
SHARED, TWINS = HouseholdSharing.SHARED, HouseholdSharing.TWINS


@pytest.mark.parametrize(
    ("field", "left", "right", "label"),
    [
        ("first_name_key", "robert", "robert", "exact"),
        ("first_name_key", "bob", "robert", "nickname"),
        ("first_name_key", "micheal", "michael", "Jaro-Winkler >= 0.92"),
        ("first_name_key", "j", "john", "initial only"),
        ("first_name_key", "mary", "john", "different"),
        (
            "first_name_key",
            "jakc",
            "john",
            "Jaro-Winkler >= 0.80 within two edits, or a nickname typed with one slip",
        ),
        (
            "first_name_key",
            "anthony",
            "toy",
            "Jaro-Winkler >= 0.80 within two edits, or a nickname typed with one slip",
        ),
        (
            "first_name_key",
            "miey",
            "michael",
            "Jaro-Winkler >= 0.80 within two edits, or a nickname typed with one slip",
        ),
        # Alike at the start but four edits apart: two names (a couple), not a typo of one.
        ("first_name_key", "brett", "brigitte", "Jaro-Winkler >= 0.70"),
        (
            "first_name_key",
            "lucy",
            "lacy",
            "Jaro-Winkler >= 0.80 within two edits, or a nickname typed with one slip",
        ),
        ("first_name_key", "ali", "albert", "different"),  # Al is too short to allow a slip
        ("first_name_key", "sara", "carol", "different"),  # Cara, one slip away, but Sara is a name
        ("first_name_key", None, "john", "missing"),
        ("last_name_key", "smith", "smiht", "Jaro-Winkler >= 0.92"),
        ("last_name_key", "smith", "jones", "different"),
        ("email_norm", "a@b.co", "a@b.co", "exact"),
        ("email_norm", "a@b.co", "a@c.co", "different"),
        ("phone_e164", "+12125550134", "+12125550135", "last 7 digits or one edit"),
        ("phone_e164", "+12125550134", "+13125559999", "different"),
        ("birth_date", date(1980, 3, 4), date(1980, 4, 3), "day/month swapped or one part differs"),
        ("birth_date", date(1980, 3, 4), date(1980, 3, 5), "day/month swapped or one part differs"),
        ("birth_date", date(1980, 3, 4), date(1975, 9, 9), "different"),
        ("street_key", "12 MAIN ST", "12 MAIN STREET", "Jaro-Winkler >= 0.88"),
        ("postal_code", "62701", "62799", "same first 3 characters"),
        ("city_key", "springfield", "springfeld", "Jaro-Winkler >= 0.90"),
    ],
)
def test_comparison_levels(field, left, right, label):
    comparison = COMPARISONS[field]
    dtype = pl.Date if field == "birth_date" else pl.String
    level = comparison.levels(pl.Series([left], dtype=dtype), pl.Series([right], dtype=dtype))[0]
    assert comparison.label(level) == f"{field}: {label}"


@pytest.mark.parametrize(
    ("left", "right", "first_label", "last_label"),
    [
        (("deborah", "ball"), ("ball", "deboah"), "Jaro-Winkler >= 0.92", "exact"),
        (("charles", "spencer"), ("spencer", "chuck"), "nickname", "exact"),
        (("william", "fleming"), ("fleming", "bill"), "nickname", "exact"),
        (("sam", "smith"), ("sara", "smith"), "Jaro-Winkler >= 0.70", "exact"),  # not swapped
        (("smith", "sam"), ("sam", "smith"), "exact", "exact"),
        # A lone name is compared where the other record holds it.
        (("scott", None), ("debra", "scott"), "missing", "exact"),
        (("debra", "scott"), ("scott", None), "missing", "exact"),
        ((None, "wolfe"), ("wolfe", "gregory"), "missing", "different"),  # maybe swapped
        (("scott", None), ("debra", "jones"), "different", "missing"),
    ],
)
def test_names_entered_the_wrong_way_round_are_compared_swapped_back(
    left, right, first_label, last_label
):
    fields = [c.name for c in default_comparisons()]
    profiles = pl.DataFrame({"profile_id": [1, 2]}).with_columns(
        pl.lit(None, pl.String).alias(f) for f in fields
    )
    profiles = profiles.with_columns(
        first_name_key=pl.Series([left[0], right[0]]),
        last_name_key=pl.Series([left[1], right[1]]),
        birth_date=pl.lit(None, pl.Date),
    )
    pairs = pl.DataFrame({"id_l": [1], "id_r": [2]})
    levels = compare_pairs(pairs, profiles, default_comparisons()).row(0, named=True)
    first, last = COMPARISONS["first_name_key"], COMPARISONS["last_name_key"]
    assert first.label(levels["first_name_key_level"]) == f"first_name_key: {first_label}"
    assert last.label(levels["last_name_key_level"]) == f"last_name_key: {last_label}"


def test_a_comparison_checks_its_thresholds():
    with pytest.raises(ValueError, match="ascending"):
        SimilarityComparison("x", ("different", "a", "b", "exact"), thresholds=(0.9, 0.8))


def test_blocking_unions_rules_without_duplicates_and_skips_giant_blocks():
    profiles = pl.DataFrame(
        {"profile_id": [0, 1, 2, 3], "a": ["x", "x", "y", "y"], "b": ["p", "p", "q", "z"]}
    )
    pairs, report = candidate_pairs(
        profiles, [BlockingRule(("a",)), BlockingRule(("b",))], max_block_size=10
    )
    assert pairs.select("id_l", "id_r").rows() == [(0, 1), (2, 3)]
    assert pairs["blocking_rule"].to_list() == [0, 0]  # the first rule that proposed each pair
    assert [(r.pairs, r.new_pairs) for r in report] == [(2, 2), (1, 0)]
    _, report = candidate_pairs(profiles, [BlockingRule(("a",))], max_block_size=1)
    assert report[0].skipped_blocks == 2
    rare_only = BlockingRule.from_config({"keys": ["a"], "max_block_size": 1})
    pairs, report = candidate_pairs(profiles, [rare_only, BlockingRule(("b",))], max_block_size=10)
    assert pairs.select("id_l", "id_r").rows() == [(0, 1)] and report[0].skipped_blocks == 2


def test_a_rule_with_its_own_pair_budget_is_left_out_where_it_costs_more():
    """Rule "a" makes 2 pairs among 4 profiles (0.5 a profile): under a budget of 1 it runs,
    under 0.25 it is left out and reported, whatever the global budget allows."""
    profiles = pl.DataFrame({"profile_id": [0, 1, 2, 3], "a": ["x", "x", "y", "y"]})
    for budget, expected in ((1, [(0, 1), (2, 3)]), (0.25, [])):
        rule = BlockingRule.from_config({"keys": ["a"], "max_pairs_per_record": budget})
        pairs, report = candidate_pairs(profiles, [rule], max_block_size=10, max_pairs_per_record=5)
        assert pairs.select("id_l", "id_r").rows() == expected
        assert (report[0].rule_pairs, report[0].over_budget) == (2, not expected)


def test_em_recovers_a_planted_three_class_model():
    """Draw level patterns from known person, household and unrelated classes; EM (u given) must
    recover m, what households share, the twin share and the class shares."""
    rng = np.random.default_rng(3)
    own = Comparison("first", ("different", "close", "exact"))
    shared = [
        Comparison(f"shared{i}", ("different", "close", "exact"), household_sharing=SHARED)
        for i in range(2)
    ]
    born = Comparison("born", ("different", "close", "exact"), household_sharing=TWINS)
    comparisons = [own, *shared, born]
    u = {c.name: [0.90, 0.08, 0.02] for c in comparisons}
    true_m = [0.05, 0.15, 0.80]
    true_h = [0.30, 0.05, 0.65]
    twins = 0.2
    shares = [0.3, 0.15, 0.55]
    n = 40_000
    kind = rng.choice(3, n, p=shares)
    columns = {}
    for c in comparisons:
        if c is own:
            household = u[c.name]
        elif c is born:
            household = [0.9 * (1 - twins), 0.08 * (1 - twins), 0.02 * (1 - twins) + twins]
        else:
            household = true_h
        draws = [rng.choice(3, n, p=p) for p in (true_m, household, u[c.name])]
        columns[f"{c.name}_level"] = pl.Series(np.choose(kind, draws), dtype=pl.Int8)
    fit = fit_mixture(
        pl.DataFrame(columns), comparisons, u, {"em_iterations": 100, "max_twin_share": 0.25}
    )
    assert fit.converged
    assert fit.shares == pytest.approx(shares, abs=0.02)
    assert fit.twin_share == pytest.approx(twins, abs=0.03)
    for c in comparisons:
        assert fit.m[c.name] == pytest.approx(true_m, abs=0.03)
    for c in shared:
        assert fit.h[c.name] == pytest.approx(true_h, abs=0.03)


def random_graph(size: int, edges: int, seed: int) -> tuple[np.ndarray, pl.DataFrame]:
    rnd = random.Random(seed)
    pairs = {tuple(sorted(rnd.sample(range(size), 2))) for _ in range(edges)}
    frame = pl.DataFrame(sorted(pairs), schema=["id_l", "id_r"], orient="row").with_columns(
        match_weight=pl.Series([rnd.random() for _ in pairs])
    )
    return np.arange(size), frame


def as_partition(nodes, labels) -> set[frozenset[int]]:
    groups: dict[int, set[int]] = {}
    for n, label in zip(nodes, labels, strict=True):
        groups.setdefault(label, set()).add(int(n))
    return {frozenset(g) for g in groups.values()}


@pytest.mark.parametrize("seed", range(5))
def test_clustering_without_conflicts_equals_networkx_components(seed):
    nodes, edges = random_graph(500, 400, seed)
    empty = pl.DataFrame(schema={"id_l": pl.Int64, "id_r": pl.Int64, "cannot_link": pl.Boolean})
    clusters = guarded_clusters(nodes, edges, empty)
    graph = nx.Graph()
    graph.add_nodes_from(nodes.tolist())
    graph.add_edges_from(edges.select("id_l", "id_r").rows())
    expected = {frozenset(c) for c in nx.connected_components(graph)}
    assert as_partition(clusters["node"], clusters["cluster"]) == expected


@pytest.mark.parametrize("seed", range(5))
def test_no_cluster_joins_a_cannot_link_pair_that_every_judgement_supports(seed):
    """Random graphs plus random cannot-link pairs, each the only judgement between its two
    nodes: no output cluster may contain one, and clusters are unions of networkx components."""
    nodes, edges = random_graph(300, 330, seed)
    rnd = random.Random(seed)
    cannot = {tuple(sorted(rnd.sample(range(300), 2))) for _ in range(60)}
    judged = pl.DataFrame(sorted(cannot), schema=["id_l", "id_r"], orient="row").with_columns(
        cannot_link=pl.lit(True)
    )
    clusters = guarded_clusters(nodes, edges, judged)
    label = dict(zip(clusters["node"].to_list(), clusters["cluster"].to_list(), strict=True))
    assert all(label[a] != label[b] for a, b in cannot)
    graph = nx.Graph()
    graph.add_nodes_from(nodes.tolist())
    graph.add_edges_from(edges.select("id_l", "id_r").rows())
    component = {n: i for i, c in enumerate(nx.connected_components(graph)) for n in c}
    for members in as_partition(clusters["node"], clusters["cluster"]):
        assert len({component[n] for n in members}) == 1


def test_a_household_chain_does_not_collapse_into_one_customer():
    """Ten people, each with two records; neighbours share a family phone (strong edges between
    people) but have different first names (cannot-link). Plain components would make one
    customer of twenty records; the guard keeps ten."""
    people = 10
    nodes = np.arange(people * 2)
    own = [(2 * p, 2 * p + 1, 30.0) for p in range(people)]
    shared = [(2 * p + 1, 2 * p + 2, 25.0) for p in range(people - 1)]
    edges = pl.DataFrame(own + shared, schema=["id_l", "id_r", "match_weight"], orient="row")
    judged = [
        (a, b, a // 2 != b // 2)
        for a in range(people * 2)
        for b in range(a + 1, people * 2)
        if abs(a // 2 - b // 2) <= 1
    ]
    clusters = guarded_clusters(
        nodes, edges, pl.DataFrame(judged, schema=["id_l", "id_r", "cannot_link"], orient="row")
    )
    assert as_partition(clusters["node"], clusters["cluster"]) == {
        frozenset({2 * p, 2 * p + 1}) for p in range(people)
    }


def test_only_a_pair_that_disagrees_on_something_votes_against_a_merge():
    """Records 2 and 3 share record 1's name and nothing else to compare (the model does not
    link them: too little evidence) while record 0, Bob's phone and name, links to 1. 2 and 3
    abstain; 4, the same name born on another day, votes against. Abstentions do not out-vote
    the strong link: Bob's records stay one customer."""
    levels = {
        "first_name_key_level": [6, 6, 6, 6],
        "last_name_key_level": [3, 3, 3, 3],
        "phone_e164_level": [2, -1, -1, -1],
        "birth_date_level": [-1, -1, -1, 0],
    }
    scored = pl.DataFrame(
        {
            "id_l": [0, 1, 1, 1],
            "id_r": [1, 2, 3, 4],
            "match_weight": [20.0, -1.0, -1.0, -9.0],
            "decision": ["probabilistic", "no match", "no match", "cannot-link"],
            "cannot_link": [False, False, False, True],
            "must_link": [False] * 4,
            "steward_cannot_link": [False] * 4,
            "match_probability": [0.999, 0.4, 0.4, 0.001],
            **levels,
        },
        schema_overrides={name: pl.Int8 for name in levels},
    )
    graph = PairGraph()
    graph.add(scored, scored)
    components = pl.DataFrame({"id": [0, 1, 2, 3, 4], "root": [0] * 5})
    judged = graph.judged(components).sort("id_r")
    assert judged.select("id_l", "id_r", "cannot_link").rows() == [
        (0, 1, False),
        (1, 4, True),
    ]


def test_one_typo_does_not_veto_a_merge():
    nodes = np.arange(4)
    edges = pl.DataFrame(
        [(0, 1, 20.0), (1, 2, 20.0), (2, 3, 19.0)],
        schema=["id_l", "id_r", "match_weight"],
        orient="row",
    )
    judged = pl.DataFrame(
        [(0, 3, True), (1, 3, False), (2, 3, False)],
        schema=["id_l", "id_r", "cannot_link"],
        orient="row",
    )
    assert guarded_clusters(nodes, edges, judged)["cluster"].to_list() == [0, 0, 0, 0]


def test_steward_cannot_link_is_never_crossed():
    nodes = np.arange(3)
    edges = pl.DataFrame(
        [(0, 1, 20.0), (1, 2, 20.0)], schema=["id_l", "id_r", "match_weight"], orient="row"
    )
    judged = pl.DataFrame(schema={"id_l": pl.Int64, "id_r": pl.Int64, "cannot_link": pl.Boolean})
    hard = pl.DataFrame({"id_l": [0], "id_r": [2]})
    labels = guarded_clusters(nodes, edges, judged, hard)["cluster"].to_list()
    assert labels[0] != labels[2]


def clusters_of(mapping: dict[str, str | None]) -> pl.DataFrame:
    return pl.DataFrame({"record_key": list(mapping), "cluster_key": list(mapping.values())})


def test_ids_are_stable_merges_recorded_and_new_ids_deterministic():
    first, history = assign_customer_ids(
        clusters_of({"a": "a", "b": "a", "c": "c", "d": "d"}),
        pl.DataFrame(schema={"record_key": pl.String, "customer_id": pl.String}),
    )
    assert set(history["event"]) == {"created"} and first["customer_id"].to_list() == [
        mint_id(k) for k in first["cluster_key"]
    ]
    previous = (
        pl.DataFrame({"record_key": ["a", "b", "c", "d"]})
        .join(clusters_of({"a": "a", "b": "a", "c": "c", "d": "d"}), on="record_key")
        .join(first, on="cluster_key")
        .select("record_key", "customer_id")
    )
    same, history = assign_customer_ids(
        clusters_of({"a": "a", "b": "a", "c": "c", "d": "d"}), previous
    )
    assert history.height == 0 and same.sort("cluster_key").equals(first.sort("cluster_key"))
    # c and d merge; a new record e arrives; b splits off from a.
    merged, history = assign_customer_ids(
        clusters_of({"a": "a", "b": "b", "c": "c", "d": "c", "e": "e"}), previous
    )
    ids = dict(merged.iter_rows())
    old = dict(first.iter_rows())
    survivor, absorbed = sorted([old["c"], old["d"]])  # equal overlap: the smaller id survives
    assert ids["a"] == old["a"] and ids["c"] == survivor
    events = {(e, c, r) for e, c, r, _ in history.rows()}
    assert ("merged", absorbed, survivor) in events
    assert ("split", ids["b"], old["a"]) in events and ("created", ids["e"], None) in events


def test_match_weight_arithmetic_is_explainable():
    comparison = COMPARISONS["email_norm"]
    assert comparison.label(comparison.exact_level) == "email_norm: exact"
    assert math.isclose(math.log2(0.9 / 0.001), 9.813781191217037)


def _records(rows: list[dict]) -> pl.DataFrame:
    from cdm_pipeline.standardise.records import CANONICAL_INPUT, standardise_records

    frame = pl.DataFrame(
        [
            {c: r.get(c) for c in CANONICAL_INPUT}
            | {
                "record_key": f"crm:{r['id']}",
                "source": "crm",
                "source_record_id": r["id"],
                "trust_rank": 1,
                "event_at": None,
            }
            for r in rows
        ],
        schema={c: pl.String for c in CANONICAL_INPUT}
        | {
            "record_key": pl.String,
            "source": pl.String,
            "source_record_id": pl.String,
            "trust_rank": pl.Int64,
            "event_at": pl.Datetime("us"),
        },
    )
    return standardise_records(frame)


def test_steward_overrides_are_honoured():
    from cdm_pipeline.pipeline_config import DEFAULTS
    from cdm_pipeline.resolve.engine import resolve
    from cdm_pipeline.resolve.overrides import OVERRIDE_SCHEMA

    records = _records(
        [
            {
                "id": "1",
                "first_name": "Ann",
                "last_name": "Lee",
                "email": "ann.lee@example.com",
                "phone": "(212) 555-0134",
            },
            {
                "id": "2",
                "first_name": "Ann",
                "last_name": "Lee",
                "email": "ann.lee@example.com",
                "phone": "212-555-0134",
                "street": "1 Main Street",
            },
            {"id": "3", "first_name": "Zed", "last_name": "Quux", "email": "zq@example.org"},
        ]
    )
    plain = dict(
        resolve(records, DEFAULTS["resolve"])
        .clusters.select("record_key", "cluster_key")
        .iter_rows()
    )
    assert plain["crm:1"] == plain["crm:2"] != plain["crm:3"]
    overrides = pl.DataFrame(
        [
            ("cannot_link", "crm", "1", "crm", "2", "two people"),
            ("must_link", "crm", "1", "crm", "3", "same person"),
        ],
        schema=OVERRIDE_SCHEMA,
        orient="row",
    )
    steered = dict(
        resolve(records, DEFAULTS["resolve"], overrides)
        .clusters.select("record_key", "cluster_key")
        .iter_rows()
    )
    assert steered["crm:1"] == steered["crm:3"] != steered["crm:2"]


def test_match_pairs_keep_the_refusals_that_split_a_cluster_and_drop_the_rest_under_the_floor():
    """Under the floor weight a pair is kept only when it decided something: a link, a
    steward's word, or a cannot-link between two profiles that match edges connect."""
    from cdm_pipeline.resolve.store import _pairs_table

    scored = pl.DataFrame(
        {
            "id_l": [1, 1, 3, 5, 7, 9],
            "id_r": [2, 3, 4, 6, 8, 10],
            "match_weight": [12.0, -30.0, -30.0, -30.0, -2.0, -8.0],
            "linked": [True, False, False, False, False, False],
            "cannot_link": [False, True, True, True, False, True],
            "must_link": [False] * 6,
            "steward_cannot_link": [False, False, False, True, False, False],
        }
    )
    profiles = pl.DataFrame(
        {
            "profile_id": list(range(1, 11)),
            "first_record_key": [f"crm:{i}" for i in range(1, 11)],
            # 1-2-3 one component of match edges; 4, 5, 6, 7, 8 each alone; 9 and 10 together
            "component": [1, 1, 1, 4, 5, 6, 7, 8, 9, 9],
        }
    )
    kept = _pairs_table(scored, profiles, 0.0, "run")
    assert sorted(kept.select("profile_id_l", "profile_id_r").rows()) == [
        (1, 2),  # linked
        (1, 3),  # a refusal inside one component
        (5, 6),  # a steward's cannot-link
        (9, 10),  # a refusal inside one component
    ]
    assert kept.filter(pl.col("profile_id_l") == 1)["example_record_key_r"].sort().to_list() == [
        "crm:2",
        "crm:3",
    ]
