"""The comparison phase in shards, so that separate processes (or machines) can run it.

A run's plan is written to a work folder once: the profiles' compared fields as Arrow IPC, the
candidate pairs split by a hash of the left profile id into one Parquet file per shard, and the
rest of the plan. Each shard is then compared on its own, reading only those files; the link phase
reads the plan back and scores the shards' levels file by file. Comparing a pair does not depend
on any other pair, so any number of shards gives the same levels and the same customers
(``test_sharded_resolution_equals_a_single_process``).
"""

from __future__ import annotations

import pickle
import shutil
from pathlib import Path

import polars as pl

from cdm_pipeline.resolve.comparisons import (
    Comparison,
    compare_pairs,
    compared_fields,
    default_comparisons,
)
from cdm_pipeline.resolve.engine import ResolvePlan

PLAN_FILE = "plan.pickle"
SIDE_FILE = "compared_profiles.arrow"
FRAME_SUFFIX = ".frame.arrow"
SERIES_SUFFIX = ".series.arrow"


def clear_stale_work(root: Path, keep: Path) -> int:
    """Remove the work folders of earlier runs under ``root`` (a run that failed or was killed
    leaves its plan behind, and the plan holds identities, erased people's among them); return
    how many went."""
    if not root.exists():
        return 0
    stale = [p for p in root.iterdir() if p.is_dir() and p.resolve() != keep.resolve()]
    for path in stale:
        shutil.rmtree(path, ignore_errors=True)
    return len(stale)


def write_plan(
    plan: ResolvePlan, workdir: Path, shards: int, comparisons: list[Comparison] | None = None
) -> list[Path]:
    """Write ``plan`` under ``workdir`` and return the pair file of each shard."""
    comparisons = comparisons or default_comparisons()
    if workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    side = plan.profiles.select("profile_id", *compared_fields(comparisons))
    if plan.pairs.height < side.height // 4:  # an incremental night: only the profiles compared
        named = pl.concat([plan.pairs["id_l"], plan.pairs["id_r"]]).unique().implode()
        side = side.filter(pl.col("profile_id").is_in(named))
    side.write_ipc(workdir / SIDE_FILE, compression="uncompressed")
    shard_of = plan.pairs.with_columns(shard=pl.col("id_l").hash(seed=0) % max(shards, 1))
    paths = []
    for number in range(max(shards, 1)):
        path = workdir / f"pairs-{number:03d}.parquet"
        shard_of.filter(pl.col("shard") == number).drop("shard").write_parquet(path)
        paths.append(path)
    _write_plan_frames(plan, workdir)
    return paths


def compare_shard(pairs_file: Path, comparisons: list[Comparison] | None = None) -> Path:
    """Compare one shard's pairs; the levels go beside the pairs."""
    side = pl.read_ipc(pairs_file.parent / SIDE_FILE)
    levels = compare_pairs(pl.read_parquet(pairs_file), side, comparisons or default_comparisons())
    out = pairs_file.with_name(pairs_file.name.replace("pairs-", "levels-"))
    levels.write_parquet(out)
    return out


def read_plan(workdir: Path) -> tuple[ResolvePlan, list[Path]]:
    """The plan (without its pairs, which the shards hold) and every shard's level file (all
    shards must have been compared): ``link`` reads them one at a time."""
    plan = _read_plan_frames(workdir)
    pair_files = sorted(workdir.glob("pairs-*.parquet"))
    level_files = sorted(workdir.glob("levels-*.parquet"))
    if len(level_files) != len(pair_files):
        raise RuntimeError(
            f"{len(pair_files) - len(level_files)} of {len(pair_files)} comparison shards "
            f"have no levels in {workdir}"
        )
    return plan, level_files


def _write_plan_frames(plan: ResolvePlan, workdir: Path) -> None:
    """Frames as uncompressed Arrow IPC (at a million profiles pickling them took 11 s, this
    about a second), the rest of the plan pickled; the pairs are in the shard files."""
    rest = {}
    for name, value in vars(plan).items():
        if name == "pairs":
            rest[name] = value.clear()
        elif isinstance(value, pl.DataFrame):
            value.write_ipc(workdir / f"{name}{FRAME_SUFFIX}", compression="uncompressed")
        elif isinstance(value, pl.Series):
            value.to_frame().write_ipc(
                workdir / f"{name}{SERIES_SUFFIX}", compression="uncompressed"
            )
        else:
            rest[name] = value
    with (workdir / PLAN_FILE).open("wb") as out:
        pickle.dump(rest, out)


def _read_plan_frames(workdir: Path) -> ResolvePlan:
    with (workdir / PLAN_FILE).open("rb") as source:
        fields = pickle.load(source)
    for path in workdir.glob(f"*{FRAME_SUFFIX}"):
        fields[path.name.removesuffix(FRAME_SUFFIX)] = pl.read_ipc(path)
    for path in workdir.glob(f"*{SERIES_SUFFIX}"):
        fields[path.name.removesuffix(SERIES_SUFFIX)] = pl.read_ipc(path).to_series()
    return ResolvePlan(**fields)
