"""A built wheel (not an editable install) carries its SQL and settings, and runs the demo."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_a_wheel_install_runs_the_demo_night(tmp_path):
    wheels = tmp_path / "wheels"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            str(ROOT),
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(wheels),
        ],
        check=True,
    )
    (wheel,) = wheels.glob("cdm_pipeline-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "cdm_pipeline/_bundled/sql/mart/customers.sql" in names
    assert "cdm_pipeline/_bundled/data/sources.yaml" in names
    assert not [n for n in names if n.endswith(".duckdb") or "/data/landing/" in n]

    # The wheel's package alone on the path, its dependencies from this environment, run from
    # a folder that is not the checkout: nothing may be found through the source tree.
    target = tmp_path / "installed"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--no-deps",
            "-q",
            "--target",
            str(target),
            str(wheel),
        ],
        check=True,
    )
    work = tmp_path / "work"
    work.mkdir()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("CDM_", "DAGSTER_HOME"))},
        "PYTHONPATH": str(target),
    }
    cli = [sys.executable, "-m", "cdm_pipeline.cli"]
    where = subprocess.run(
        [sys.executable, "-c", "import cdm_pipeline; print(cdm_pipeline.__file__)"],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert where.stdout.startswith(str(target))
    subprocess.run([*cli, "demo", "--people", "200", "--days", "1"], cwd=work, env=env, check=True)
    run = subprocess.run([*cli, "run"], cwd=work, env=env, capture_output=True, text=True)
    assert "succeeded" in run.stdout, run.stdout + run.stderr[-2000:]
    assert (work / "data" / "warehouse" / "cdm.duckdb").exists()
