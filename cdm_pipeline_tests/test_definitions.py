"""The Definitions load, and every asset is catalogued: description, owner, at least one check."""

from __future__ import annotations

from cdm_pipeline.defs.build import build_definitions
from cdm_pipeline_tests.conftest import make_settings


def test_every_asset_has_a_description_an_owner_and_a_check(tmp_path):
    defs = build_definitions(make_settings(tmp_path, tmp_path / "landing"))
    graph = defs.resolve_asset_graph()
    checked = {key.asset_key for key in graph.asset_check_keys}
    for key in graph.get_all_asset_keys():
        node = graph.get(key)
        assert node.description, key
        assert node.owners, key
        assert key in checked, key


def test_nightly_schedule_runs_at_two(tmp_path):
    defs = build_definitions(make_settings(tmp_path, tmp_path / "landing"))
    schedule = defs.resolve_schedule_def("cdm_nightly_schedule")
    assert schedule.cron_schedule == "0 2 * * *"
