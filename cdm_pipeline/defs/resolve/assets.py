"""Identity resolution as one step that writes its tables together: ``identity.match_pairs``,
``identity.customer_id_history`` and ``mart.customer_xref``, plus the resolver's state
(``identity.profiles``, ``identity.resolver_model``) that lets the next night be incremental.
Wiring only (~410 lines: the sharded comparison graph, the step and its checks); the resolver
is ``cdm_pipeline/resolve/``."""

import shutil
from datetime import datetime
from enum import Enum
from pathlib import Path

import dagster as dg
import duckdb
import polars as pl
from dagster_duckdb import DuckDBResource

from cdm_pipeline.defs.keys import (
    CUSTOMER_XREF,
    ID_HISTORY,
    MATCH_PAIRS,
    PAIR_COMPARISONS,
    PERSON_RECORDS,
    RESOLVE_GROUP,
)
from cdm_pipeline.defs.metadata import table_metadata
from cdm_pipeline.defs.resources import DUCKDB_TAGS, OWNER, PipelineResource
from cdm_pipeline.quality import total_variation
from cdm_pipeline.resolve.engine import link, plan_full
from cdm_pipeline.resolve.incremental import plan_incremental
from cdm_pipeline.resolve.overrides import read_overrides
from cdm_pipeline.resolve.shards import clear_stale_work, compare_shard, read_plan, write_plan
from cdm_pipeline.resolve.store import (
    PROBABILITY_BINS,
    load_state,
    records_to_resolve,
    unexplained_ids,
    write_resolution,
    xref_summary,
)

XREF_KEYS_UNIQUE_CHECK = "xref_keys_unique"
CLUSTER_SIZE_CHECK = "cluster_size_limit"
MULTI_SOURCE_SHARE_CHECK = "multi_source_share"
PROBABILITY_DRIFT_CHECK = "match_probability_drift"
HISTORY_COVERS_IDS_CHECK = "history_covers_live_ids"
RESOLVE_OP = "identity__resolution"


class ResolveMode(Enum):
    AUTO = "auto"  # incremental when a stored model fits the settings, else retrain
    FULL = "full"  # re-resolve every profile with the stored model (same answer as incremental)
    RETRAIN = "retrain"  # learn the model again from all records, then re-resolve everything


