"""The customer 360's fact tables, rebuilt from staging and the cross-reference: every night
with the mart, and again after an erasure changed the records they come from."""

from __future__ import annotations

import duckdb
import polars as pl

from cdm_pipeline.registry import SourceSpec
from cdm_pipeline.warehouse import quote_ident, sql_text, table_exists

FACTS = {  # fact table -> (the staging source it needs, SQL files that fill it)
    "orders": ("orders", ["mart/orders"]),
    "interactions": ("support_interactions", ["mart/interactions"]),
    "survey_responses": ("surveys", ["mart/survey_responses"]),
    "consent_events": (None, ["mart/consent_events_explicit", "mart/consent_events_signups"]),
}
FACT_SOURCES = {
    "mart/consent_events_explicit": "consent_events",
    "mart/consent_events_signups": "web_signups",
}


def fact_sources(fact: str) -> list[str]:
    """The staging sources a fact table is built from."""
    _, queries = FACTS[fact]
    return sorted({FACT_SOURCES.get(query) or FACTS[fact][0] for query in queries} - {None})


def build_facts(
    conn: duckdb.DuckDBPyConnection, sources: dict[str, SourceSpec], usd_rates: dict[str, float]
) -> dict[str, int]:
    """Replace every fact table (empty when its source is not registered); rows per table."""
    rates = pl.DataFrame(
        {"currency": list(usd_rates), "usd_per_unit": [float(v) for v in usd_rates.values()]},
        schema={"currency": pl.String, "usd_per_unit": pl.Float64},
    )
    conn.register("currency_rates", rates.to_arrow())
    try:
        conn.execute(sql_text("mart/facts_schema"))
        counts = {}
        for fact, (_, queries) in FACTS.items():
            for query in queries:
                source = FACT_SOURCES.get(query) or FACTS[fact][0]
                if source in sources and table_exists(conn, "staging", source):
                    conn.execute(f"insert into mart.{quote_ident(fact)} by name {sql_text(query)}")
            counts[fact] = conn.execute(
                f"select count(*) from mart.{quote_ident(fact)}"
            ).fetchall()[0][0]
        return counts
    finally:
        conn.unregister("currency_rates")
