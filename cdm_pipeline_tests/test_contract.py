"""The warehouse contract (``sql/contract.yaml``) describes what a night writes, all of it and
nothing else, and the UI and docs/warehouse.md show the same descriptions."""

from __future__ import annotations

from fnmatch import fnmatchcase
from pathlib import Path

import duckdb

from cdm_pipeline.contract import contract, describe, entry, with_contract

DOCS = Path(__file__).resolve().parents[1] / "docs" / "warehouse.md"


def _columns(warehouse: Path) -> dict[str, list[str]]:
    """Every table's columns, as the file holds them."""
    with duckdb.connect(str(warehouse), read_only=True) as conn:
        found = conn.sql(
            "select table_schema || '.' || table_name as t, column_name as c "
            "from information_schema.columns where table_catalog = current_database()"
        ).pl()
    return {t: part["c"].to_list() for (t,), part in found.group_by("t", maintain_order=True)}


def test_every_table_and_column_a_night_writes_is_described(materialised):
    settings, _ = materialised
    tables = _columns(settings.warehouse_path)
    assert len(tables) > 40
    undescribed = [
        f"{table}.{column}"
        for table, columns in tables.items()
        for column in columns
        if not describe(table, column)
    ]
    assert undescribed == []
    assert all(entry(table) for table in tables)


def test_the_contract_describes_no_table_or_column_the_warehouse_lacks(materialised):
    settings, _ = materialised
    tables = _columns(settings.warehouse_path)
    for name, table in contract().items():
        written = [c for t, cs in tables.items() if entry(t) is table for c in cs]
        assert written, name
        for column in table["columns"]:
            assert any(fnmatchcase(c, column) for c in written), f"{name}.{column}"


def test_the_ui_shows_the_contract_descriptions(materialised):
    _, result = materialised
    schemas = {
        event.asset_key.to_user_string(): event.materialization.metadata[
            "dagster/column_schema"
        ].value
        for event in result.get_asset_materialization_events()
        if "dagster/column_schema" in event.materialization.metadata
    }
    for key in ("mart/customers", "identity/match_pairs", "raw/crm_contacts", "mart/orders"):
        columns = schemas[key].columns
        assert columns and all(c.description for c in columns), key
    email = next(c for c in schemas["mart/customers"].columns if c.name == "email")
    assert email.description == describe("mart.customers", "email")


def test_docs_show_the_contract_as_it_is():
    page = DOCS.read_text(encoding="utf-8")
    assert page == with_contract(page), "run: python -m cdm_pipeline.contract docs/warehouse.md"