class ResolveConfig(dg.Config):
    """Run config of the resolve plan (``cdm run --resolve retrain``, or the launchpad)."""

    mode: ResolveMode = ResolveMode.AUTO


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
            records = records_to_resolve(conn)
            state = None if config.mode is ResolveMode.RETRAIN else load_state(conn, settings)
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
        group_name=RESOLVE_GROUP,
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
                group_name=RESOLVE_GROUP,
                owners=[OWNER],
                kinds={"duckdb", "polars"},
                description="Every scored candidate pair of identity profiles above the floor: each comparison's level "
                "and match weight, total weight, probability, cannot-link evidence and the decision.",
            ),
            dg.AssetSpec(
                ID_HISTORY,
                deps=[PAIR_COMPARISONS],
                group_name=RESOLVE_GROUP,
                owners=[OWNER],
                kinds={"duckdb"},
                description="Append-only history of customer ids: created, merged (into the survivor), split, retired, erased.",
            ),
            dg.AssetSpec(
                CUSTOMER_XREF,
                deps=[PAIR_COMPARISONS],
                group_name=RESOLVE_GROUP,
                owners=[OWNER],
                kinds={"duckdb"},
                description="One row per source record: the customer it belongs to and how it was linked.",
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
            written = write_resolution(conn, result, settings, retrain, run_id, now)
        history, histogram = written.history, written.histogram
        limit = quality["max_cluster_size"]
        with warehouse.get_connection() as conn:  # fresh connection: see validate/assets.py
            unexplained = unexplained_ids(conn)
            xref = xref_summary(conn, limit)
            shown = {
                key: table_metadata(conn, table)
                for key, table in (
                    (MATCH_PAIRS, "identity.match_pairs"),
                    (ID_HISTORY, "identity.customer_id_history"),
                    (CUSTOMER_XREF, "mart.customer_xref"),
                )
            }
        last_histogram = written.last_histogram
        drift = total_variation(histogram, last_histogram) if last_histogram else 0.0
        shutil.rmtree(workdir, ignore_errors=True)  # kept on failure, for a look
        yield dg.MaterializeResult(
            asset_key=MATCH_PAIRS,
            metadata={
                "pairs_written": written.pairs_written,
                "pairs_scored": result.stats["candidate_pairs"],
                "mode": result.mode,
                "blocking": dg.MetadataValue.md(
                    "| rule | pairs made over all profiles | pairs tonight | new | new and linked "
                    "| sampled: linked of compared | skipped blocks |\n"
                    "|---|---|---|---|---|---|---|\n"
                    + "\n".join(
                        f"| {r.rule} | {r.rule_pairs}"
                        f"{' (over budget: left out)' if r.over_budget else ''} | {r.pairs} "
                        f"| {r.new_pairs} | {r.linked_pairs} | {_sample_cell(r)} "
                        f"| {r.skipped_blocks} |"
                        for r in result.blocking
                    )
                ),
                "match_probability_histogram": dg.MetadataValue.md(
                    _bars(histogram, [f"{b:.1f}" for b in PROBABILITY_BINS[:-1]])
                ),
                # Plain numbers, so that the UI's Plots tab charts them night after night.
                **_certainty_counts(histogram),
                "em_iterations": result.params.em_iterations,
                "match_weight_histogram": dg.MetadataValue.md(_weight_bars(written.weight_bins)),
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
        yield dg.MaterializeResult(
            asset_key=CUSTOMER_XREF,
            metadata={
                "records": xref.records,
                "customers": xref.customers,
                "unlinked_records": xref.unlinked,
                "largest_cluster": xref.largest,
                "cluster_size_distribution": dg.MetadataValue.md(
                    _bars([n for _, n in xref.size_counts], [str(s) for s, _ in xref.size_counts])
                ),
                "link_methods": dg.MetadataValue.md(
                    _bars([n for _, n in xref.link_methods], [m for m, _ in xref.link_methods])
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
            passed=xref.duplicate_keys == 0,
            severity=dg.AssetCheckSeverity.ERROR,
            metadata={"duplicate_record_keys": xref.duplicate_keys},
        )
        yield dg.AssetCheckResult(
            check_name=CLUSTER_SIZE_CHECK,
            asset_key=CUSTOMER_XREF,
            passed=not xref.oversized,
            severity=dg.AssetCheckSeverity.ERROR,
            metadata={
                "largest_cluster": xref.largest,
                "limit": limit,
                "oversized_customers": len(xref.oversized),
                "examples": dg.MetadataValue.json(xref.oversized[:5]),
            },
        )
        yield dg.AssetCheckResult(
            check_name=MULTI_SOURCE_SHARE_CHECK,
            asset_key=CUSTOMER_XREF,
            passed=xref.customers == 0 or xref.multi_source_share > 0,
            severity=dg.AssetCheckSeverity.WARN,
            metadata={"share_multi_source": round(xref.multi_source_share, 4)},
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


def _sample_cell(report) -> str:
    """The yield gate's verdict on a rule (``resolve.yield_gate``)."""
    if report.sampled_pairs:
        verdict = "low yield: left out" if report.low_yield else "compared in full"
        return f"{report.sampled_links} of {report.sampled_pairs} ({verdict})"
    return "low yield: left out by the model" if report.low_yield else ""


def _weight_bars(pieces: list[pl.DataFrame], width: float = 5.0) -> str:
    """Scored pairs by match weight (``weight_bins_of`` each piece): the two humps of a healthy
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


def _certainty_counts(histogram: list[int]) -> dict[str, int]:
    """Tonight's pairs as sure apart, unsure and sure together (``PROBABILITY_BINS`` are tenths):
    a growing middle is the first sign of a model drifting from its data."""
    return {
        "pairs_probability_below_0.1": int(histogram[0]) if histogram else 0,
        "pairs_probability_0.1_to_0.9": int(sum(histogram[1:-1])),
        "pairs_probability_0.9_or_more": int(histogram[-1]) if histogram else 0,
    }


def _bars(values: list[int], labels: list[str]) -> str:
    top = max(values) if values else 0
    lines = ["| bin | count | |", "|---|---|---|"]
    for label, value in zip(labels, values, strict=True):
        lines.append(f"| {label} | {value} | {'█' * (round(20 * value / top) if top else 0)} |")
    return "\n".join(lines)
