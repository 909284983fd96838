"""Incremental nightly resolution gives what a full rebuild with the same model gives."""

from __future__ import annotations

import shutil
from dataclasses import replace

import dagster as dg
import duckdb
import polars as pl
import pytest

from cdm_pipeline.definitions import parallel_job
from cdm_pipeline.locations import PACKAGE_DATA
from cdm_pipeline.pipeline_config import DEFAULTS
from cdm_pipeline.resolve import engine
from cdm_pipeline.resolve.blocking import oversized_blocks
from cdm_pipeline.resolve.engine import blocking_rules, resolve
from cdm_pipeline.resolve.incremental import (
    ResolverState,
    blocks_left_under_limit,
    model_fingerprint,
    resolve_incremental,
)
from cdm_pipeline.resolve.overrides import OVERRIDE_SCHEMA
from cdm_pipeline.resolve.profiles import DERIVED_KEYS, MATCH_FIELDS, build_profiles
from cdm_pipeline_tests.conftest import make_settings, run_pipeline

# Tight block limits so that blocks cross them as records come and go.
TIGHT = {
    **DEFAULTS["resolve"],
    "max_block_size": 6,
    "blocking_rules": [
        *DEFAULTS["resolve"]["blocking_rules"][:-1],
        {"keys": ["last_name_key", "first_name_key"], "max_block_size": 2},
        {"keys": ["last_name_key"], "max_block_size": 3},
    ],
}


@pytest.fixture(scope="module")
def person_records(materialised) -> pl.DataFrame:
    settings, _ = materialised
    with duckdb.connect(str(settings.warehouse_path), read_only=True) as conn:
        return conn.sql("select * from identity.person_records").pl()


def _state(records: pl.DataFrame, settings: dict, overrides=None) -> ResolverState:
    day_one = resolve(records, settings, overrides)
    return ResolverState(
        day_one.params, day_one.profiles, model_fingerprint(settings), records.height
    )


def _erase(state: ResolverState, profile_ids: pl.Series, settings: dict) -> ResolverState:
    """What governance does to the stored state on erasure: blocks the erased profiles leave
    under their limit marked for a recheck, identity blanked, ids kept."""
    recheck = blocks_left_under_limit(
        state.profiles, profile_ids, blocking_rules(settings), settings["max_block_size"]
    )
    erased = pl.col("profile_id").is_in(profile_ids.implode())
    profiles = state.profiles.with_columns(
        *[pl.when(erased).then(None).otherwise(pl.col(c)).alias(c) for c in MATCH_FIELDS],
        *[pl.when(erased).then(None).otherwise(pl.col(c)).alias(c) for c in DERIVED_KEYS],
        erased=erased,
        recheck=pl.col("profile_id").is_in(recheck.implode()),
    )
    return ResolverState(state.model, profiles, state.fingerprint, state.trained_records)


def _same_resolution(incremental, full) -> None:
    columns = ["record_key", "profile_id", "cluster_key"]
    assert (
        incremental.clusters.select(columns)
        .sort("record_key")
        .equals(full.clusters.select(columns).sort("record_key"))
    )
    state = ["profile_id", "component", "cluster", "link_decision", "cluster_key"]
    assert (
        incremental.profiles.select(state)
        .sort("profile_id")
        .equals(full.profiles.select(state).sort("profile_id"))
    )


