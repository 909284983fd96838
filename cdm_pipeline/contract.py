"""The warehouse contract (``sql/contract.yaml``): what each table and column holds. The UI's
column schemas read it, and ``docs/warehouse.md`` shows it; to refresh that page after an edit:

    python -m cdm_pipeline.contract docs/warehouse.md
"""

from __future__ import annotations

import sys
from fnmatch import fnmatchcase
from functools import cache
from pathlib import Path

import yaml

from cdm_pipeline.locations import bundled

SOURCE = "<source>"  # stands for each registered source in the contract's table names
BEGIN = "<!-- contract: generated from sql/contract.yaml, do not edit by hand -->"
END = "<!-- /contract -->"


@cache
def contract() -> dict[str, dict]:
    return yaml.safe_load((bundled("sql") / "contract.yaml").read_text(encoding="utf-8"))


def entry(table: str) -> dict | None:
    """The contract of ``schema.name``; a source's raw or staging table (and its ``_current``
    view) answers to ``raw.<source>`` or ``staging.<source>``."""
    tables = contract()
    if table in tables:
        return tables[table]
    schema = table.split(".", 1)[0]
    return tables.get(f"{schema}.{SOURCE}") if schema in ("raw", "staging") else None


def describe(table: str, column: str) -> str | None:
    """A column's description: its own, else the first pattern it matches, else the one of the
    table a view is ``like``."""
    found = entry(table)
    if found is None:
        return None
    columns = found.get("columns", {})
    if column in columns:
        return columns[column]
    for pattern, text in columns.items():
        if "*" in pattern and fnmatchcase(column, pattern):
            return text
    return describe(found["like"], column) if "like" in found else None


def markdown() -> str:
    """Every table (grain, what it holds) and then every table's columns."""
    tables = contract()
    lines = [
        BEGIN,
        "",
        "| table | grain | what it holds |",
        "|---|---|---|",
        *(f"| `{name}` | {t['grain']} | {t['holds']} |" for name, t in tables.items()),
    ]
    for name, table in tables.items():
        lines += ["", f"### `{name}`", ""]
        if "like" in table:
            lines += [f"Other columns as in `{table['like']}`.", ""]
        lines += ["| column | what it holds |", "|---|---|"]
        lines += [f"| `{column}` | {text} |" for column, text in table["columns"].items()]
    return "\n".join([*lines, "", END])


def with_contract(page: str) -> str:
    """``page`` with its generated block replaced by the contract's current rendering."""
    start, end = page.index(BEGIN), page.index(END) + len(END)
    return page[:start] + markdown() + page[end:]


if __name__ == "__main__":
    path = Path(sys.argv[1])
    path.write_text(with_contract(path.read_text(encoding="utf-8")), encoding="utf-8")
