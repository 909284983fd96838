"""The resolver's tables in the warehouse: the state a night starts from, and everything one
resolution writes, together: ``identity.match_pairs``, ``identity.profiles``,
``mart.customer_xref``, ``identity.customer_id_history``, the model and its reports."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path

import duckdb
import polars as pl

from cdm_pipeline.resolve.blocking import RuleReport
from cdm_pipeline.resolve.comparisons import default_comparisons
from cdm_pipeline.resolve.engine import Resolution, link
from cdm_pipeline.resolve.ids import assign_from_overlap
from cdm_pipeline.resolve.incremental import ResolverState, model_fingerprint, plan_incremental
from cdm_pipeline.resolve.profiles import DERIVED_KEYS, MATCH_FIELDS
from cdm_pipeline.resolve.scoring import ModelParameters
from cdm_pipeline.resolve.shards import compare_shard, read_plan, write_plan
from cdm_pipeline.warehouse import (
    ChangedRows,
    StagedTable,
    append_table,
    audit,
    replace_table,
    table_exists,
    transaction,
)

PROBABILITY_BINS = [i / 10 for i in range(11)]


@dataclass
class Written:
    """What one resolution wrote, for its checks and metadata."""

    history: pl.DataFrame
    pairs_written: int
    weight_bins: list[pl.DataFrame]
    histogram: list[int]
    last_histogram: list[int]


def records_to_resolve(conn: duckdb.DuckDBPyConnection) -> pl.DataFrame:
    """The person records' key and the fields the resolver reads."""
    columns = ", ".join(("record_key", *MATCH_FIELDS, *DERIVED_KEYS))
    return conn.sql(f"select {columns} from identity.person_records").pl()


def write_resolution(
    conn: duckdb.DuckDBPyConnection,
    result: Resolution,
    settings: dict,
    retrain: bool,
    run_id: str,
    now: datetime,
    settling: bool = False,
) -> Written:
    """Write a resolution's tables: the large ones staged outside the transaction (see
    ``StagedTable``) and swapped in inside it with everything else, so all of the run's tables
    change, or none. Customer ids are carried over from the stored xref
    (``assign_customer_ids``). ``settling``: a second resolution of the run's (after its
    removals), whose histogram replaces the first's."""
    full = result.mode == "full" or not table_exists(conn, "identity", "match_pairs")
    with (
        StagedTable(conn, "identity", "match_pairs") as staged_pairs,
        StagedTable(conn, "identity", "profiles") as staged_profiles,
        StagedTable(conn, "mart", "customer_xref") as staged_xref,
    ):
        # The profiles' identity columns are the step's largest frame: staged first and
        # dropped, before the record-level tables are built (10M: 7.8M profiles). An
        # incremental run writes only the profiles and xref rows that changed.
        profiles = result.profiles.with_columns(erased=pl.lit(False), recheck=pl.lit(False))
        changed_profiles = (
            None if full else ChangedRows.of(conn, "identity", "profiles", "profile_id", profiles)
        )
        if changed_profiles is None:
            staged_profiles.append(profiles)
        del profiles
        result.profiles = result.profiles.select(
            "profile_id", "cluster", "component", "first_record_key", "link_decision"
        )
        result.membership = result.membership.clear()
        last_histogram = _last_histogram(conn)
        history, record_count = _xref_tonight(conn, result, now)
        result.clusters = result.clusters.clear()
        changed_xref = (
            None
            if full
            else ChangedRows.of(
                conn, "mart", "customer_xref", "record_key", XREF_TONIGHT, stamp="resolved_at"
            )
        )
        if changed_xref is None:
            staged_xref.create_as(f"select * from {XREF_TONIGHT}")
        conn.execute(f"drop table {XREF_TONIGHT}")
        pieces = _pair_pieces(result, settings["floor_weight"], run_id)
        written, weight_bins, linked = 0, [], []
        if full:
            for pairs in pieces:
                staged_pairs.append(pairs)
                written += pairs.height
                weight_bins.append(weight_bins_of(pairs))
                linked.append(_linked_by_rule(pairs))
        with transaction(conn):
            if full:
                staged_pairs.swap()
            else:
                for pairs in _replace_incremental_pairs(conn, result, pieces):
                    written += pairs.height
                    weight_bins.append(weight_bins_of(pairs))
                    linked.append(_linked_by_rule(pairs))
            result.blocking = _with_linked_pairs(result.blocking, linked)
            for changed, staged in (
                (changed_profiles, staged_profiles),
                (changed_xref, staged_xref),
            ):
                if changed is None:
                    staged.swap()
                else:
                    changed.apply()
            _write_model(conn, result, settings, retrain, record_count, run_id, now)
            append_table(
                conn,
                "identity",
                "customer_id_history",
                history.with_columns(run_id=pl.lit(run_id), event_at=pl.lit(now)),
            )
            if not settling:  # the night's model and blocking were reported by its resolution
                append_table(conn, "identity", "model_parameters", _parameters(result, run_id))
                append_table(
                    conn,
                    "identity",
                    "blocking_report",
                    pl.DataFrame([vars(r) for r in result.blocking]).with_columns(
                        run_id=pl.lit(run_id), mode=pl.lit(result.mode)
                    ),
                )
            elif table_exists(conn, "identity", "probability_histogram"):
                conn.execute(
                    "delete from identity.probability_histogram where run_id = ?", [run_id]
                )
            histogram = _histogram(conn)
            append_table(
                conn,
                "identity",
                "probability_histogram",
                pl.DataFrame(
                    {
                        "run_id": run_id,
                        "bin": list(range(len(histogram))),
                        "pairs": histogram,
                    }
                ),
            )
            for event in ("created", "merged", "split"):
                n = history.filter(pl.col("event") == event).height
                audit(conn, run_id, event, "identity.customer_id_history", n)
    return Written(history, written, weight_bins, histogram, last_histogram)


