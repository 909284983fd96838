"""Every blocking check, made to fail: the night publishes nothing and the warehouse readers open,
with the analyst file, stays byte for byte the last good night's.

Each case plants the failure where the check reads its measure (the function the step calls,
replaced for that night only), so a check that stopped guarding, or that ran after what it
guards became visible, fails here. Two checks are planted through the data instead, end to end
(``test_serving.py``: ``cluster_size_limit``, ``quarantine_rate``)."""

from __future__ import annotations

import shutil

import pytest

from cdm_pipeline_tests.conftest import (
    assert_stopped_by,
    make_settings,
    run_pipeline,
    served_files,
)

GOVERNANCE = "cdm_pipeline.defs.governance.assets"
RESOLVE = "cdm_pipeline.defs.resolve.assets"


def _second_call_fails(original, failing):
    """The original the first time (the step's work), ``failing`` the second (its re-count)."""
    calls = []

    def planted(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs) if len(calls) == 1 else failing

    return planted


def _mart_problem(name):
    def plant(module):
        original = module.mart_problems
        return lambda conn: {**original(conn), name: 1}

    return plant


def _with_duplicate_xref_row(module):
    original = module.write_resolution

    def planted(conn, *args, **kwargs):
        written = original(conn, *args, **kwargs)
        conn.execute("insert into mart.customer_xref select * from mart.customer_xref limit 1")
        return written

    return planted


def _exposed_column(module):
    original = module.create_analytics_views
    return lambda conn: (original(conn)[0], ["customers.email"])


# check -> (module whose name is replaced, the name, its failing stand-in built from the module)
PLANTED = {
    "xref_keys_unique": (RESOLVE, "write_resolution", _with_duplicate_xref_row),
    "history_covers_live_ids": (RESOLVE, "unexplained_ids", lambda m: lambda conn: 1),
    "every_pair_compared": (RESOLVE, "compare_shard", lambda m: lambda path: path),
    "rows_accounted": (
        "cdm_pipeline.defs.validate.assets",
        "unbalanced_files",
        lambda m: lambda conn, source: [{"file": "planted"}],
    ),
    "nothing_older_than_retention": (
        GOVERNANCE,
        "apply_retention",
        lambda m: _second_call_fails(m.apply_retention, {"staging.planted": 1}),
    ),
    "suppression_list_has_no_plain_identifiers": (
        GOVERNANCE,
        "fingerprint_counts",
        lambda m: lambda conn: (1, 1),
    ),
    "no_copies_of_erased_people_left": (
        GOVERNANCE,
        "clear_stale_work",
        lambda m: lambda root, keep: 1,
    ),
    "customer_id_unique_not_null": (
        "cdm_pipeline.defs.golden.assets",
        "mart_problems",
        _mart_problem("duplicate_or_null_ids"),
    ),
    "facts_reference_customers": (
        "cdm_pipeline.defs.golden.assets",
        "mart_problems",
        _mart_problem("dangling:orders"),
    ),
    "lineage_for_every_golden_value": (
        "cdm_pipeline.defs.golden.assets",
        "mart_problems",
        _mart_problem("missing_lineage"),
    ),
    "one_state_per_customer_and_purpose": (
        "cdm_pipeline.defs.golden.assets",
        "mart_problems",
        _mart_problem("duplicate_states"),
    ),
    "exports_hold_only_the_requester": (
        GOVERNANCE,
        "foreign_records",
        lambda m: lambda conn, paths: 1,
    ),
    "erasure_complete": (
        GOVERNANCE,
        "identifier_hits",
        lambda m: lambda conn: [{"table": "planted", "column": "email", "rows": 1}],
    ),
    "every_customer_has_records": (
        GOVERNANCE,
        "mart_disagreements",
        lambda m: lambda conn: (1, 0),
    ),
    "rows_accounted_at_rest": (
        GOVERNANCE,
        "unbalanced_files",
        lambda m: lambda conn, source: [{"file": "planted"}],
    ),
    "no_pii_columns_in_analytics": (
        "cdm_pipeline.defs.serve.assets",
        "create_analytics_views",
        _exposed_column,
    ),
    "no_pii_in_analyst_database": (
        "cdm_pipeline.defs.serve.assets",
        "pii_values_in",
        lambda m: lambda conn, path: 1,
    ),
}


@pytest.fixture(scope="module")
def last_good_night(tmp_path_factory):
    """A small demo landing and the warehouse its first night published."""
    from cdm_pipeline.demo.generator import generate

    root = tmp_path_factory.mktemp("last_good_night")
    generate(people=300, seed=5, out=root, days=2)
    settings = make_settings(root, root / "landing")
    assert run_pipeline(settings).success
    return root


def test_every_blocking_check_is_planted_here_or_end_to_end(tmp_path):
    from cdm_pipeline.defs.build import build_definitions

    defs = build_definitions(make_settings(tmp_path, tmp_path / "landing"))
    graph = defs.resolve_asset_graph()
    blocking = {k.name for k in graph.asset_check_keys if graph.get_check_spec(k).blocking}
    end_to_end = {"cluster_size_limit", "quarantine_rate", "row_count_anomaly"}
    assert blocking - end_to_end == set(PLANTED)


@pytest.mark.parametrize("check", sorted(PLANTED))
def test_a_failing_blocking_check_publishes_nothing(check, last_good_night, tmp_path, monkeypatch):
    import importlib

    root = tmp_path / "night"
    shutil.copytree(last_good_night, root)
    settings = make_settings(root, root / "landing")
    before = served_files(settings)
    module_name, name, stand_in = PLANTED[check]
    module = importlib.import_module(module_name)
    monkeypatch.setattr(module, name, stand_in(module))
    assert_stopped_by(check, run_pipeline(settings, resolve_mode="FULL"), settings, before)
