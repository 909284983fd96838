"""Read one landing file into an all-text frame, or say precisely why it cannot be read.

Raw tables keep values as landed (text), so a wrong type is a validation finding with a reason,
not a crash at load time. A file that cannot be read at all raises ``FileRejected``, whose message
names the file and the problem; no value from the file goes into that message.
"""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import polars as pl

from cdm_pipeline.registry import SourceSpec

ROW_NUMBER = "_row_number"
EXTRA = "_extra"
PARSE_ERROR = "_parse_error"


class FileRejected(Exception):
    """A landing file is structurally unusable (unreadable, empty, wrong encoding, columns missing)."""


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_landing_file(path: Path, spec: SourceSpec) -> pl.DataFrame:
    """Return the declared columns as text, ``_extra`` (undeclared columns as JSON),
    ``_parse_error`` (a row that could not be parsed) and ``_row_number`` (1-based)."""
    if path.stat().st_size == 0:
        raise FileRejected(f"{path.name}: empty file (0 bytes)")
    try:
        if spec.format == "parquet":
            frame = pl.read_parquet(path)
            frame = frame.with_columns(pl.all().cast(pl.String))
        else:
            text = _decode(path, spec.encoding)
            frame = _read_csv(text) if spec.format == "csv" else _read_jsonl(text)
    except FileRejected:
        raise
    except Exception as exc:  # polars/pyarrow parse errors carry no row values in their type name
        raise FileRejected(
            f"{path.name}: cannot parse as {spec.format} ({type(exc).__name__})"
        ) from None
    return _conform(frame, path, spec)


def _decode(path: Path, encoding: str) -> str:
    data = path.read_bytes()
    try:
        text = data.decode(
            "utf-8-sig" if encoding.lower().replace("_", "-") in ("utf-8", "utf8") else encoding
        )
    except UnicodeDecodeError as exc:
        raise FileRejected(
            f"{path.name}: not valid {encoding} at byte {exc.start}; re-export it as {encoding} "
            f"or declare the file's encoding in sources.yaml"
        ) from None
    if not text.strip():
        raise FileRejected(f"{path.name}: empty file (no header, no rows)")
    return text


def _read_csv(text: str) -> pl.DataFrame:
    return pl.read_csv(io.BytesIO(text.encode("utf-8")), infer_schema=False)


def _read_jsonl(text: str) -> pl.DataFrame:
    """Parse line by line so one broken line becomes one quarantined row, not a lost file."""
    rows: list[dict[str, str | None]] = []
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError:
            rows.append({PARSE_ERROR: "line is not valid JSON"})
            continue
        if not isinstance(value, dict):
            rows.append({PARSE_ERROR: "line is not a JSON object"})
            continue
        rows.append({str(k): _as_text(v) for k, v in value.items()})
    if not rows:
        raise FileRejected("empty file (no JSON lines)")
    return pl.DataFrame(rows, infer_schema_length=None).with_columns(pl.all().cast(pl.String))


def _as_text(value: object) -> str | None:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return json.dumps(value, ensure_ascii=False)


def _conform(frame: pl.DataFrame, path: Path, spec: SourceSpec) -> pl.DataFrame:
    """Map headers to declared columns (exact, then case-insensitive) and pack the rest as JSON."""
    frame = frame.rename({c: c.strip() for c in frame.columns})
    declared = {c.lower(): c for c in spec.column_names}
    renames = {
        c: declared[c.lower()]
        for c in frame.columns
        if c not in spec.column_names
        and c.lower() in declared
        and declared[c.lower()] not in frame.columns
    }
    frame = frame.rename(renames)
    missing = [c for c in spec.required_columns if c not in frame.columns]
    has_rows = PARSE_ERROR not in frame.columns or frame[PARSE_ERROR].is_null().any()
    if missing and has_rows:
        raise FileRejected(f"{path.name}: missing required column(s) {', '.join(missing)}")
    extra = [c for c in frame.columns if c not in spec.column_names and c != PARSE_ERROR]
    extra_json = pl.struct(extra).struct.json_encode() if extra else pl.lit(None, dtype=pl.String)
    parse_error = (
        pl.col(PARSE_ERROR) if PARSE_ERROR in frame.columns else pl.lit(None, dtype=pl.String)
    )
    return frame.select(
        *[
            pl.col(c) if c in frame.columns else pl.lit(None, dtype=pl.String).alias(c)
            for c in spec.column_names
        ],
        extra_json.alias(EXTRA),
        parse_error.alias(PARSE_ERROR),
        pl.int_range(1, pl.len() + 1, dtype=pl.Int64).alias(ROW_NUMBER),
    )