@pytest.mark.parametrize("settings", [DEFAULTS["resolve"], TIGHT], ids=["default", "tight-blocks"])
def test_incremental_equals_full_rebuild_with_the_same_model(person_records, settings):
    held_back = pl.col("record_key").hash(3) % 100 < 3  # tonight's new records
    day_one = person_records.filter(~held_back)
    state = _state(day_one, settings)
    # Tonight: 3 % new records, and a whole linked customer erased (records gone, state blanked).
    clusters = (
        resolve(day_one, settings, model=state.model)
        .clusters.drop_nulls("cluster_key")
        .group_by("cluster_key")
        .agg("record_key", pl.col("profile_id").n_unique().alias("profiles"))
        .filter(pl.col("profiles") >= 3)
        .sort("cluster_key")
    )
    erased_keys = clusters["record_key"][0]
    # ...and one record purged from a profile that keeps others: its first record key moves.
    profiles, membership = build_profiles(day_one)
    purged = (
        profiles.filter(pl.col("record_count") >= 2)
        .filter(~pl.col("first_record_key").is_in(erased_keys.implode()))
        .sort("profile_id")["first_record_key"][0]
    )
    leaving = pl.col("record_key").is_in(erased_keys.implode()) | (pl.col("record_key") == purged)
    tonight = person_records.filter(~leaving)
    erased_profiles = membership.filter(pl.col("record_key").is_in(erased_keys.implode()))
    state = _erase(state, erased_profiles["profile_id"].unique(), settings)

    incremental = resolve_incremental(tonight, settings, state)
    full = resolve(tonight, settings, model=state.model)

    _same_resolution(incremental, full)
    assert incremental.stats["new_profiles"] > 0
    # Kept profiles whose first record key moved (a new record sorts first, or one was purged):
    # their clusters' keys had to be worked out again, not taken from the state.
    moved = incremental.profiles.join(state.profiles, on="profile_id").filter(
        pl.col("first_record_key") != pl.col("first_record_key_right")
    )
    assert moved.height >= 2
    assert incremental.stats["profiles_gone"] >= erased_profiles["profile_id"].n_unique()
    assert incremental.refreshed.len() < 0.25 * incremental.profiles.height
    if settings is TIGHT:  # the tight limits did make blocks cross them between the nights
        before, _ = build_profiles(day_one)
        after, _ = build_profiles(tonight)
        crossed = 0
        for rule in blocking_rules(settings):
            keys = list(rule.keys)
            was = oversized_blocks(before, rule, settings["max_block_size"])
            now = oversized_blocks(after, rule, settings["max_block_size"])
            crossed += was.join(now, on=keys, how="anti").height
            crossed += now.join(was, on=keys, how="anti").height
        assert crossed > 0


def test_steward_overrides_take_effect_incrementally(person_records):
    settings = DEFAULTS["resolve"]
    state = _state(person_records, settings)
    linked = (
        resolve(person_records, settings, model=state.model)
        .clusters.drop_nulls("cluster_key")
        .filter(pl.len().over("cluster_key") >= 2)
        .sort("cluster_key", "record_key")
    )
    pair = linked.group_by("cluster_key", maintain_order=True).agg("record_key").row(0)[1]
    lone = (
        resolve(person_records, settings, model=state.model)
        .clusters.drop_nulls("cluster_key")
        .filter(pl.len().over("cluster_key") == 1)
        .sort("record_key")["record_key"][0]
    )
    split = lambda key: key.split(":", 1)  # noqa: E731
    overrides = pl.DataFrame(
        [
            ("cannot_link", *split(pair[0]), *split(pair[1]), "two people"),
            ("must_link", *split(pair[0]), *split(lone), "same person"),
        ],
        schema=OVERRIDE_SCHEMA,
        orient="row",
    )
    incremental = resolve_incremental(person_records, settings, state, overrides)
    full = resolve(person_records, settings, overrides, model=state.model)
    _same_resolution(incremental, full)
    cluster = dict(incremental.clusters.select("record_key", "cluster_key").iter_rows())
    assert cluster[pair[0]] != cluster[pair[1]] and cluster[pair[0]] == cluster[lone]


