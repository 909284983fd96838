"""Text-to-type parsers shared by the contract checks and the typed staging cast, so a value that
passes a check is exactly a value that casts."""

from __future__ import annotations

from collections.abc import Callable
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
    return (
        text(column)
        .map_batches(lambda values: _first_read(values, _date_readers()), return_dtype=pl.Date)
        .alias(column)
    )


def parse_timestamp(column: str) -> pl.Expr:
    """Naive timestamps as given; offset timestamps (``+02:00``, ``Z``) converted to UTC."""
    value = text(column).str.replace(r"Z$", "+00:00")
    naive = [_reader(pl.Datetime("us"), fmt) for fmt in TIMESTAMP_FORMATS]
    aware = [
        lambda values, fmt=fmt: (
            _reader(pl.Datetime("us", "UTC"), fmt)(values)
            .dt.replace_time_zone(None)
            .cast(pl.Datetime("us"))
        )
        for fmt in TZ_TIMESTAMP_FORMATS
    ]
    dates = [
        lambda values, read=read: read(values).cast(pl.Datetime("us")) for read in _date_readers()
    ]
    return value.map_batches(
        lambda values: _first_read(values, [*naive, *aware, *dates]),
        return_dtype=pl.Datetime("us"),
    ).alias(column)


def _reader(dtype: pl.DataType, fmt: str) -> Callable[[pl.Series], pl.Series]:
    return lambda values: values.str.strptime(dtype, fmt, strict=False, exact=True)


def _date_readers() -> list[Callable[[pl.Series], pl.Series]]:
    return [_reader(pl.Date, fmt) for fmt in DATE_FORMATS]


def _first_read(values: pl.Series, readers: list[Callable[[pl.Series], pl.Series]]) -> pl.Series:
    """What the first reader that can read a value makes of it, as ``pl.coalesce`` of them all;
    but each reader sees only the values the readers before it left unread, so that a column in
    one format is read once, not once per format."""
    result = readers[0](values)
    for read in readers[1:]:
        unread = (result.is_null() & values.is_not_null()).arg_true()
        if unread.len() == 0:
            break
        result = result.scatter(unread, read(values.gather(unread)))
    return result


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
