"""Text-to-type parsers shared by the contract checks and the typed staging cast, so a value that
passes a check is exactly a value that casts."""

from __future__ import annotations

from datetime import date

import polars as pl

DATE_FORMATS = ("%Y-%m-%d", "%Y/%m/%d", "%m/%d/%Y", "%d.%m.%Y", "%Y%m%d")
TIMESTAMP_FORMATS = (
    "%Y-%m-%dT%H:%M:%S%.f",
    "%Y-%m-%d %H:%M:%S%.f",
    "%Y-%m-%dT%H:%M",
    "%Y-%m-%d %H:%M",
    "%m/%d/%Y %H:%M:%S",
    "%m/%d/%Y %H:%M",
)
TZ_TIMESTAMP_FORMATS = ("%Y-%m-%dT%H:%M:%S%.f%z", "%Y-%m-%d %H:%M:%S%.f%z")
TRUE_WORDS = ("true", "t", "yes", "y", "1")
FALSE_WORDS = ("false", "f", "no", "n", "0")
EMAIL_SHAPE = r"^[^@\s]+@[^@\s]+\.[^@\s.]+$"


def text(column: str) -> pl.Expr:
    """Trimmed text with empty strings as null."""
    value = pl.col(column).str.strip_chars()
    return pl.when(value == "").then(None).otherwise(value)


def parse_date(column: str) -> pl.Expr:
    value = text(column)
    return pl.coalesce(
        *[value.str.strptime(pl.Date, fmt, strict=False, exact=True) for fmt in DATE_FORMATS]
    ).alias(column)


def parse_timestamp(column: str) -> pl.Expr:
    """Naive timestamps as given; offset timestamps (``+02:00``, ``Z``) converted to UTC."""
    value = text(column).str.replace(r"Z$", "+00:00")
    naive = [
        value.str.strptime(pl.Datetime("us"), fmt, strict=False, exact=True)
        for fmt in TIMESTAMP_FORMATS
    ]
    aware = [
        value.str.strptime(
            pl.Datetime("us", "UTC"), fmt, strict=False, exact=True
        ).dt.replace_time_zone(None)
        for fmt in TZ_TIMESTAMP_FORMATS
    ]
    return pl.coalesce(*naive, *aware, parse_date(column).cast(pl.Datetime("us"))).alias(column)


def parse_decimal(column: str) -> pl.Expr:
    return text(column).cast(pl.Float64, strict=False)


def parse_integer(column: str) -> pl.Expr:
    return text(column).cast(pl.Int64, strict=False)


def parse_boolean(column: str) -> pl.Expr:
    value = text(column).str.to_lowercase()
    return pl.when(value.is_in(TRUE_WORDS)).then(True).when(value.is_in(FALSE_WORDS)).then(False)


def bound(value: object) -> object:
    """A registry bound: ``today`` means the run's date; ISO dates become dates."""
    if value == "today":
        return date.today()
    if isinstance(value, str):
        return date.fromisoformat(value)
    return value
