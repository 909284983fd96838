"""Identity resolution as one step that writes its tables together: ``identity.match_pairs``,
``identity.customer_id_history`` and ``mart.customer_xref``, plus the resolver's state
(``identity.profiles``, ``identity.resolver_model``) that lets the next night be incremental."""

import shutil
from collections.abc import Iterator
from datetime import datetime
from enum import Enum
from pathlib import Path

import dagster as dg
import duckdb
import polars as pl
from dagster_duckdb import DuckDBResource

from cdm_pipeline.defs.metadata import table_metadata, table_schema
from cdm_pipeline.defs.resources import DUCKDB_TAGS, OWNER, PipelineResource
from cdm_pipeline.defs.standardise.assets import PERSON_RECORDS
from cdm_pipeline.quality import total_variation
from cdm_pipeline.resolve.comparisons import default_comparisons
from cdm_pipeline.resolve.engine import Resolution, link, plan_full
from cdm_pipeline.resolve.ids import assign_customer_ids
from cdm_pipeline.resolve.incremental import ResolverState, model_fingerprint, plan_incremental
from cdm_pipeline.resolve.overrides import read_overrides
from cdm_pipeline.resolve.profiles import DERIVED_KEYS, MATCH_FIELDS
from cdm_pipeline.resolve.scoring import ModelParameters
from cdm_pipeline.resolve.shards import clear_stale_work, compare_shard, read_plan, write_plan
from cdm_pipeline.warehouse import (
    StagedTable,
    append_table,
    audit,
    replace_table,
    table_exists,
    transaction,
)

MATCH_PAIRS = dg.AssetKey(["identity", "match_pairs"])
ID_HISTORY = dg.AssetKey(["identity", "customer_id_history"])
CUSTOMER_XREF = dg.AssetKey(["mart", "customer_xref"])
PAIR_COMPARISONS = dg.AssetKey(["identity", "pair_comparisons"])

XREF_KEYS_UNIQUE_CHECK = "xref_keys_unique"
CLUSTER_SIZE_CHECK = "cluster_size_limit"
MULTI_SOURCE_SHARE_CHECK = "multi_source_share"
PROBABILITY_DRIFT_CHECK = "match_probability_drift"
HISTORY_COVERS_IDS_CHECK = "history_covers_live_ids"
PROBABILITY_BINS = [i / 10 for i in range(11)]
RESOLVE_OP = "resolve_identities"


class ResolveMode(Enum):
    AUTO = "auto"  # incremental when a stored model fits the settings, else retrain
    FULL = "full"  # re-resolve every profile with the stored model (same answer as incremental)
    RETRAIN = "retrain"  # learn the model again from all records, then re-resolve everything


class ResolveConfig(dg.Config):
    """Run config of the resolve plan (``cdm run --resolve retrain``, or the launchpad)."""

    mode: ResolveMode = ResolveMode.AUTO


XREF_COLUMNS = {
    "record_key": ("varchar", "source:source_record_id; unique"),
    "source": ("varchar", "source name"),
    "source_record_id": ("varchar", "the record's id in its source"),
    "customer_id": ("varchar", "stable customer id; null when the record could not be linked"),
    "profile_id": ("bigint", "identical-identity group this run (joins identity.match_pairs)"),
    "link_method": ("varchar", "how the record joined its customer"),
    "resolved_at": ("timestamp", "when this run resolved it"),
}


def _shard_name(number: int) -> str:
    return f"shard_{number:03d}"


