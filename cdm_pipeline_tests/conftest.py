"""Shared fixtures: a small seeded demo landing folder and one materialised warehouse per session.

Nothing is written into the working directory: every path is under pytest's tmp folders.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import dagster as dg
import pytest

from cdm_pipeline.defs.build import build_definitions
from cdm_pipeline.defs.jobs import NIGHTLY_JOB
from cdm_pipeline.defs.resolve.assets import resolve_run_config
from cdm_pipeline.demo.generator import generate
from cdm_pipeline.locations import PACKAGE_DATA, Settings

DEMO_PEOPLE = 1500


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Slow tests first: the workers start them while the quick ones fill the gaps, instead of
    one worker finishing a long night alone at the end (``--dist worksteal`` in pyproject.toml
    lets an idle worker take what another has not started)."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


def make_settings(
    root: Path, landing: Path, sources: Path | None = None, overrides: Path | None = None
) -> Settings:
    return Settings(
        landing_dir=landing,
        warehouse_path=root / "warehouse" / "cdm.duckdb",
        sources_path=sources or PACKAGE_DATA / "sources.yaml",
        pipeline_config_path=PACKAGE_DATA / "pipeline.yaml",
        overrides_path=overrides or root / "no_overrides.csv",
        exports_dir=root / "exports",
    )


def run_pipeline(settings: Settings, resolve_mode: str = "AUTO") -> dg.ExecuteInProcessResult:
    defs = build_definitions(settings)
    return defs.resolve_job_def(NIGHTLY_JOB).execute_in_process(
        instance=dg.DagsterInstance.ephemeral(),
        raise_on_error=False,
        run_config=resolve_run_config(resolve_mode),
    )


@pytest.fixture(scope="session")
def demo_data(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("demo")
    generate(people=DEMO_PEOPLE, seed=11, out=out, days=2)
    return out


@pytest.fixture(scope="session")
def materialised(tmp_path_factory, demo_data) -> tuple[Settings, dg.ExecuteInProcessResult]:
    """The whole job run once on the demo data into a tmp DuckDB file."""
    settings = make_settings(tmp_path_factory.mktemp("run"), demo_data / "landing")
    return settings, run_pipeline(settings)


def digest(path: Path) -> str:
    """SHA-256 of a file's bytes: "unchanged" means byte for byte."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def served_files(settings: Settings) -> tuple[str, str]:
    """Digests of what readers see: the published warehouse and the analyst file."""
    return digest(settings.warehouse_path), digest(settings.exports_dir / "analyst.duckdb")


def assert_stopped_by(
    check: str, result: dg.ExecuteInProcessResult, settings: Settings, before: tuple[str, str]
) -> None:
    """``check`` failed, the night published nothing, and readers' files are byte for byte
    what ``served_files`` saw before it."""
    from cdm_pipeline.defs.keys import PUBLISHED

    failed = {e.check_name for e in result.get_asset_check_evaluations() if not e.passed}
    assert check in failed
    assert PUBLISHED not in {
        e.asset_key for e in result.get_asset_materialization_events() if e.asset_key
    }
    assert served_files(settings) == before
