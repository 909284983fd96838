"""The comparison phase in shards, so that separate processes (or machines) can run it.

A run's plan is written to a work folder once: the profiles' compared fields as Parquet, the
candidate pairs split by a hash of the left profile id into one Parquet file per shard, and the
rest of the plan. Each shard is then compared on its own, reading only those files; the link phase
reads the plan back with every shard's levels. Comparing a pair does not depend on any other pair,
so any number of shards gives the same levels, and ``link`` sorts them: the same customers
(``test_sharded_resolution_equals_a_single_process``).
"""

from __future__ import annotations

import pickle
import shutil
from pathlib import Path

import polars as pl

from cdm_pipeline.resolve.comparisons import Comparison, compare_pairs, default_comparisons
from cdm_pipeline.resolve.engine import ResolvePlan

PLAN_FILE = "plan.pickle"
SIDE_FILE = "profiles.parquet"


def write_plan(
    plan: ResolvePlan, workdir: Path, shards: int, comparisons: list[Comparison] | None = None
) -> list[Path]:
    """Write ``plan`` under ``workdir`` and return the pair file of each shard."""
    comparisons = comparisons or default_comparisons()
    if workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    plan.profiles.select("profile_id", *(c.name for c in comparisons)).write_parquet(
        workdir / SIDE_FILE
    )
    shard_of = plan.pairs.with_columns(shard=pl.col("id_l").hash(seed=0) % max(shards, 1))
    paths = []
    for number in range(max(shards, 1)):
        path = workdir / f"pairs-{number:03d}.parquet"
        shard_of.filter(pl.col("shard") == number).drop("shard").write_parquet(path)
        paths.append(path)
    with (workdir / PLAN_FILE).open("wb") as out:
        pickle.dump(_without_pairs(plan), out)
    return paths


def compare_shard(pairs_file: Path, comparisons: list[Comparison] | None = None) -> Path:
    """Compare one shard's pairs; the levels go beside the pairs."""
    side = pl.read_parquet(pairs_file.parent / SIDE_FILE)
    levels = compare_pairs(pl.read_parquet(pairs_file), side, comparisons or default_comparisons())
    out = pairs_file.with_name(pairs_file.name.replace("pairs-", "levels-"))
    levels.write_parquet(out)
    return out


def read_plan(workdir: Path) -> tuple[ResolvePlan, pl.DataFrame]:
    """The plan and the levels of every shard (which must all have been compared)."""
    with (workdir / PLAN_FILE).open("rb") as source:
        plan = pickle.load(source)
    pair_files = sorted(workdir.glob("pairs-*.parquet"))
    level_files = sorted(workdir.glob("levels-*.parquet"))
    if len(level_files) != len(pair_files):
        raise RuntimeError(
            f"{len(pair_files) - len(level_files)} of {len(pair_files)} comparison shards "
            f"have no levels in {workdir}"
        )
    plan.pairs = pl.concat([pl.read_parquet(f) for f in pair_files])
    return plan, pl.concat([pl.read_parquet(f) for f in level_files])


def _without_pairs(plan: ResolvePlan) -> ResolvePlan:
    copy = ResolvePlan(**vars(plan))
    copy.pairs = plan.pairs.clear()
    return copy