def test_the_nightly_job_resolves_incrementally_and_agrees_with_a_full_rebuild(
    tmp_path_factory, demo_data
):
    root = tmp_path_factory.mktemp("incremental")
    landing = root / "landing"
    shutil.copytree(demo_data / "landing", landing)
    later = root / "later"
    for folder in landing.iterdir():  # hold back each source's last day
        *_, last = sorted(folder.iterdir())
        (later / folder.name).mkdir(parents=True)
        last.rename(later / folder.name / last.name)
    # The held-back day is half the data: more growth than makes a nightly run learn the model
    # again (retrain_growth), so allow it here to see the incremental path.
    config = root / "pipeline.yaml"
    text = (PACKAGE_DATA / "pipeline.yaml").read_text()
    config.write_text(text.replace("retrain_growth: 0.25", "retrain_growth: 1.5"))
    assert config.read_text() != text
    incremental = replace(make_settings(root / "a", landing), pipeline_config_path=config)
    assert run_pipeline(incremental).success
    full = replace(make_settings(root / "b", landing), pipeline_config_path=config)
    full.warehouse_path.parent.mkdir(parents=True)
    shutil.copy(incremental.warehouse_path, full.warehouse_path)
    shutil.copytree(later, landing, dirs_exist_ok=True)
    with duckdb.connect(str(full.warehouse_path)) as conn:  # every golden record chosen again
        conn.execute("drop table identity.golden_inputs")

    night = run_pipeline(incremental)
    assert night.success
    assert run_pipeline(full, resolve_mode="FULL").success
    (built,) = [
        e.materialization.metadata
        for e in night.get_asset_materialization_events()
        if e.asset_key == dg.AssetKey(["mart", "customers"])
    ]
    chosen, customers = built["customers_chosen_for_tonight"].value, built["customers"].value
    assert 0 < chosen < customers

    tables = {}
    for name, settings in (("incremental", incremental), ("full", full)):
        with duckdb.connect(str(settings.warehouse_path), read_only=True) as conn:
            modes = conn.execute(
                "select distinct mode from identity.model_parameters where run_id = "
                "(select run_id from identity.model_parameters order by rowid desc limit 1)"
            ).fetchall()
            tables[name] = {
                "mode": modes,
                "xref": conn.sql(
                    "select record_key, customer_id, link_method from mart.customer_xref order by 1"
                ).pl(),
                "pairs": conn.sql(
                    "select profile_id_l, profile_id_r, decision, linked, "
                    "round(match_weight, 9) as w from identity.match_pairs order by 1, 2"
                ).pl(),
                "history": conn.sql(
                    "select event, customer_id, related_customer_id from identity.customer_id_history "
                    "order by all"
                ).pl(),
                "customers": conn.sql(
                    "select * exclude (refreshed_at) from mart.customers order by customer_id"
                ).pl(),
                "lineage": conn.sql(
                    "select * from mart.customer_attribute_lineage order by all"
                ).pl(),
            }
    assert tables["incremental"]["mode"] == [("incremental",)]
    assert tables["full"]["mode"] == [("full",)]
    for table in ("xref", "pairs", "history", "customers", "lineage"):
        assert tables["incremental"][table].equals(tables["full"][table]), table
    assert tables["incremental"]["xref"]["customer_id"].n_unique() > 100


def test_the_blocking_report_counts_the_links_each_rule_found(person_records, tmp_path):
    """identity.blocking_report's linked_pairs, counted while the pairs are written, is per rule
    what identity.match_pairs holds as linked and first proposed by that rule."""
    from datetime import datetime

    from cdm_pipeline.resolve.store import write_resolution
    from cdm_pipeline.warehouse import ensure_schemas, sql_text

    settings = DEFAULTS["resolve"]
    records = person_records.select("record_key", *MATCH_FIELDS, *DERIVED_KEYS)
    with duckdb.connect(str(tmp_path / "w.duckdb")) as conn:
        ensure_schemas(conn)
        conn.execute(sql_text("warehouse/fixed_tables"))
        conn.register("person_records", person_records.to_arrow())
        conn.execute("create table identity.person_records as select * from person_records")
        write_resolution(conn, resolve(records, settings), settings, True, "r1", datetime.now())
        reported = dict(
            conn.execute(
                "select row_number() over (order by rowid) - 1, linked_pairs "
                "from identity.blocking_report"
            ).fetchall()
        )
        held = dict(
            conn.execute(
                "select blocking_rule, count(*) from identity.match_pairs where linked group by all"
            ).fetchall()
        )
    assert len(reported) == len(settings["blocking_rules"])
    assert {rule: n for rule, n in reported.items() if n} == held
    assert held[0] > 100  # the email rule links the most


