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


def _grouped(
    conn: duckdb.DuckDBPyConnection, query: str, params: dict, key: str
) -> dict[str, list[dict]]:
    result = conn.execute(query, params)
    names = [d[0] for d in result.description]
    out: dict[str, list[dict]] = {}
    for row in result.fetchall():
        record = dict(zip(names, row, strict=True))
        out.setdefault(record[key], []).append(record)
    return out


def subject_documents(
    conn: duckdb.DuckDBPyConnection, customer_ids: list[str], sources: dict[str, SourceSpec]
) -> dict[str, dict]:
    """For each customer: golden record, attribute lineage, every source record (with the file and
    row it came from), consent state and history, and every fact. A handful of queries in all,
    whatever the number of customers."""
    ids = {"ids": sorted(set(customer_ids))}
    among = "customer_id in (select unnest($ids))"
    customers = _grouped(conn, f"select * from mart.customers where {among}", ids, "customer_id")
    lineage = _grouped(
        conn,
        "select customer_id, attribute, value, source, source_record_id, rule "
        f"from mart.customer_attribute_lineage where {among} order by attribute",
        ids,
        "customer_id",
    )
    links = _grouped(
        conn,
        f"select customer_id, source, source_record_id, link_method from mart.customer_xref where {among} "
        "order by source, source_record_id",
        ids,
        "customer_id",
    )
    records: dict[tuple[str, str], dict] = {}
    for source in sources.values():
        wanted = [
            r["source_record_id"]
            for rows in links.values()
            for r in rows
            if r["source"] == source.name
        ]
        if not wanted or not table_exists(conn, "staging", source.name):
            continue
        found = _grouped(
            conn,
            f"select cast({quote_ident(source.record_id)} as varchar) as _id, * "
            f"from staging.{quote_ident(source.name + '_current')} where {quote_ident(source.record_id)} in (select unnest($w))",
            {"w": wanted},
            "_id",
        )
        records |= {(source.name, rid): rows[0] for rid, rows in found.items()}
    facts = {
        t: _grouped(conn, f"select * from mart.{t} where {among}", ids, "customer_id")
        for t in FACT_TABLES
    }
    consent = _grouped(
        conn,
        f"select customer_id, purpose, state, effective_at, source from governance.consent_ledger where {among} "
        "order by purpose",
        ids,
        "customer_id",
    )
    documents = {}
    for customer_id in ids["ids"]:
        source_records = []
        for link in links.get(customer_id, []):
            record = records.get((link["source"], link["source_record_id"]))
            if record is None:
                continue
            source_records.append(
                {
                    "source": link["source"],
                    "record_id": link["source_record_id"],
                    "linked_by": link["link_method"],
                    "came_from": {
                        "file": record.get("_source_file"),
                        "row_number": record.get("_row_number"),
                        "loaded_at": record.get("_loaded_at"),
                    },
                    "data": {k: v for k, v in record.items() if not k.startswith("_")},
                }
            )
        documents[customer_id] = {
            "customer_id": customer_id,
            "generated_at": datetime.now().isoformat(timespec="seconds"),
            "customer": (customers.get(customer_id) or [None])[0],
            "attribute_lineage": [
                {k: v for k, v in r.items() if k != "customer_id"}
                for r in lineage.get(customer_id, [])
            ],
            "source_records": source_records,
            **{t: facts[t].get(customer_id, []) for t in FACT_TABLES},
            "consent_state": [
                {k: v for k, v in r.items() if k != "customer_id"}
                for r in consent.get(customer_id, [])
            ],
        }
    return documents


def subject_document(
    conn: duckdb.DuckDBPyConnection, customer_id: str, sources: dict[str, SourceSpec]
) -> dict:
    return subject_documents(conn, [customer_id], sources)[customer_id]


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
