"""Steward overrides: must-link / cannot-link decisions that the resolver always honours."""

from __future__ import annotations

from pathlib import Path

import polars as pl

OVERRIDE_SCHEMA = {
    "rule": pl.String,
    "source_l": pl.String,
    "record_id_l": pl.String,
    "source_r": pl.String,
    "record_id_r": pl.String,
    "reason": pl.String,
}
RULES = ("must_link", "cannot_link")


def read_overrides(path: str | Path | None) -> pl.DataFrame:
    """Read the steward file (CSV with ``OVERRIDE_SCHEMA`` columns); a missing file means none."""
    if path is None or not Path(path).exists():
        return pl.DataFrame(schema=OVERRIDE_SCHEMA)
    frame = pl.read_csv(path, schema_overrides=OVERRIDE_SCHEMA, comment_prefix="#")
    missing = set(OVERRIDE_SCHEMA) - set(frame.columns)
    if missing:
        raise ValueError(f"{Path(path).name}: missing column(s) {', '.join(sorted(missing))}")
    bad = frame.filter(~pl.col("rule").is_in(RULES))
    if bad.height:
        raise ValueError(f"{Path(path).name}: rule must be one of {RULES} (row(s) {bad.height})")
    return frame.select(list(OVERRIDE_SCHEMA))
