"""Right of access: one JSON document with everything held about a person, and where it came from."""

from __future__ import annotations

import json
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path

import duckdb

from cdm_pipeline.registry import SourceSpec
from cdm_pipeline.warehouse import quote_ident, table_exists

FACT_TABLES = ("orders", "interactions", "survey_responses", "consent_events")


def _rows(conn: duckdb.DuckDBPyConnection, query: str, params: list) -> list[dict]:
    result = conn.execute(query, params)
    names = [d[0] for d in result.description]
    return [dict(zip(names, row, strict=True)) for row in result.fetchall()]


def subject_document(
    conn: duckdb.DuckDBPyConnection, customer_id: str, sources: dict[str, SourceSpec]
) -> dict:
    """Golden record, attribute lineage, every source record (with file and row it came from),
    consent history and every fact, for one customer."""
    document: dict = {
        "customer_id": customer_id,
        "generated_at": datetime.now().isoformat(timespec="seconds"),
        "customer": (
            _rows(conn, "select * from mart.customers where customer_id = ?", [customer_id])
            or [None]
        )[0],
        "attribute_lineage": _rows(
            conn,
            "select attribute, value, source, source_record_id, rule from mart.customer_attribute_lineage "
            "where customer_id = ? order by attribute",
            [customer_id],
        ),
        "source_records": [],
    }
    links = _rows(
        conn,
        "select source, source_record_id, link_method from mart.customer_xref where customer_id = ? "
        "order by source, source_record_id",
        [customer_id],
    )
    for link in links:
        source = sources.get(link["source"])
        if source is None or not table_exists(conn, "staging", source.name):
            continue
        row = _rows(
            conn,
            f"select * from staging.{quote_ident(source.name + '_current')} "
            f"where {quote_ident(source.record_id)} = ?",
            [link["source_record_id"]],
        )
        if row:
            record = row[0]
            document["source_records"].append(
                {
                    "source": source.name,
                    "record_id": link["source_record_id"],
                    "linked_by": link["link_method"],
                    "came_from": {
                        "file": record.pop("_source_file", None),
                        "row_number": record.pop("_row_number", None),
                        "loaded_at": record.pop("_loaded_at", None),
                    },
                    "data": {k: v for k, v in record.items() if not k.startswith("_")},
                }
            )
    for table in FACT_TABLES:
        document[table] = _rows(
            conn, f"select * from mart.{table} where customer_id = ?", [customer_id]
        )
    document["consent_state"] = _rows(
        conn,
        "select purpose, state, effective_at, source from governance.consent_ledger where customer_id = ? "
        "order by purpose",
        [customer_id],
    )
    return document


def _json_default(value: object) -> str | float:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return float(value)
    return str(value)


def write_document(document: dict, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        json.dumps(document, default=_json_default, indent=2, ensure_ascii=False), encoding="utf-8"
    )
    return path
