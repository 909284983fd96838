"""The Definitions load, and every asset is catalogued: description, owner, at least one check."""

from __future__ import annotations

import os
import re
from pathlib import Path

from cdm_pipeline.defs.build import build_definitions
from cdm_pipeline_tests.conftest import make_settings

REPO = Path(__file__).resolve().parent.parent


def test_every_asset_has_a_description_an_owner_and_a_check(tmp_path):
    defs = build_definitions(make_settings(tmp_path, tmp_path / "landing"))
    graph = defs.resolve_asset_graph()
    checked = {key.asset_key for key in graph.asset_check_keys}
    for key in graph.get_all_asset_keys():
        node = graph.get(key)
        assert node.description, key
        assert node.owners, key
        assert key in checked, key


def test_the_ui_lists_the_stage_groups_in_the_order_a_night_finishes_them(tmp_path):
    """The UI sorts groups by name: sorted names must follow each group's last asset in the graph."""
    graph = build_definitions(make_settings(tmp_path, tmp_path / "landing")).resolve_asset_graph()
    depth: dict = {}

    def depth_of(key):
        if key not in depth:
            parents = [p for p in graph.get(key).parent_keys if graph.has(p)]
            depth[key] = 1 + max(map(depth_of, parents)) if parents else 0
        return depth[key]

    finished_at: dict[str, int] = {}
    for key in graph.materializable_asset_keys:
        group = graph.get(key).group_name
        finished_at[group] = max(finished_at.get(group, 0), depth_of(key))
    assert len(finished_at) == 7
    assert sorted(finished_at) == sorted(finished_at, key=finished_at.get)


def test_every_step_is_named_schema__what_it_writes(tmp_path):
    """The run view lists steps by name: one pattern for all of them, as their tables are named."""
    from cdm_pipeline.defs.jobs import NIGHTLY_JOB

    job = build_definitions(make_settings(tmp_path, tmp_path / "landing")).resolve_job_def(
        NIGHTLY_JOB
    )
    names = [node.name for node in job.graph.node_defs]
    assert len(names) > 20
    assert [n for n in names if not re.fullmatch(r"[a-z]+__[a-z0-9_]+", n)] == []


def test_nightly_schedule_runs_at_two(tmp_path):
    defs = build_definitions(make_settings(tmp_path, tmp_path / "landing"))
    schedule = defs.resolve_schedule_def("cdm_nightly_schedule")
    assert schedule.cron_schedule == "0 2 * * *"


SENSOR_TICK = """
import sys
import dagster as dg
from cdm_pipeline.defs.build import build_definitions
from cdm_pipeline.locations import load_settings
sensor = build_definitions(load_settings()).resolve_sensor_def("cdm_new_landing_files")
context = dg.build_sensor_context(cursor=sys.argv[1] or None)
result = sensor.evaluate_tick(context)
print(len(result.run_requests), result.cursor or "")
"""


def test_the_new_file_sensor_does_not_fire_again_after_a_restart(tmp_path):
    """Two processes (a daemon before and after a restart) agree on the cursor of unchanged
    files; a new file makes the next tick fire."""
    import os
    import subprocess
    import sys

    landing = tmp_path / "landing" / "crm_contacts"
    landing.mkdir(parents=True)
    (landing / "a.csv").write_text("contact_id\nC1\n")
    env = {**os.environ, "CDM_LANDING": str(tmp_path / "landing")}

    def tick(cursor: str) -> tuple[int, str]:
        out = subprocess.run(
            [sys.executable, "-c", SENSOR_TICK, cursor],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
        return int(out[0]), (out[1] if len(out) > 1 else "")

    fired, cursor = tick("")
    assert fired == 1 and cursor
    assert tick(cursor) == (0, cursor)
    (landing / "b.csv").write_text("contact_id\nC2\n")
    fired, new_cursor = tick(cursor)
    assert fired == 1 and new_cursor != cursor


def test_dg_loads_the_project():
    """``dg check defs`` and ``dg list defs`` (dagster-dg-cli) load the same Definitions."""
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parent.parent
    dg_cli = str(Path(sys.executable).parent / "dg")
    checked = subprocess.run(
        [dg_cli, "check", "defs"], cwd=repo, capture_output=True, text=True, timeout=300
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "All definitions loaded successfully" in checked.stdout + checked.stderr
    listed = subprocess.run(
        [dg_cli, "list", "defs", "--json"], cwd=repo, capture_output=True, text=True, timeout=300
    )
    assert listed.returncode == 0 and "mart/customers" in listed.stdout
    # The README's readable listing fits a terminal of 80 columns.
    narrow = subprocess.run(
        [dg_cli, "list", "defs", "--columns", "key,group"],
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "COLUMNS": "80"},
    )
    assert narrow.returncode == 0 and "mart/customers" in narrow.stdout
    assert max(map(len, narrow.stdout.splitlines())) <= 80


def test_settings_travel_to_step_processes_through_the_environment(tmp_path, monkeypatch):
    """A step process of the multiprocess executor rebuilds its settings from CDM_* variables:
    what ``Settings.environ`` writes, ``load_settings`` reads back unchanged."""
    from dataclasses import replace

    from cdm_pipeline.locations import load_settings

    settings = replace(
        make_settings(tmp_path, tmp_path / "landing", sources=tmp_path / "sources.yaml"),
        work_dir=tmp_path / "scratch",
    )
    for name, value in settings.environ().items():
        monkeypatch.setenv(name, value)
    assert load_settings() == settings


def test_only_columns_holding_personal_values_are_tagged_pii():
    """Numbers and flags that merely name a field are not personal data: the UI masks what is."""
    from cdm_pipeline.defs.metadata import is_pii

    assert is_pii("email", data_type="VARCHAR")
    assert is_pii("birth_date", data_type="DATE")
    assert is_pii("given", {"given"}, data_type="VARCHAR")  # a source's declared identity column
    assert not is_pii("email_interactions", data_type="BIGINT")
    assert not is_pii("first_name_key_level", data_type="TINYINT")
    assert not is_pii("email_norm_weight", data_type="DOUBLE")
    assert not is_pii("is_email_contactable", data_type="BOOLEAN")


def test_the_ui_and_dg_name_the_code_location_alike():
    """``cdm ui`` serves the shipped workspace.yaml; ``dg dev`` in a checkout reads pyproject.toml:
    one location name, so a link from one UI works in the other."""
    import tomllib

    import yaml

    from cdm_pipeline.locations import bundled

    workspace = yaml.safe_load(bundled("workspace.yaml").read_text())
    (location,) = workspace["load_from"]
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    project = pyproject["tool"]["dg"]["project"]
    assert location["python_module"]["location_name"] == project["code_location_name"]
    assert location["python_module"]["module_name"] == project["code_location_target_module"]


def test_cdm_demo_without_faker_gives_advice_that_works_from_a_checkout(
    monkeypatch, capsys, tmp_path
):
    import sys
    import tomllib

    from cdm_pipeline.cli import main

    monkeypatch.setitem(sys.modules, "faker", None)  # import faker raises ModuleNotFoundError
    for module in [m for m in sys.modules if m.startswith("cdm_pipeline.demo")]:
        monkeypatch.delitem(sys.modules, module)
    assert main(["demo", "--people", "10", "--out", str(tmp_path)]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "pip install -e '.[demo]'" in error
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert any(d.startswith("faker") for d in pyproject["project"]["optional-dependencies"]["demo"])