def unexplained_ids(conn: duckdb.DuckDBPyConnection) -> int:
    """Live customer ids the history does not explain: never created or split, or merged,
    retired or erased since."""
    return conn.execute(
        "select count(*) from (select distinct customer_id from mart.customer_xref "
        "where customer_id is not null) x "
        "where customer_id not in (select customer_id from identity.customer_id_history "
        "where event in ('created', 'split')) "
        "or customer_id in (select h.customer_id from identity.customer_id_history h "
        "where h.event in ('merged', 'retired', 'erased') and h.event_at >= "
        "(select max(event_at) from identity.customer_id_history g "
        "where g.customer_id = h.customer_id and g.event in ('created', 'split')))"
    ).fetchall()[0][0]


@dataclass
class XrefSummary:
    """What the resolution's checks and metadata read of ``mart.customer_xref`` as stored."""

    records: int
    unlinked: int
    duplicate_keys: int
    customers: int
    largest: int
    multi_source_share: float
    oversized: list[str]  # customer ids over the size limit, smallest first
    size_counts: list[tuple[int, int]]  # (records per customer, customers)
    link_methods: list[tuple[str, int]]  # most used first


def xref_summary(conn: duckdb.DuckDBPyConnection, limit: int) -> XrefSummary:
    """Counted by DuckDB from the stored table (``limit``: the largest customer allowed)."""
    records, unlinked, duplicates = conn.execute(
        "select count(*), count(*) filter (where customer_id is null), "
        "count(*) - count(distinct record_key) from mart.customer_xref"
    ).fetchall()[0]
    conn.execute(
        "create or replace temp table _customer_sizes as select customer_id, count(*) as records, "
        "count(distinct source) as sources from mart.customer_xref "
        "where customer_id is not null group by all"
    )
    customers, largest, share = conn.execute(
        "select count(*), coalesce(max(records), 0), coalesce(avg((sources >= 2)::int), 0) "
        "from _customer_sizes"
    ).fetchall()[0]
    oversized = [
        c
        for (c,) in conn.execute(
            "select customer_id from _customer_sizes where records > ? order by customer_id",
            [limit],
        ).fetchall()
    ]
    size_counts = conn.execute(
        "select records, count(*) from _customer_sizes group by all order by records"
    ).fetchall()
    conn.execute("drop table _customer_sizes")
    methods = conn.execute(
        "select link_method, count(*) as n from mart.customer_xref group by all "
        "order by n desc, link_method"
    ).fetchall()
    return XrefSummary(
        records,
        unlinked,
        duplicates,
        customers,
        largest,
        float(share),
        oversized,
        size_counts,
        methods,
    )


