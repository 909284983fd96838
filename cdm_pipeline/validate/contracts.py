"""One pandera (polars) contract per source, built from its registry entry.

The contract runs on the landed text, so every problem becomes a named, row-level failure case:
``email: email_shape``, ``birth_date: date_in_range``, ``order_id: unique_in_file``...
"""

from __future__ import annotations

import json

import pandera.polars as pa
import polars as pl
from pandera.api.polars.types import PolarsData

from cdm_pipeline.ingest.reader import EXTRA, PARSE_ERROR, ROW_NUMBER
from cdm_pipeline.registry import ColumnSpec, SourceSpec
from cdm_pipeline.validate import parsing

PARSE_ERROR_CHECK = "row_parses"
FILE_KEY = "_file_sha256"  # uniqueness of ids is checked within each landed file


def _element_check(name: str, valid: pl.Expr) -> pa.Check:
    """A check that passes null cells (nullability is a separate check) and fails invalid ones."""

    def run(data: PolarsData) -> pl.LazyFrame:
        return data.lazyframe.select(parsing.text(data.key).is_null() | valid.fill_null(False))

    return pa.Check(run, name=name, element_wise=False)


def _column_checks(spec: ColumnSpec) -> list[pa.Check]:
    c = spec.name
    value = parsing.text(c)
    checks: list[pa.Check] = []
    if spec.type == "id":
        checks.append(
            pa.Check(
                lambda data: data.lazyframe.select(
                    pl.col(data.key).is_first_distinct().over(FILE_KEY) | pl.col(data.key).is_null()
                ),
                name="unique_in_file",
            )
        )
    elif spec.type == "email":
        checks.append(_element_check("email_shape", value.str.contains(parsing.EMAIL_SHAPE)))
    elif spec.type in ("date", "timestamp"):
        parsed = parsing.parse_date(c) if spec.type == "date" else parsing.parse_timestamp(c)
        checks.append(_element_check(f"{spec.type}_parses", parsed.is_not_null()))
        if spec.min is not None or spec.max is not None:
            low, high = parsing.bound(spec.min), parsing.bound(spec.max)
            day = parsed.cast(pl.Date)
            in_range = pl.lit(True)
            if low is not None:
                in_range = in_range & (day >= pl.lit(low))
            if high is not None:
                in_range = in_range & (day <= pl.lit(high))
            checks.append(_element_check(f"{spec.type}_in_range", parsed.is_null() | in_range))
    elif spec.type in ("decimal", "integer"):
        parsed = parsing.parse_decimal(c) if spec.type == "decimal" else parsing.parse_integer(c)
        checks.append(_element_check(f"is_{spec.type}", parsed.is_not_null()))
        if spec.min is not None:
            checks.append(
                _element_check(f"at_least_{spec.min}", parsed.is_null() | (parsed >= spec.min))
            )
        if spec.max is not None:
            checks.append(
                _element_check(f"at_most_{spec.max}", parsed.is_null() | (parsed <= spec.max))
            )
    elif spec.type == "enum":
        checks.append(_element_check("allowed_value", value.is_in(list(spec.values))))
    elif spec.type == "boolean":
        checks.append(_element_check("is_boolean", parsing.parse_boolean(c).is_not_null()))
    if spec.required:
        checks.append(
            pa.Check(
                lambda data: data.lazyframe.select(parsing.text(data.key).is_not_null()),
                name="required",
            )
        )
    return checks


def build_contract(source: SourceSpec) -> pa.DataFrameSchema:
    """The pandera schema for one source: every declared column as text with its checks."""
    columns = {
        c.name: pa.Column(pl.String, checks=_column_checks(c), nullable=True, required=True)
        for c in source.columns
    }
    columns[PARSE_ERROR] = pa.Column(
        pl.String,
        nullable=True,
        checks=[
            pa.Check(
                lambda data: data.lazyframe.select(pl.col(data.key).is_null()),
                name=PARSE_ERROR_CHECK,
            )
        ],
    )
    return pa.DataFrameSchema(columns, name=f"{source.name}_contract", strict=False)


def split(frame: pl.DataFrame, source: SourceSpec) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Split landed rows into (valid rows, rejected rows with ``failed_checks`` and ``raw_row``)."""
    indexed = frame.with_row_index("_index")
    try:
        build_contract(source).validate(indexed, lazy=True)
        failures = pl.DataFrame(schema={"_index": pl.UInt32, "failed_checks": pl.String})
    except pa.errors.SchemaErrors as errors:
        cases = errors.failure_cases
        structural = cases.filter(pl.col("index").is_null())
        if structural.height:
            raise ValueError(
                f"{source.name}: contract cannot run: "
                + "; ".join(sorted(set(structural["check"].cast(pl.String).to_list())))
            ) from None
        failures = (
            cases.select(
                pl.col("index").cast(pl.UInt32).alias("_index"),
                (pl.col("column").cast(pl.String) + ": " + pl.col("check").cast(pl.String)).alias(
                    "reason"
                ),
            )
            .unique()
            .sort("_index", "reason")
            .group_by("_index", maintain_order=True)
            .agg(pl.col("reason").str.join("; ").alias("failed_checks"))
        )
    flagged = indexed.join(failures, on="_index", how="left").with_columns(
        # A row that could not be read has one reason, with its line: the rest follows from it.
        failed_checks=pl.when(pl.col(PARSE_ERROR).is_not_null())
        .then(pl.lit(f"{PARSE_ERROR_CHECK}: ") + pl.col(PARSE_ERROR))
        .otherwise(pl.col("failed_checks"))
    )
    valid = flagged.filter(pl.col("failed_checks").is_null()).drop("_index", "failed_checks")
    rejected = flagged.filter(pl.col("failed_checks").is_not_null()).drop("_index")
    payload = [c for c in source.column_names] + [EXTRA, PARSE_ERROR]
    rejected = rejected.with_columns(
        raw_row=pl.Series(
            [json.dumps(r, ensure_ascii=False) for r in rejected.select(payload).rows(named=True)],
            dtype=pl.String,
        )
    )
    return valid, rejected


def to_typed(valid: pl.DataFrame, source: SourceSpec) -> pl.DataFrame:
    """Cast validated text to its declared types (safe: the contract proved every value casts)."""
    casts = {
        "date": parsing.parse_date,
        "timestamp": parsing.parse_timestamp,
        "decimal": parsing.parse_decimal,
        "integer": parsing.parse_integer,
        "boolean": parsing.parse_boolean,
    }
    typed = [casts.get(c.type, parsing.text)(c.name).alias(c.name) for c in source.columns]
    keep = [c for c in valid.columns if c.startswith("_") and c not in (PARSE_ERROR,)]
    return valid.select(*typed, *keep).with_columns(pl.col(ROW_NUMBER).cast(pl.Int64))
