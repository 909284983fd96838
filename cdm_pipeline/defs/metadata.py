"""Catalogue metadata shared by the asset factories: column schemas with the contract's
descriptions (``sql/contract.yaml``) and PII tags."""

from __future__ import annotations

import dagster as dg

from cdm_pipeline.contract import describe
from cdm_pipeline.registry import SourceSpec

DUCKDB_TYPES = {
    "date": "date",
    "timestamp": "timestamp",
    "decimal": "double",
    "integer": "bigint",
    "boolean": "boolean",
}
LOAD_COLUMNS = ("_row_number", "_source_file", "_file_sha256", "_loaded_at", "_run_id")


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
    table = f"{'staging' if typed else 'raw'}.{source.name}"
    added = ("_extra", *LOAD_COLUMNS) if typed else ("_extra", "_parse_error", *LOAD_COLUMNS)
    columns += [
        dg.TableColumn(name=n, type="varchar", description=describe(table, n) or "") for n in added
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


# A column whose name holds one of these is personal data: masked in previews, tagged pii.
PII_NAME_PARTS = (
    "name",
    "email",
    "phone",
    "street",
    "unit",
    "birth",
    "postal",
    "city",
    "identifier",
    "comment",
    "raw_row",
    "_extra",
    "_line",
)
MASK = "•••"


def is_pii(column: str, declared: set[str] = frozenset(), data_type: str = "VARCHAR") -> bool:
    """Personal data: a source's declared identity column, or a text column whose name says
    so. A number (``email_interactions``, a comparison's ``*_level``) or a date that merely
    names a field holds no personal value (birth dates aside)."""
    kind = data_type.upper()
    textual = kind.startswith(("VARCHAR", "JSON", "STRUCT", "MAP", "LIST")) or kind.endswith("[]")
    if column in declared:
        return True
    if not textual and not (kind == "DATE" and "birth" in column):
        return False
    return any(part in column for part in PII_NAME_PARTS) and not column.startswith("source")


def table_metadata(
    conn, table: str, pii: set[str] = frozenset(), preview_rows: int = 5
) -> dict[str, dg.MetadataValue]:
    """What the UI shows for a warehouse table: its row count, its columns as they are in the
    file (PII tagged: ``pii`` names a source's identity columns, whatever they are called) and a
    few rows with every personal value masked."""
    from cdm_pipeline.warehouse import quote_ident

    schema, name = table.split(".", 1)
    columns = conn.execute(
        "select column_name, data_type from information_schema.columns "
        "where table_schema = ? and table_name = ? order by ordinal_position",
        [schema, name],
    ).fetchall()
    if not columns:
        return {}
    qualified = f"{quote_ident(schema)}.{quote_ident(name)}"
    ((count,),) = conn.execute(f"select count(*) from {qualified}").fetchall()
    shown = [c for c, _ in columns][:12]
    rows = conn.execute(
        f"select {', '.join(quote_ident(c) for c in shown)} from {qualified} limit {int(preview_rows)}"
    ).fetchall()

    types = dict(columns)

    def cell(column: str, value: object) -> str:
        if value is None:
            return ""
        if is_pii(column, pii, types[column]):
            return MASK
        return str(value).replace("|", "/").replace("\n", " ")[:40]

    preview = "\n".join(
        [
            "| " + " | ".join(shown) + " |",
            "|" + "---|" * len(shown),
            *(
                "| " + " | ".join(cell(c, v) for c, v in zip(shown, r, strict=True)) + " |"
                for r in rows
            ),
        ]
    )
    return {
        "dagster/row_count": dg.MetadataValue.int(count),
        "dagster/column_schema": dg.MetadataValue.table_schema(
            dg.TableSchema(
                columns=[
                    dg.TableColumn(
                        name=c,
                        type=t.lower(),
                        description=describe(table, c),
                        tags={"pii": "true"} if is_pii(c, pii, t) else {},
                    )
                    for c, t in columns
                ]
            )
        ),
        "preview": dg.MetadataValue.md(
            preview + ("\n\n(first 12 columns)" if len(columns) > 12 else "")
        ),
    }


def tally_metadata(counts: dict[str, int], what: str, unit: str) -> dict[str, dg.MetadataValue]:
    """What the UI shows for a step that acts on tables rather than writing one (retention,
    scrubbing): the rows it acted on tonight (``dagster/row_count``) and one row per ``what``."""
    lines = [f"| {what} | {unit} |", "|---|---|", *(f"| {k} | {n} |" for k, n in counts.items())]
    return {
        "dagster/row_count": dg.MetadataValue.int(sum(counts.values())),
        "dagster/column_schema": dg.MetadataValue.table_schema(
            table_schema({what: ("varchar", "what was acted on"), unit: ("bigint", "rows")})
        ),
        "preview": dg.MetadataValue.md("\n".join(lines)),
    }
