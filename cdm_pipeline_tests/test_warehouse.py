"""Warehouse helpers: a table staged outside the run's transaction changes with it or not at all."""

from __future__ import annotations

from datetime import datetime

import duckdb
import polars as pl
import pytest

from cdm_pipeline.warehouse import (
    ChangedRows,
    StagedTable,
    append_table,
    ensure_schemas,
    replace_table,
    transaction,
)


def _tables(conn) -> set[str]:
    return {
        f"{schema}.{name}"
        for schema, name in conn.execute(
            "select schema_name, table_name from duckdb_tables()"
        ).fetchall()
    }


def test_a_staged_table_is_swapped_in_by_the_transaction_and_nothing_is_left_behind(tmp_path):
    with duckdb.connect(str(tmp_path / "w.duckdb")) as conn:
        ensure_schemas(conn)
        replace_table(conn, "mart", "things", pl.DataFrame({"id": [1, 2]}))
        with StagedTable(conn, "mart", "things") as staged:
            for piece in ([10, 11], [12], []):
                staged.append(pl.DataFrame({"id": piece}, schema={"id": pl.Int64}))
            # Staged rows are committed but the live table is untouched until the swap.
            assert conn.execute("select count(*) from mart.things").fetchall() == [(2,)]
            with transaction(conn):
                staged.swap()
        assert conn.execute("select id from mart.things order by id").fetchall() == [
            (10,),
            (11,),
            (12,),
        ]
        assert _tables(conn) == {"mart.things"}


def test_a_failed_transaction_keeps_the_live_table_and_drops_the_staged_one(tmp_path):
    with duckdb.connect(str(tmp_path / "w.duckdb")) as conn:
        ensure_schemas(conn)
        replace_table(conn, "mart", "things", pl.DataFrame({"id": [1, 2]}))
        with pytest.raises(RuntimeError, match="a later step failed"):
            with StagedTable(conn, "mart", "things") as staged:
                staged.append(pl.DataFrame({"id": [10]}))
                with transaction(conn):
                    staged.swap()
                    raise RuntimeError("a later step failed")
        assert conn.execute("select id from mart.things order by id").fetchall() == [(1,), (2,)]
        assert _tables(conn) == {"mart.things"}


def test_changed_rows_write_only_what_differs_and_keep_the_stamp_of_unchanged_rows(tmp_path):
    old, new = datetime(2026, 1, 1), datetime(2026, 1, 2)
    with duckdb.connect(str(tmp_path / "w.duckdb")) as conn:
        ensure_schemas(conn)
        live = pl.DataFrame(
            {"key": ["a", "b", "c", "d"], "value": [1, 2, None, 4], "written_at": [old] * 4}
        )
        replace_table(conn, "mart", "things", live)
        # b changes, c stays (a null equals a null), d is dropped, e is new; a is unchanged.
        tonight = pl.DataFrame(
            {"key": ["a", "b", "c", "e"], "value": [1, 20, None, 5], "written_at": [new] * 4}
        )
        changes = ChangedRows.of(conn, "mart", "things", "key", tonight, stamp="written_at")
        assert changes is not None and changes.counts() == (2, 2)  # b, e written; b, d deleted
        assert conn.execute("select count(*) from mart.things").fetchall() == [(4,)]
        with transaction(conn):
            changes.apply()
        rows = conn.execute(
            "select key, value, written_at from mart.things order by key"
        ).fetchall()
        assert rows == [("a", 1, old), ("b", 20, new), ("c", None, old), ("e", 5, new)]
        assert _tables(conn) == {"mart.things"}
        # Another shape of table (a newer version's column) cannot be diffed: the caller copies.
        wider = tonight.with_columns(extra=pl.lit(1))
        assert ChangedRows.of(conn, "mart", "things", "key", wider, stamp="written_at") is None
        assert ChangedRows.of(conn, "mart", "absent", "key", tonight) is None


def test_a_staged_table_can_replace_only_the_live_rows_a_condition_names(tmp_path):
    with duckdb.connect(str(tmp_path / "w.duckdb")) as conn:
        ensure_schemas(conn)
        replace_table(conn, "mart", "things", pl.DataFrame({"id": [1, 2, 3], "v": ["a", "b", "c"]}))
        with StagedTable(conn, "mart", "things") as staged:
            staged.append(pl.DataFrame({"id": [2, 4], "v": ["B", "d"]}))
            with transaction(conn):
                staged.swap(only="id in (2, 3)")  # 2 changed, 3 gone, 4 new; 1 kept
        rows = conn.execute("select id, v from mart.things order by id").fetchall()
        assert rows == [(1, "a"), (2, "B"), (4, "d")]
        with StagedTable(conn, "mart", "things") as staged, transaction(conn):
            staged.swap(only="id = 4")  # nothing staged: the named rows go, the rest stay
        assert conn.execute("select id from mart.things order by id").fetchall() == [(1,), (2,)]
        assert _tables(conn) == {"mart.things"}


def test_swapping_nothing_staged_is_an_error_not_an_empty_table(tmp_path):
    with duckdb.connect(str(tmp_path / "w.duckdb")) as conn:
        ensure_schemas(conn)
        replace_table(conn, "mart", "things", pl.DataFrame({"id": [1]}))
        with StagedTable(conn, "mart", "things") as staged, pytest.raises(RuntimeError):
            with transaction(conn):
                staged.swap()
        assert conn.execute("select count(*) from mart.things").fetchall() == [(1,)]


def test_appending_rows_a_newer_version_writes_adds_its_columns(tmp_path):
    """A warehouse from an earlier version keeps its history tables: rows with a new column
    (the blocking report's budget, the model's household weights) are appended, old rows null."""
    conn = duckdb.connect(str(tmp_path / "w.duckdb"))
    conn.execute("create schema identity")
    append_table(
        conn, "identity", "blocking_report", pl.DataFrame({"rule": ["email"], "pairs": [3]})
    )
    newer = pl.DataFrame({"rule": ["dob"], "pairs": [0], "over_budget": [True]})
    append_table(conn, "identity", "blocking_report", newer)
    rows = conn.execute("select rule, pairs, over_budget from identity.blocking_report").fetchall()
    assert rows == [("email", 3, None), ("dob", 0, True)]