XREF_TONIGHT = "_xref_tonight"
# Tonight's cross-reference, one row per person record, from the resolution's clusters
# (registered as ``_clusters``), their customer ids (``_assignment``) and each profile's link
# decision (``_decisions``).
_XREF_QUERY = f"""
create or replace temp table {XREF_TONIGHT} as
with sized as (
    select c.record_key, a.customer_id, c.profile_id, c.cluster_key, d.link_decision,
        count(*) over (partition by c.cluster_key) as cluster_records
    from _clusters c
    left join _assignment a using (cluster_key)
    left join _decisions d using (profile_id)
)
select r.record_key, r.source, r.source_record_id, s.customer_id, s.profile_id,
    case
        when s.profile_id is null then 'unlinked: no usable identifier'
        when s.cluster_key is null then 'unlinked: identifier shared by several customers'
        when s.link_decision is not null then 'matched: ' || s.link_decision
        when s.cluster_records > 1 then 'identical identity'
        else 'new customer: no match'
    end as link_method,
    $now::timestamp as resolved_at
from identity.person_records r left join sized s using (record_key)
"""


def _xref_tonight(
    conn: duckdb.DuckDBPyConnection, result: Resolution, now: datetime
) -> tuple[pl.DataFrame, int]:
    """Build ``XREF_TONIGHT`` in DuckDB and return the customer id history and the records.
    The previous ids are counted per cluster where they are stored (``assign_from_overlap``):
    every record's key and id never come into memory."""
    conn.register("_clusters", result.clusters.to_arrow())
    try:
        sizes = conn.sql(
            "select cluster_key, count(*)::uinteger as record_count from _clusters "
            "where cluster_key is not null group by all"
        ).pl()
        if table_exists(conn, "mart", "customer_xref"):
            carried = (
                "from _clusters c join mart.customer_xref x using (record_key) "
                "where c.cluster_key is not null and x.customer_id is not null"
            )
            overlap = conn.sql(
                "select c.cluster_key, x.customer_id, count(*)::uinteger as overlap "
                f"{carried} group by all"
            ).pl()
            previous_ids = conn.sql(
                "select distinct customer_id from mart.customer_xref where customer_id is not null"
            ).pl()
        else:
            overlap = pl.DataFrame(
                schema={"cluster_key": pl.String, "customer_id": pl.String, "overlap": pl.UInt32}
            )
            previous_ids = pl.DataFrame(schema={"customer_id": pl.String})
        assignment, history = assign_from_overlap(sizes, overlap, previous_ids)
        conn.register("_assignment", assignment.to_arrow())
        conn.register(
            "_decisions", result.profiles.select("profile_id", "link_decision").to_arrow()
        )
        conn.execute(_XREF_QUERY, {"now": now})
    finally:
        for name in ("_clusters", "_assignment", "_decisions"):
            conn.unregister(name)
    (records,) = conn.execute(f"select count(*) from {XREF_TONIGHT}").fetchall()[0]
    return history, records