def pair_comparisons_asset(count: int) -> dg.AssetsDefinition:
    """Plan, then ``count`` comparison shards (``resolve.shards``), then one join. The fan-out
    is fixed when the Definitions load, so every executor runs it: in process, in processes,
    or on Dask workers (which do not run dynamic outputs)."""
    count = max(int(count), 1)

    @dg.op(
        name="plan_resolution",
        ins={"person_records": dg.In(dg.Nothing)},
        out={_shard_name(n): dg.Out(str) for n in range(count)},
        tags=DUCKDB_TAGS,
        description="Choose the run's mode and plan what to compare; write the plan and one pair "
        "file per shard to the run's work folder.",
    )
    def plan_resolution(
        context: dg.OpExecutionContext,
        config: ResolveConfig,
        warehouse: DuckDBResource,
        pipeline: PipelineResource,
    ):
        settings = pipeline.config()["resolve"]
        with warehouse.get_connection() as conn:
            columns = ", ".join(("record_key", *MATCH_FIELDS, *DERIVED_KEYS))  # what it resolves on
            records = conn.sql(f"select {columns} from identity.person_records").pl()
            state = None if config.mode is ResolveMode.RETRAIN else _load_state(conn, settings)
        retrain = state is None or records.height > state.trained_records * (
            1 + settings["retrain_growth"]
        )
        if retrain:
            plan = plan_full(records, settings)
        elif config.mode is ResolveMode.FULL:
            plan = plan_full(records, settings, model=state.model)
        else:
            plan = plan_incremental(
                records, settings, state, read_overrides(pipeline.overrides_path)
            )
        plan.stats["model_retrained"] = retrain
        del records
        workdir = pipeline.run_work_dir(context.run.run_id)
        stale = clear_stale_work(workdir.parent, keep=workdir)
        shards = write_plan(plan, workdir, count)
        context.log.info(
            f"resolve: {plan.mode}, model retrained: {retrain}, {plan.pairs.height} pairs to compare "
            f"in {len(shards)} shards, {plan.refreshed.len()} of {plan.profiles.height} profiles to cluster; "
            f"{stale} work folders of earlier runs removed"
        )
        for number, path in enumerate(shards):
            yield dg.Output(str(path), output_name=_shard_name(number))

    @dg.graph_asset(
        key=PAIR_COMPARISONS,
        ins={"person_records": dg.AssetIn(PERSON_RECORDS, dagster_type=dg.Nothing)},
        group_name="resolve",
        owners=[OWNER],
        kinds={"polars", "parquet"},
        description="This run's candidate pairs compared field by field, in shards that run side "
        "by side under a multiprocess or Dask executor: files in the run's work folder, read by "
        "the link step. Incremental runs compare only tonight's changes.",
    )
    def pair_comparisons(person_records):
        planned = plan_resolution(person_records)
        planned = planned if count > 1 else (planned,)
        return comparisons_complete(
            [
                compare_pair_shard.alias(f"compare_pair_shard_{n:03d}")(pairs_file)
                for n, pairs_file in enumerate(planned)
            ]
        )

    return pair_comparisons


@dg.op(description="Compare one shard of candidate pairs field by field (no warehouse access).")
def compare_pair_shard(pairs_file: str) -> str:
    return str(compare_shard(Path(pairs_file)))


@dg.op(description="Every shard compared: the link step can start.")
def comparisons_complete(level_files: list[str]) -> dg.Output[int]:
    """The pairs compared tonight, shown as the asset's table: the level of each comparison per
    pair (numbers and record keys only)."""
    if not level_files:
        return dg.Output(0, metadata={"shards": 0})
    with duckdb.connect() as db:
        db.read_parquet(level_files, union_by_name=True).create_view("pair_levels")
        shown = table_metadata(db, "main.pair_levels")
    return dg.Output(len(level_files), metadata={"shards": len(level_files), **shown})


@dg.asset_check(
    asset=PAIR_COMPARISONS,
    blocking=True,
    description="Every shard's pairs were compared: one row of levels per pair, in every shard.",
)
def every_pair_compared(context: dg.AssetCheckExecutionContext, pipeline: PipelineResource):
    missing = 0
    shards = 0
    for pairs_file in sorted(pipeline.run_work_dir(context.run.run_id).glob("pairs-*.parquet")):
        shards += 1
        levels_file = pairs_file.with_name(pairs_file.name.replace("pairs-", "levels-"))
        pairs = pl.scan_parquet(pairs_file).select(pl.len()).collect().item()
        levels = (
            pl.scan_parquet(levels_file).select(pl.len()).collect().item()
            if levels_file.exists()
            else 0
        )
        missing += pairs - levels
    return dg.AssetCheckResult(
        passed=shards > 0 and missing == 0,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={"shards": shards, "pairs_without_levels": missing},
    )


