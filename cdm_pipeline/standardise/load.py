"""Read every person-bearing source's current staged rows as canonical identity columns.

A source's declared identifiers (national id, loyalty number, ...) become one column,
``identifier``, as ``kind:value`` (the first one present, in declared order): an id is evidence
only against an id of the same kind.
"""

from __future__ import annotations

import duckdb
import polars as pl

from cdm_pipeline.registry import IDENTITY_FIELDS, SourceSpec
from cdm_pipeline.standardise.records import CANONICAL_INPUT
from cdm_pipeline.warehouse import quote_ident, table_exists

IDENTITY_ROLES = ("person", "consent")


def canonical_records(
    conn: duckdb.DuckDBPyConnection, sources: dict[str, SourceSpec]
) -> pl.DataFrame:
    """One row per current source record: ``record_key`` (``source:id``), source, id, trust rank,
    event time and the canonical identity fields (null where the source has no such column)."""
    frames = [conn.sql(query, params=params).pl() for query, params in _queries(conn, sources)]
    if not frames:
        return pl.DataFrame(schema=CANONICAL_SCHEMA)
    return pl.concat(frames, how="vertical_relaxed")


CANONICAL_SCHEMA = {
    "record_key": pl.String,
    "source": pl.String,
    "source_record_id": pl.String,
    "trust_rank": pl.Int32,
    "event_at": pl.Datetime("us"),
} | {f: pl.String for f in CANONICAL_INPUT}


def create_canonical_table(
    conn: duckdb.DuckDBPyConnection, sources: dict[str, SourceSpec], table: str
) -> None:
    """``canonical_records`` as a temporary DuckDB table ``table``: compared with the stored
    person records there, only what changed comes into Python."""
    queries = _queries(conn, sources)
    if not queries:
        conn.register("_no_records", pl.DataFrame(schema=CANONICAL_SCHEMA).to_arrow())
        conn.execute(f"create or replace temp table {table} as from _no_records")
        conn.unregister("_no_records")
        return
    union = " union all by name ".join(f"({query})" for query, _ in queries)
    params = [p for _, params in queries for p in params]
    conn.execute(f"create or replace temp table {table} as {union}", params)


def _queries(
    conn: duckdb.DuckDBPyConnection, sources: dict[str, SourceSpec]
) -> list[tuple[str, list]]:
    """Per identity-bearing staged source: the query of its canonical records and its params."""
    queries = []
    for source in sources.values():
        if source.role not in IDENTITY_ROLES or not table_exists(conn, "staging", source.name):
            continue
        selected = ", ".join(
            f"{_column_text(source.identity.get(f))} as {f}" for f in IDENTITY_FIELDS
        )
        kinds = list(source.identifiers)
        identifier = (
            "coalesce("
            + ", ".join(
                f"? || ':' || nullif(trim(cast({quote_ident(source.identifiers[k])} as varchar)), '')"
                for k in kinds
            )
            + ")"
            if kinds
            else "null::varchar"
        )
        query = (
            f"select ? || ':' || {quote_ident(source.record_id)} as record_key, ? as source, "
            f"{quote_ident(source.record_id)} as source_record_id, ?::integer as trust_rank, "
            f"try_cast({quote_ident(source.event_at)} as timestamp) as event_at, {selected}, "
            f"{identifier} as identifier "
            f"from staging.{quote_ident(source.name + '_current')}"
        )
        queries.append((query, [source.name, source.name, source.trust_rank, *kinds]))
    return queries


def _column_text(column: str | tuple[str, ...] | None) -> str:
    """One column as text, several joined by a space (empty parts skipped), or null."""
    if column is None:
        return "null::varchar"
    if isinstance(column, str):
        return f"cast({quote_ident(column)} as varchar)"
    parts = ", ".join(f"cast({quote_ident(c)} as varchar)" for c in column)
    return f"nullif(concat_ws(' ', {parts}), '')"


def canonical_quarantined_records(
    conn: duckdb.DuckDBPyConnection, sources: dict[str, SourceSpec]
) -> pl.DataFrame:
    """Quarantined rows of person-bearing sources as canonical identity columns, read from the
    landed row each kept (JSON), with ``file_sha256, row_number`` to find it by. The resolver
    never sees these rows; erasure must still find its requester's among them."""
    frames = []
    for source in sources.values():
        if source.role not in IDENTITY_ROLES:
            continue
        columns, params = [], [source.name]
        for field in IDENTITY_FIELDS:
            spec = source.identity.get(field)
            parts = [] if spec is None else [spec] if isinstance(spec, str) else list(spec)
            texts = ["nullif(trim(json_extract_string(raw_row, ?)), '')" for _ in parts]
            params += ['$."' + part.replace('"', '\\"') + '"' for part in parts]
            text = f"nullif(concat_ws(' ', {', '.join(texts)}), '')" if texts else "null"
            columns.append(f"{text}::varchar as {field}")
        params.append(source.name)
        query = (
            "select ? || ':' || coalesce(record_id, file_sha256 || '#' || row_number) as record_key, "
            "source, record_id as source_record_id, 0 as trust_rank, "
            f"null::timestamp as event_at, {', '.join(columns)}, null::varchar as identifier, "
            "file_sha256, row_number from quarantine.rejected_rows "
            "where source = ? and raw_row is not null and json_valid(raw_row)"
        )
        frames.append(conn.sql(query, params=params).pl())
    if not frames:
        return pl.DataFrame()
    return pl.concat(frames, how="vertical_relaxed")