def _pairs_table(
    scored: pl.DataFrame, profiles: pl.DataFrame, floor: float, run_id: str
) -> pl.DataFrame:
    """The scored pairs match_pairs keeps, each end named by an example record key: those at
    or over the floor weight, the links, a steward's, and the refusals that split a cluster
    (a cannot-link between two profiles that match edges connect). A cannot-link between
    profiles no match edge connects changed nothing: under the floor it is not kept (most
    scored pairs are such: two people who share a surname and a postcode)."""
    refusal = pl.col("cannot_link") & (
        pl.col("component_l").is_not_null() & (pl.col("component_l") == pl.col("component_r"))
    )
    ends = profiles.select("profile_id", "component", "first_record_key")
    for side in ("l", "r"):
        scored = scored.join(
            ends.rename(
                {
                    "profile_id": f"id_{side}",
                    "component": f"component_{side}",
                    "first_record_key": f"example_record_key_{side}",
                }
            ),
            on=f"id_{side}",
            how="left",
        )
    return (
        scored.filter(
            (pl.col("match_weight") >= floor)
            | pl.col("linked")
            | pl.col("must_link")
            | pl.col("steward_cannot_link")
            | refusal
        )
        .drop("component_l", "component_r")
        .rename({"id_l": "profile_id_l", "id_r": "profile_id_r"})
        .with_columns(run_id=pl.lit(run_id))
    )


def _linked_by_rule(pairs: pl.DataFrame) -> pl.DataFrame:
    """Linked pairs per blocking rule (the first rule that proposed each pair)."""
    return pairs.filter(pl.col("linked")).group_by("blocking_rule").agg(linked=pl.len())


def _with_linked_pairs(reports: list[RuleReport], linked: list[pl.DataFrame]) -> list[RuleReport]:
    """Each rule's report with the count of its new pairs tonight's resolution linked: what
    the rule found for what it cost (a rule whose pairs never link only costs comparisons)."""
    if not linked:
        return reports
    counts = dict(pl.concat(linked).group_by("blocking_rule").agg(pl.sum("linked")).iter_rows())
    return [replace(r, linked_pairs=int(counts.get(n, 0))) for n, r in enumerate(reports)]


def _pair_pieces(result: Resolution, floor: float, run_id: str) -> Iterator[pl.DataFrame]:
    """The rows match_pairs gets from this run, a piece of scored pairs at a time."""
    profiles = result.profiles.select("profile_id", "first_record_key", "component")
    for scored in result.scored_pairs():
        yield _pairs_table(scored, profiles, floor, run_id)


def _replace_incremental_pairs(
    conn, result: Resolution, pieces: Iterator[pl.DataFrame]
) -> Iterator[pl.DataFrame]:
    """An incremental run replaces the pairs among re-clustered profiles and of vanished ones,
    and keeps the rest (scored by the same model on earlier nights); yields what it appends."""
    conn.register("_refreshed", result.refreshed.to_frame("profile_id").to_arrow())
    conn.register("_gone", result.gone.to_frame("profile_id").to_arrow())
    try:
        conn.execute(
            "delete from identity.match_pairs where "
            "(profile_id_l in (select profile_id from _refreshed) "
            "and profile_id_r in (select profile_id from _refreshed)) "
            "or profile_id_l in (select profile_id from _gone) "
            "or profile_id_r in (select profile_id from _gone)"
        )
    finally:
        conn.unregister("_refreshed")
        conn.unregister("_gone")
    for pairs in pieces:
        append_table(conn, "identity", "match_pairs", pairs)
        yield pairs


def load_state(conn: duckdb.DuckDBPyConnection, settings: dict) -> ResolverState | None:
    """The last run's model and profile clusters, if trained under the same settings."""
    if not all(
        table_exists(conn, "identity", t)
        for t in ("resolver_model", "model_term_frequencies", "profiles")
    ):
        return None
    row = conn.execute(
        "select model_json, trained_records from identity.resolver_model where fingerprint = ?",
        [model_fingerprint(settings)],
    ).fetchall()
    if not row:
        return None
    row = row[0]
    model = ModelParameters.from_stored(
        row[0],
        conn.sql("select comparison, value, share from identity.model_term_frequencies").pl(),
    )
    profiles = conn.sql("select * from identity.profiles").pl()
    return ResolverState(model, profiles, model_fingerprint(settings), row[1])