def resolve_run_config(mode: str = "AUTO") -> dict:
    """Run config choosing the resolve mode (``ResolveMode`` name)."""
    return {
        "ops": {
            "identity__pair_comparisons": {"ops": {"plan_resolution": {"config": {"mode": mode}}}}
        }
    }


def resolve_assets() -> dg.AssetsDefinition:
    @dg.multi_asset(
        specs=[
            dg.AssetSpec(
                MATCH_PAIRS,
                deps=[PAIR_COMPARISONS],
                group_name="resolve",
                owners=[OWNER],
                kinds={"duckdb", "polars"},
                description="Every scored candidate pair of identity profiles above the floor: each comparison's level "
                "and match weight, total weight, probability, cannot-link evidence and the decision.",
            ),
            dg.AssetSpec(
                ID_HISTORY,
                deps=[PAIR_COMPARISONS],
                group_name="resolve",
                owners=[OWNER],
                kinds={"duckdb"},
                description="Append-only history of customer ids: created, merged (into the survivor), split, retired, erased.",
            ),
            dg.AssetSpec(
                CUSTOMER_XREF,
                deps=[PAIR_COMPARISONS],
                group_name="resolve",
                owners=[OWNER],
                kinds={"duckdb"},
                description="One row per source record: the customer it belongs to and how it was linked.",
                metadata={"dagster/column_schema": table_schema(XREF_COLUMNS)},
            ),
        ],
        check_specs=[
            dg.AssetCheckSpec(
                XREF_KEYS_UNIQUE_CHECK,
                asset=CUSTOMER_XREF,
                blocking=True,
                description="Each source record appears once in the xref.",
            ),
            dg.AssetCheckSpec(
                CLUSTER_SIZE_CHECK,
                asset=CUSTOMER_XREF,
                blocking=True,
                description="No customer has more records than the over-merge limit.",
            ),
            dg.AssetCheckSpec(
                MULTI_SOURCE_SHARE_CHECK,
                asset=CUSTOMER_XREF,
                description="Share of customers seen in two or more sources (reported; fails if zero).",
            ),
            dg.AssetCheckSpec(
                PROBABILITY_DRIFT_CHECK,
                asset=MATCH_PAIRS,
                description="Match-probability histogram is close to the last run's.",
            ),
            dg.AssetCheckSpec(
                HISTORY_COVERS_IDS_CHECK,
                asset=ID_HISTORY,
                blocking=True,
                description="Every live customer id was created or split in the history and not retired or merged away.",
            ),
        ],
        name=RESOLVE_OP,
        can_subset=False,
        op_tags=DUCKDB_TAGS,
    )
    def _resolve(
        context: dg.AssetExecutionContext, warehouse: DuckDBResource, pipeline: PipelineResource
    ):
        settings = pipeline.config()["resolve"]
        quality = pipeline.config()["quality"]
        now = datetime.now()
        run_id = context.run.run_id
        workdir = pipeline.run_work_dir(run_id)
        plan, level_files = read_plan(workdir)
        retrain = bool(plan.stats["model_retrained"])
        overrides = read_overrides(pipeline.overrides_path)
        result = link(plan, level_files, settings, overrides, spill=workdir)
        del plan
        with warehouse.get_connection() as conn:
            # The large tables are staged outside the transaction (see StagedTable) and swapped
            # in inside it with everything else: all of the run's tables change, or none.
            full = result.mode == "full" or not table_exists(conn, "identity", "match_pairs")
            with (
                StagedTable(conn, "identity", "match_pairs") as staged_pairs,
                StagedTable(conn, "identity", "profiles") as staged_profiles,
                StagedTable(conn, "mart", "customer_xref") as staged_xref,
            ):
                # The profiles' identity columns are the step's largest frame: staged first and
                # dropped, before the record-level tables are built (10M: 7.8M profiles).
                staged_profiles.append(
                    result.profiles.with_columns(erased=pl.lit(False), recheck=pl.lit(False))
                )
                result.profiles = result.profiles.select(
                    "profile_id", "cluster", "first_record_key", "link_decision"
                )
                result.membership = result.membership.clear()
                records = conn.sql(
                    "select record_key, source, source_record_id from identity.person_records"
                ).pl()
                previous = (
                    conn.sql("select record_key, customer_id from mart.customer_xref").pl()
                    if table_exists(conn, "mart", "customer_xref")
                    else pl.DataFrame(schema={"record_key": pl.String, "customer_id": pl.String})
                )
                last_histogram = _last_histogram(conn)
                assignment, history = assign_customer_ids(result.clusters, previous)
                xref = _xref(records, result, assignment, now)
                record_count = records.height
                del records, previous, assignment
                result.clusters = result.clusters.clear()
                staged_xref.append(xref)
                pieces = _pair_pieces(result, settings["floor_weight"], run_id)
                written, weight_bins = 0, []
                if full:
                    for pairs in pieces:
                        staged_pairs.append(pairs)
                        written += pairs.height
                        weight_bins.append(_weight_bins(pairs))
                with transaction(conn):
                    if full:
                        staged_pairs.swap()
                    else:
                        for pairs in _replace_incremental_pairs(conn, result, pieces):
                            written += pairs.height
                            weight_bins.append(_weight_bins(pairs))
                    staged_profiles.swap()
                    staged_xref.swap()
                    _write_model(conn, result, settings, retrain, record_count, run_id, now)
                    append_table(
                        conn,
                        "identity",
                        "customer_id_history",
                        history.with_columns(
                            run_id=pl.lit(context.run.run_id), event_at=pl.lit(now)
                        ),
                    )
                    append_table(conn, "identity", "model_parameters", _parameters(result, run_id))
                    append_table(
                        conn,
                        "identity",
                        "blocking_report",
                        pl.DataFrame([vars(r) for r in result.blocking]).with_columns(
                            run_id=pl.lit(run_id), mode=pl.lit(result.mode)
                        ),
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
        with warehouse.get_connection() as conn:  # fresh connection: see validate/assets.py
            unexplained = conn.execute(
                "select count(*) from (select distinct customer_id from mart.customer_xref where customer_id is not null) x "
                "where customer_id not in (select customer_id from identity.customer_id_history where event in ('created', 'split')) "
                "or customer_id in (select h.customer_id from identity.customer_id_history h where h.event in ('merged', 'retired', 'erased') "
                "and h.event_at >= (select max(event_at) from identity.customer_id_history g where g.customer_id = h.customer_id "
                "and g.event in ('created', 'split')))"
            ).fetchall()[0][0]
            shown = {
                key: table_metadata(conn, table)
                for key, table in (
                    (MATCH_PAIRS, "identity.match_pairs"),
                    (ID_HISTORY, "identity.customer_id_history"),
                    (CUSTOMER_XREF, "mart.customer_xref"),
                )
            }
        sizes = (
            xref.filter(pl.col("customer_id").is_not_null())
            .group_by("customer_id")
            .agg(pl.len().alias("records"), pl.col("source").n_unique().alias("sources"))
        )
        limit = quality["max_cluster_size"]
        largest = int(sizes["records"].max() or 0)
        oversized = sizes.filter(pl.col("records") > limit)
        multi_share = float((sizes["sources"] >= 2).mean() or 0.0)
        duplicate_keys = xref.height - xref["record_key"].n_unique()
        drift = total_variation(histogram, last_histogram) if last_histogram else 0.0
        shutil.rmtree(workdir, ignore_errors=True)  # kept on failure, for a look
        yield dg.MaterializeResult(
            asset_key=MATCH_PAIRS,
            metadata={
                "pairs_written": written,
                "pairs_scored": result.stats["candidate_pairs"],
                "mode": result.mode,
                "blocking": dg.MetadataValue.md(
                    "| rule | pairs made over all profiles | pairs tonight | new | skipped blocks "
                    "|\n|---|---|---|---|---|\n"
                    + "\n".join(
                        f"| {r.rule} | {r.rule_pairs}"
                        f"{' (over budget: left out)' if r.over_budget else ''} | {r.pairs} "
                        f"| {r.new_pairs} | {r.skipped_blocks} |"
                        for r in result.blocking
                    )
                ),
                "match_probability_histogram": dg.MetadataValue.md(
                    _bars(histogram, [f"{b:.1f}" for b in PROBABILITY_BINS[:-1]])
                ),
                "em_iterations": result.params.em_iterations,
                "match_weight_histogram": dg.MetadataValue.md(_weight_bars(weight_bins)),
                **shown[MATCH_PAIRS],
            },
        )
        yield dg.MaterializeResult(
            asset_key=ID_HISTORY,
            metadata={
                **{
                    e: history.filter(pl.col("event") == e).height
                    for e in ("created", "merged", "split", "retired")
                },
                **shown[ID_HISTORY],
            },
        )
        size_counts = sizes.group_by("records").len().sort("records")
        methods = xref.group_by("link_method").len().sort("len", descending=True)
        yield dg.MaterializeResult(
            asset_key=CUSTOMER_XREF,
            metadata={
                "records": xref.height,
                "customers": sizes.height,
                "unlinked_records": xref.filter(pl.col("customer_id").is_null()).height,
                "largest_cluster": largest,
                "cluster_size_distribution": dg.MetadataValue.md(
                    _bars(size_counts["len"].to_list(), size_counts["records"].cast(str).to_list())
                ),
                "link_methods": dg.MetadataValue.md(
                    _bars(methods["len"].to_list(), methods["link_method"].to_list())
                ),
                **shown[CUSTOMER_XREF],
                **{
                    k: (round(v, 6) if isinstance(v, float) else v) for k, v in result.stats.items()
                },
            },
        )
        yield dg.AssetCheckResult(
            check_name=XREF_KEYS_UNIQUE_CHECK,
            asset_key=CUSTOMER_XREF,
            passed=duplicate_keys == 0,
            severity=dg.AssetCheckSeverity.ERROR,
            metadata={"duplicate_record_keys": duplicate_keys},
        )
        yield dg.AssetCheckResult(
            check_name=CLUSTER_SIZE_CHECK,
            asset_key=CUSTOMER_XREF,
            passed=oversized.height == 0,
            severity=dg.AssetCheckSeverity.ERROR,
            metadata={
                "largest_cluster": largest,
                "limit": limit,
                "oversized_customers": oversized.height,
                "examples": dg.MetadataValue.json(oversized["customer_id"].head(5).to_list()),
            },
        )
        yield dg.AssetCheckResult(
            check_name=MULTI_SOURCE_SHARE_CHECK,
            asset_key=CUSTOMER_XREF,
            passed=sizes.height == 0 or multi_share > 0,
            severity=dg.AssetCheckSeverity.WARN,
            metadata={"share_multi_source": round(multi_share, 4)},
        )
        yield dg.AssetCheckResult(
            check_name=HISTORY_COVERS_IDS_CHECK,
            asset_key=ID_HISTORY,
            passed=unexplained == 0,
            severity=dg.AssetCheckSeverity.ERROR,
            metadata={"unexplained_ids": unexplained},
        )
        yield dg.AssetCheckResult(
            check_name=PROBABILITY_DRIFT_CHECK,
            asset_key=MATCH_PAIRS,
            passed=drift <= quality["max_probability_drift"],
            severity=dg.AssetCheckSeverity.WARN,
            metadata={"total_variation": round(drift, 4), "has_previous_run": bool(last_histogram)},
        )

    return _resolve


def _xref(
    records: pl.DataFrame, result: Resolution, assignment: pl.DataFrame, now: datetime
) -> pl.DataFrame:
    sized = (
        result.clusters.join(assignment, on="cluster_key", how="left")
        .join(result.profiles.select("profile_id", "link_decision"), on="profile_id", how="left")
        .with_columns(cluster_records=pl.len().over("cluster_key"))
    )
    method = (
        pl.when(pl.col("profile_id").is_null())
        .then(pl.lit("unlinked: no usable identifier"))
        .when(pl.col("cluster_key").is_null())
        .then(pl.lit("unlinked: identifier shared by several customers"))
        .when(pl.col("link_decision").is_not_null())
        .then(pl.concat_str([pl.lit("matched: "), pl.col("link_decision")]))
        .when(pl.col("cluster_records") > 1)
        .then(pl.lit("identical identity"))
        .otherwise(pl.lit("new customer: no match"))
    )
    return (
        records.select("record_key", "source", "source_record_id")
        .join(
            sized.select("record_key", "customer_id", "profile_id", link_method=method),
            on="record_key",
            how="left",
        )
        .with_columns(resolved_at=pl.lit(now))
    )


def _pairs_table(
    scored: pl.DataFrame, first_keys: pl.DataFrame, floor: float, run_id: str
) -> pl.DataFrame:
    """The scored pairs match_pairs keeps, each end named by an example record key."""
    kept = scored.filter(
        (pl.col("match_weight") >= floor)
        | pl.col("linked")
        | pl.col("cannot_link")
        | pl.col("must_link")
    )
    named = pl.concat([kept["id_l"], kept["id_r"]]).unique().implode()
    keys = first_keys.filter(pl.col("profile_id").is_in(named))
    return (
        kept.join(
            keys.rename({"profile_id": "id_l", "first_record_key": "example_record_key_l"}),
            on="id_l",
            how="left",
        )
        .join(
            keys.rename({"profile_id": "id_r", "first_record_key": "example_record_key_r"}),
            on="id_r",
            how="left",
        )
        .rename({"id_l": "profile_id_l", "id_r": "profile_id_r"})
        .with_columns(run_id=pl.lit(run_id))
    )


def _pair_pieces(result: Resolution, floor: float, run_id: str) -> Iterator[pl.DataFrame]:
    """The rows match_pairs gets from this run, a piece of scored pairs at a time."""
    first_keys = result.profiles.select("profile_id", "first_record_key")
    for scored in result.scored_pairs():
        yield _pairs_table(scored, first_keys, floor, run_id)


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


def _load_state(conn, settings: dict) -> ResolverState | None:
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


def _histogram(conn) -> list[int]:
    """Match probabilities of the pairs in match_pairs (all of them, whichever night scored them)."""
    rows = dict(
        conn.execute(
            "select least(floor(coalesce(match_probability, 0) * 10), 9)::int as bin, count(*) "
            "from identity.match_pairs group by all"
        ).fetchall()
    )
    return [int(rows.get(b, 0)) for b in range(len(PROBABILITY_BINS) - 1)]


def _last_histogram(conn) -> list[int]:
    if not table_exists(conn, "identity", "probability_histogram"):
        return []
    rows = conn.execute(
        "select pairs from identity.probability_histogram where run_id = "
        "(select run_id from identity.probability_histogram order by rowid desc limit 1) order by bin"
    ).fetchall()
    return [r[0] for r in rows]


def _weight_bins(pairs: pl.DataFrame, width: float = 5.0) -> pl.DataFrame:
    """``bin, len``: scored pairs by match weight (bits), in bins of ``width``."""
    return (
        pairs.select((pl.col("match_weight").clip(-30, 45) / width).floor().mul(width).alias("bin"))
        .group_by("bin")
        .len()
    )


def _weight_bars(pieces: list[pl.DataFrame], width: float = 5.0) -> str:
    """Scored pairs by match weight (``_weight_bins`` of each piece): the two humps of a healthy
    model, non-matches far left and matches far right, with few in between."""
    if not pieces:
        return "no pairs scored this run"
    binned = (
        pl.concat(pieces).drop_nulls("bin").group_by("bin").agg(pl.col("len").sum()).sort("bin")
    )
    if binned.height == 0:
        return "no pairs scored this run"
    labels = [f"{b:+.0f} to {b + width:+.0f}" for b in binned["bin"].to_list()]
    return _bars(binned["len"].to_list(), labels)


def _bars(values: list[int], labels: list[str]) -> str:
    top = max(values) if values else 0
    lines = ["| bin | count | |", "|---|---|---|"]
    for label, value in zip(labels, values, strict=True):
        lines.append(f"| {label} | {value} | {'█' * (round(20 * value / top) if top else 0)} |")
    return "\n".join(lines)
