"""Read every person-bearing source's current staged rows as canonical identity columns."""

from __future__ import annotations

import duckdb
import polars as pl

from cdm_pipeline.registry import SourceSpec
from cdm_pipeline.standardise.records import CANONICAL_INPUT
from cdm_pipeline.warehouse import quote_ident, table_exists

IDENTITY_ROLES = ("person", "consent")


def canonical_records(
    conn: duckdb.DuckDBPyConnection, sources: dict[str, SourceSpec]
) -> pl.DataFrame:
    """One row per current source record: ``record_key`` (``source:id``), source, id, trust rank,
    event time and the canonical identity fields (null where the source has no such column)."""
    frames = []
    for source in sources.values():
        if source.role not in IDENTITY_ROLES or not table_exists(conn, "staging", source.name):
            continue
        selected = ", ".join(
            f"cast({quote_ident(source.identity[f])} as varchar) as {f}"
            if f in source.identity
            else f"null::varchar as {f}"
            for f in CANONICAL_INPUT
        )
        query = (
            f"select ? || ':' || {quote_ident(source.record_id)} as record_key, ? as source, "
            f"{quote_ident(source.record_id)} as source_record_id, ?::integer as trust_rank, "
            f"cast({quote_ident(source.event_at)} as timestamp) as event_at, {selected} "
            f"from staging.{quote_ident(source.name + '_current')}"
        )
        frames.append(conn.sql(query, params=[source.name, source.name, source.trust_rank]).pl())
    if not frames:
        schema = {
            "record_key": pl.String,
            "source": pl.String,
            "source_record_id": pl.String,
            "trust_rank": pl.Int32,
            "event_at": pl.Datetime("us"),
        } | {f: pl.String for f in CANONICAL_INPUT}
        return pl.DataFrame(schema=schema)
    return pl.concat(frames, how="vertical_relaxed")