def _outcome(warehouse) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Customers and scored pairs, to compare two runs by."""
    with duckdb.connect(str(warehouse), read_only=True) as conn:
        return (
            conn.sql(
                "select record_key, customer_id, link_method from mart.customer_xref order by 1"
            ).pl(),
            conn.sql(
                "select profile_id_l, profile_id_r, decision, linked, round(match_weight, 9) as w "
                "from identity.match_pairs order by 1, 2"
            ).pl(),
        )


def _with_shards(root, shards: int):
    config = root / f"shards_{shards}.yaml"
    text = (PACKAGE_DATA / "pipeline.yaml").read_text()
    config.write_text(text.replace("shards: 4", f"shards: {shards}"))
    assert config.read_text() != text
    return config


@pytest.fixture(scope="module")
def single_process_outcome(tmp_path_factory, demo_data):
    """cdm_nightly in process, 1 shard, scored in pieces of 97 pairs: what the executors that
    spread the work must give (computed once for the tests below)."""
    root = tmp_path_factory.mktemp("single")
    settings = replace(
        make_settings(root, demo_data / "landing"), pipeline_config_path=_with_shards(root, 1)
    )
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(engine, "LINK_PIECE_PAIRS", 97)  # in this process only
        assert run_pipeline(settings).success
    return _outcome(settings.warehouse_path)


def _same_customers_across_executors(root, demo_data, monkeypatch, job_fn, single, run_config=None):
    """Run ``job_fn``'s job (3 shards, out of process) on the demo landing files; assert the
    customers and scored pairs of cdm_nightly in process (``single``)."""
    config = _with_shards(root, 3)
    settings = replace(
        make_settings(root / "spread", demo_data / "landing"), pipeline_config_path=config
    )
    for variable, value in {
        "CDM_LANDING": settings.landing_dir,
        "CDM_WAREHOUSE": settings.warehouse_path,
        "CDM_SOURCES": settings.sources_path,
        "CDM_CONFIG": config,
        "CDM_OVERRIDES": settings.overrides_path,
        "CDM_EXPORTS": settings.exports_dir,
    }.items():
        monkeypatch.setenv(variable, str(value))
    (root / "dagster_home").mkdir()
    with dg.DagsterInstance.local_temp(str(root / "dagster_home")) as instance:
        result = dg.execute_job(
            dg.reconstructable(job_fn), instance=instance, run_config=run_config
        )
        assert result.success
        compare_steps = [
            s.step_key
            for s in instance.get_run_step_stats(result.run_id)
            if s.step_key.startswith("identity__pair_comparisons.compare_pair_shard")
        ]
        assert len(compare_steps) == 3  # every shard ran (dagster-dask once skipped them)
    spread = _outcome(settings.warehouse_path)
    assert single[0].equals(spread[0])
    assert single[1].equals(spread[1])


@pytest.mark.slow
def test_the_parallel_job_with_shards_gives_the_single_process_customers(
    tmp_path_factory, demo_data, monkeypatch, single_process_outcome
):
    """cdm_nightly_parallel: multiprocess executor, the 3 comparison shards in their own
    processes."""
    _same_customers_across_executors(
        tmp_path_factory.mktemp("parallel"),
        demo_data,
        monkeypatch,
        parallel_job,
        single_process_outcome,
    )


@pytest.mark.slow
def test_the_dask_job_gives_the_single_process_customers(
    tmp_path_factory, demo_data, monkeypatch, single_process_outcome
):
    """cdm_nightly_dask on a Dask LocalCluster of 2 worker processes, warehouse steps taking
    turns on the writer lock."""
    pytest.importorskip("dagster_dask", reason="dagster-dask is not installed")
    from cdm_pipeline.definitions import dask_job

    cluster = {"local": {"n_workers": 2, "threads_per_worker": 1}}
    _same_customers_across_executors(
        tmp_path_factory.mktemp("dask"),
        demo_data,
        monkeypatch,
        dask_job,
        single_process_outcome,
        {"execution": {"config": {"cluster": cluster}}},
    )


def test_a_changed_order_rebuilds_its_customers_row_on_a_night_that_keeps_the_others(
    tmp_path, demo_data
):
    """An order landed again as cancelled changes no person record, so its customer's golden
    record is kept; the customer's order count still follows, while the customers nothing
    touched keep the row an earlier night built."""
    landing = tmp_path / "landing"
    shutil.copytree(demo_data / "landing", landing)
    settings = make_settings(tmp_path / "wh", landing)
    assert run_pipeline(settings).success
    with duckdb.connect(str(settings.warehouse_path), read_only=True) as conn:
        order_id, customer_id, count, refreshed = conn.execute(
            "select o.order_id, c.customer_id, c.order_count, c.refreshed_at "
            "from mart.orders o join mart.customers c using (customer_id) "
            "where o.status = 'delivered' order by o.order_id limit 1"
        ).fetchall()[0]
        (untouched,) = conn.execute(
            "select count(*) from mart.customers where refreshed_at = ?", [refreshed]
        ).fetchall()[0]
    landed = pl.concat(pl.read_parquet(f) for f in sorted((landing / "orders").glob("*.parquet")))
    again = landed.filter(pl.col("order_id") == order_id).head(1)
    again.with_columns(status=pl.lit("cancelled")).write_parquet(
        landing / "orders" / "orders_zz_status_change.parquet"
    )

    night = run_pipeline(settings)
    assert night.success
    (built,) = [
        e.materialization.metadata
        for e in night.get_asset_materialization_events()
        if e.asset_key == dg.AssetKey(["mart", "customers"])
    ]
    assert built["customers_chosen_for_tonight"].value == 0  # no person record changed
    assert 0 < built["customer_rows_built"].value < built["customers"].value
    with duckdb.connect(str(settings.warehouse_path), read_only=True) as conn:
        (now_count,) = conn.execute(
            "select order_count from mart.customers where customer_id = ?", [customer_id]
        ).fetchall()[0]
        (kept,) = conn.execute(
            "select count(*) from mart.customers where refreshed_at = ?", [refreshed]
        ).fetchall()[0]
    assert now_count == count - 1
    assert kept >= untouched - built["customer_rows_built"].value > 0


# A yield gate small enough to judge the demo's rules: a rule with more than 300 new pairs is
# compared on 200 of them first, and in full only if 1 % of those link.
GATED = {
    **DEFAULTS["resolve"],
    "yield_gate": {"min_new_pairs": 300, "sample_pairs": 200, "min_links_per_10k": 100.0},
}


def test_the_yield_gate_leaves_out_a_rule_whose_sample_links_too_few(person_records, tmp_path):
    """Each rule with many new pairs is judged by its sample: one that links enough has all its
    new pairs compared, one that does not none but its sample, and is written into the model.
    The sharded path (plan files, shards, link from level files) decides as the in-memory one."""
    from cdm_pipeline.resolve.shards import compare_shard, read_plan, write_plan

    records = person_records.select("record_key", *MATCH_FIELDS, *DERIVED_KEYS)
    gated = resolve(records, GATED)
    sampled = [(n, r) for n, r in enumerate(gated.blocking) if r.sampled_pairs]
    kept = [(n, r) for n, r in sampled if not r.low_yield]
    left_out = [(n, r) for n, r in sampled if r.low_yield]
    assert kept and left_out
    for _, r in sampled:
        assert r.new_pairs > 300 and r.sampled_pairs == 200
        assert r.low_yield == (r.sampled_links * 10_000 < 100.0 * r.sampled_pairs)
    assert gated.params.low_yield_rules == [r.rule for _, r in left_out]
    scored = dict(gated.pairs.group_by("blocking_rule").len().iter_rows())
    for n, r in kept:
        assert scored[n] == r.new_pairs
    for n, _ in left_out:
        assert n not in scored
    # Ungated, the left-out rules' pairs are scored: the gate is what left them out.
    ungated = resolve(records, {**GATED, "yield_gate": {"min_new_pairs": 0}})
    every = dict(ungated.pairs.group_by("blocking_rule").len().iter_rows())
    assert all(every[n] == r.new_pairs for n, r in left_out)
    assert ungated.params.low_yield_rules == []

    plan = engine.plan_full(records, GATED)
    shards = write_plan(plan, tmp_path / "work", 3)
    for shard in shards:
        compare_shard(shard)
    read, level_files = read_plan(tmp_path / "work")
    sharded = engine.link(read, level_files, GATED, spill=tmp_path / "work")
    assert sharded.blocking == gated.blocking
    _same_resolution(sharded, gated)


def test_nights_scored_by_a_gated_model_leave_out_the_same_rules(person_records):
    """An incremental night with a model whose gate left rules out proposes none of their
    pairs, and still equals a full rebuild with that model."""
    records = person_records.select("record_key", *MATCH_FIELDS, *DERIVED_KEYS)
    held_back = pl.col("record_key").hash(5) % 100 < 3
    state = _state(records.filter(~held_back), GATED)
    assert state.model.low_yield_rules
    incremental = resolve_incremental(records, GATED, state)
    full = resolve(records, GATED, model=state.model)
    _same_resolution(incremental, full)
    assert incremental.stats["new_profiles"] > 0
    for night in (incremental, full):
        left_out = [r for r in night.blocking if r.low_yield]
        assert [r.rule for r in left_out] == state.model.low_yield_rules
        assert all(r.pairs == 0 and r.sampled_pairs == 0 for r in left_out)
