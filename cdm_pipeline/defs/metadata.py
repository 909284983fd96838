"""Catalogue metadata shared by the asset factories: column schemas with PII tags."""

from __future__ import annotations

import dagster as dg

from cdm_pipeline.registry import SourceSpec

DUCKDB_TYPES = {
    "date": "date",
    "timestamp": "timestamp",
    "decimal": "double",
    "integer": "bigint",
    "boolean": "boolean",
}
LOAD_COLUMNS = {
    "_source_file": "landing file name",
    "_file_sha256": "content hash of the landing file",
    "_row_number": "1-based row number in the file",
    "_loaded_at": "when the file was loaded",
    "_run_id": "Dagster run that loaded it",
}


def pii_columns(source: SourceSpec) -> set[str]:
    return set(source.identity_columns)


def source_column_schema(source: SourceSpec, typed: bool) -> dg.TableSchema:
    """The table's columns; identity columns carry the tag ``pii=true``."""
    pii = pii_columns(source)
    columns = [
        dg.TableColumn(
            name=c.name,
            type=DUCKDB_TYPES.get(c.type, "varchar") if typed else "varchar",
            description=f"{c.type}{', required' if c.required else ''}",
            tags={"pii": "true"} if c.name in pii else {},
        )
        for c in source.columns
    ]
    if not typed:
        columns.append(
            dg.TableColumn(name="_extra", type="varchar", description="undeclared columns, JSON")
        )
        columns.append(
            dg.TableColumn(
                name="_parse_error", type="varchar", description="why a line did not parse"
            )
        )
    columns += [
        dg.TableColumn(name=n, type="varchar", description=d) for n, d in LOAD_COLUMNS.items()
    ]
    return dg.TableSchema(columns=columns)


def table_schema(
    columns: dict[str, tuple[str, str]], pii: set[str] = frozenset()
) -> dg.TableSchema:
    """A column schema from ``{name: (type, description)}``."""
    return dg.TableSchema(
        columns=[
            dg.TableColumn(name=n, type=t, description=d, tags={"pii": "true"} if n in pii else {})
            for n, (t, d) in columns.items()
        ]
    )