def _write_model(
    conn,
    result: Resolution,
    settings: dict,
    trained: bool,
    records: int,
    run_id: str,
    now: datetime,
) -> None:
    """The model a retrained run learnt, for the next nights to score with."""
    if not trained:
        return
    replace_table(
        conn,
        "identity",
        "resolver_model",
        pl.DataFrame(
            {
                "fingerprint": [model_fingerprint(settings)],
                "model_json": [result.params.to_json()],
                "trained_records": [records],
                "trained_run_id": [run_id],
                "trained_at": [now],
            }
        ),
    )
    replace_table(conn, "identity", "model_term_frequencies", result.params.term_frequency_rows())


def _parameters(result: Resolution, run_id: str) -> pl.DataFrame:
    rows = result.params.as_rows(default_comparisons())
    frame = pl.DataFrame(rows)
    return frame.with_columns(
        run_id=pl.lit(run_id),
        mode=pl.lit(result.mode),
        prior_among_candidates=pl.lit(result.params.prior),
        prior_random_pair=pl.lit(result.params.global_prior),
        em_converged=pl.lit(result.params.em_converged),
    )


def _histogram(conn: duckdb.DuckDBPyConnection) -> list[int]:
    """Match probabilities of the pairs in match_pairs (all of them, whichever night scored them)."""
    rows = dict(
        conn.execute(
            "select least(floor(coalesce(match_probability, 0) * 10), 9)::int as bin, count(*) "
            "from identity.match_pairs group by all"
        ).fetchall()
    )
    return [int(rows.get(b, 0)) for b in range(len(PROBABILITY_BINS) - 1)]


def _last_histogram(conn: duckdb.DuckDBPyConnection) -> list[int]:
    if not table_exists(conn, "identity", "probability_histogram"):
        return []
    rows = conn.execute(
        "select pairs from identity.probability_histogram where run_id = "
        "(select run_id from identity.probability_histogram order by rowid desc limit 1) order by bin"
    ).fetchall()
    return [r[0] for r in rows]


def weight_bins_of(pairs: pl.DataFrame, width: float = 5.0) -> pl.DataFrame:
    """``bin, len``: scored pairs by match weight (bits), in bins of ``width``."""
    return (
        pairs.select((pl.col("match_weight").clip(-30, 45) / width).floor().mul(width).alias("bin"))
        .group_by("bin")
        .len()
    )


def settle_after_removals(
    conn: duckdb.DuckDBPyConnection,
    settings: dict,
    overrides: pl.DataFrame | None,
    workdir: Path,
    run_id: str,
    now: datetime,
) -> int:
    """Re-resolve what tonight's removals touched (erased customers, scrubbed records), so the
    night publishes the customers the remaining records make: without it the next night would
    re-cluster the components around an erased person, and a rerun on the same landing would
    move records. Incremental, as a night with new records is (``plan_incremental`` finds the
    touched components from the forgotten and vanished profiles); call it only when something
    was removed. Returns the profiles re-clustered."""
    state = load_state(conn, settings)
    if state is None:
        return 0
    plan = plan_incremental(records_to_resolve(conn), settings, state, overrides)
    del state
    for shard in write_plan(plan, workdir, 1):
        compare_shard(shard)
    del plan
    plan, level_files = read_plan(workdir)
    result = link(plan, level_files, settings, overrides, spill=workdir)
    reclustered = int(result.refreshed.len())
    write_resolution(conn, result, settings, False, run_id, now, settling=True)
    shutil.rmtree(workdir, ignore_errors=True)
    return reclustered
