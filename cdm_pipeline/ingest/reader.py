"""Read one landing file into an all-text frame, or say precisely why it cannot be read.

Raw tables keep values as landed (text), so a wrong type is a validation finding with a reason,
not a crash at load time. A file that cannot be read at all raises ``FileRejected``, whose message
names the file and the problem; no value from the file goes into that message. One file for CSV
and JSON lines alike (~430 lines): they share the encoding, line and row rules.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import sys
import tempfile
from pathlib import Path

import duckdb
import polars as pl

from cdm_pipeline.registry import SourceSpec

# A field longer than this is cut and its row quarantined (``ingest.max_field_chars``); a line
# longer than the reader's limit is quarantined whole, its text cut to this.
DEFAULT_MAX_FIELD_CHARS = 65_536
ROW_NUMBER = "_row_number"
EXTRA = "_extra"
LINE = "_line"  # the text of a line that could not be parsed (kept in ``_extra``)
PARSE_ERROR = "_parse_error"


class FileRejected(Exception):
    """A landing file is structurally unusable (unreadable, empty, wrong encoding, columns missing)."""


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_landing_file(
    path: Path,
    spec: SourceSpec,
    max_field_chars: int = DEFAULT_MAX_FIELD_CHARS,
    control_characters: str = "quarantine",
) -> pl.DataFrame:
    """Return the declared columns as text, ``_extra`` (undeclared columns as JSON),
    ``_parse_error`` (why a row cannot be used: a ragged or cut line, bad JSON, an oversized
    field; the row is quarantined with its text, cut to ``max_field_chars``) and ``_row_number``
    (1-based). The whole file is rejected only when no row can be read from it. A value holding
    a control character (a NUL byte, a stray carriage return) quarantines its row, or with
    ``control_characters="strip"`` loses the character."""
    if path.stat().st_size == 0:
        raise FileRejected(f"{path.name}: empty file (0 bytes)")
    try:
        if spec.format == "parquet":
            frame = pl.read_parquet(path)
            frame = frame.with_columns(pl.all().cast(pl.String))
        else:
            text = _decode(path, spec.encoding)
            frame = (
                _read_csv(path, text, spec.encoding, max_field_chars)
                if spec.format == "csv"
                else _read_jsonl(text, max_field_chars)
            )
    except FileRejected as exc:
        message = str(exc) if str(exc).startswith(path.name) else f"{path.name}: {exc}"
        raise FileRejected(message) from None
    except Exception as exc:  # parse errors carry no row values in their type name
        raise FileRejected(
            f"{path.name}: cannot parse as {spec.format} ({type(exc).__name__})"
        ) from None
    return _conform(frame, path, spec, max_field_chars, control_characters)


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


def _read_csv(path: Path, text: str, encoding: str, max_field_chars: int) -> pl.DataFrame:
    """DuckDB's CSV reader with the header's columns as text and no guessing: a line that does
    not fit (too many or too few fields, a quote left open, over the size limit) is stored by the
    reader with its line number and text and comes back as a ``_parse_error`` row; a last line
    without a line end (a cut file) is one too."""
    header = next(csv.reader(io.StringIO(text, newline="")), [])
    names = [h.strip() for h in header]
    if not names or not any(names):
        raise FileRejected("no header line")
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated or "" in names:
        raise FileRejected(
            f"header has {'duplicate' if duplicated else 'empty'} column names"
            + (f" ({', '.join(duplicated)})" if duplicated else "")
        )
    line_limit = max(2 * 1024 * 1024, 4 * max_field_chars)
    if _needs_care(text, line_limit):
        return _read_csv_carefully(text, names, max_field_chars, line_limit)
    with path.open("rb") as handle:
        has_bom = handle.read(3) == b"\xef\xbb\xbf"
    as_is = encoding.lower().replace("_", "-") in ("utf-8", "utf8") and not has_bom
    with _utf8_copy(path, text, reuse=as_is) as source:
        conn = duckdb.connect()
        try:
            columns = {n: "VARCHAR" for n in header}
            frame = conn.sql(
                "select * from read_csv($path, header = true, auto_detect = false, "
                "columns = $columns, delim = ',', quote = '\"', escape = '\"', "
                "store_rejects = true, max_line_size = $line_limit)",
                params={
                    "path": str(source),
                    "columns": columns,
                    "line_limit": line_limit,
                },
            ).pl()
            rejects = conn.sql(
                "select line, string_agg(distinct lower(error_type), ', ') as cause, "
                "any_value(csv_line) as text from reject_errors group by line order by line"
            ).pl()
        finally:
            conn.close()
    frame = frame.rename({h: n for h, n in zip(header, names, strict=True) if h != n})
    frame = frame.with_columns(
        pl.lit(None, dtype=pl.String).alias(PARSE_ERROR), pl.lit(None, dtype=pl.String).alias(LINE)
    )
    last_line = text.count("\n") + 1
    if not text.endswith("\n") and last_line not in set(rejects["line"]) and frame.height:
        frame = frame.with_columns(
            pl.when(pl.int_range(pl.len()) == pl.len() - 1)
            .then(pl.lit(f"line {last_line}: no line end, the file may be cut"))
            .otherwise(pl.col(PARSE_ERROR))
            .alias(PARSE_ERROR)
        )
    if rejects.height:
        bad = rejects.select(
            (pl.lit("line ") + pl.col("line").cast(pl.String) + ": " + pl.col("cause")).alias(
                PARSE_ERROR
            ),
            pl.col("text").str.slice(0, max_field_chars).alias(LINE),
        )
        frame = pl.concat([frame, bad], how="diagonal")
    if frame.height and frame[PARSE_ERROR].is_not_null().all() and rejects.height:
        raise FileRejected(f"no line could be read as CSV with this header ({rejects['cause'][0]})")
    return frame


def _needs_care(text: str, line_limit: int) -> bool:
    """Whether DuckDB's reader could lose or merge lines of this file: a carriage return that
    ends no line (it would split a row), a line over the reader's limit (over its buffer it is
    dropped without a trace), or an odd number of quotes on a line (a quote left open swallows
    the lines after it; a value with a line break in it looks the same here, and is read so)."""
    if "\r" in text.replace("\r\n", "") or "\x00" in text:
        return True
    for line in text.split("\n"):
        if len(line) > line_limit or line.count('"') % 2:
            return True
    return False


# How many further lines a quoted value may span before its opening quote is taken as a mistake.
MAX_LINES_IN_A_VALUE = 100


def _read_csv_carefully(
    text: str, names: list[str], max_field_chars: int, line_limit: int
) -> pl.DataFrame:
    """Line by line, in Python: every line of the file is a row or part of one, or a quarantined
    row with its line number and text. Lines end at a line feed (a carriage return before it is
    dropped; one anywhere else stays in its value, where it is then quarantined as a control
    character). A quote left open quarantines its own line, and reading resumes at the next."""
    csv.field_size_limit(sys.maxsize)
    lines = [line[:-1] if line.endswith("\r") else line for line in text.split("\n")]
    if lines and lines[-1] == "":
        lines.pop()
    good: list[list[str | None]] = []
    bad: list[dict[str, str]] = []
    number = 1  # the header is line 1
    while number < len(lines):
        line = lines[number]
        start = number + 1
        record, used = line, 1
        while record.count('"') % 2 and used <= MAX_LINES_IN_A_VALUE and number + used < len(lines):
            record += "\n" + lines[number + used]
            used += 1
        fields = _fields(record) if record.count('"') % 2 == 0 else None
        if fields is None or (used > 1 and len(fields) != len(names)):
            if line.count('"') % 2:
                bad.append(
                    _bad_row(start, "unquoted value (a quote left open)", line, max_field_chars)
                )
                number += 1
                continue
            fields = _fields(line)
            record, used = line, 1
        number += used
        if len(record) > line_limit:
            bad.append(_bad_row(start, "line size over maximum", record, max_field_chars))
        elif fields is None:
            bad.append(_bad_row(start, "unquoted value", record, max_field_chars))
        elif len(fields) != len(names):
            problem = "too many columns" if len(fields) > len(names) else "missing columns"
            bad.append(_bad_row(start, problem, record, max_field_chars))
        else:
            good.append([value if value != "" else None for value in fields])
    if not good and bad:
        raise FileRejected(f"no line could be read as CSV with this header ({bad[0][PARSE_ERROR]})")
    frame = pl.DataFrame(good, schema={n: pl.String for n in names}, orient="row").with_columns(
        pl.lit(None, dtype=pl.String).alias(PARSE_ERROR), pl.lit(None, dtype=pl.String).alias(LINE)
    )
    if text and not text.endswith("\n") and good and not (bad and bad[-1]["_at"] == len(lines)):
        frame = frame.with_columns(
            pl.when(pl.int_range(pl.len()) == pl.len() - 1)
            .then(pl.lit(f"line {len(lines)}: no line end, the file may be cut"))
            .otherwise(pl.col(PARSE_ERROR))
            .alias(PARSE_ERROR)
        )
    if bad:
        frame = pl.concat(
            [frame, pl.DataFrame([{k: v for k, v in b.items() if k != "_at"} for b in bad])],
            how="diagonal",
        )
    return frame


_CR = "\ue00d"  # a private-use stand-in: Python's CSV reader would end a row at a bare CR


def _fields(record: str) -> list[str] | None:
    try:
        rows = list(csv.reader(io.StringIO(record.replace("\r", _CR), newline=""), strict=True))
    except csv.Error:
        return None
    return [f.replace(_CR, "\r") for f in rows[0]] if len(rows) == 1 else None


def _bad_row(line: int, problem: str, text: str, max_field_chars: int) -> dict:
    return {PARSE_ERROR: f"line {line}: {problem}", LINE: text[:max_field_chars], "_at": line}


class _utf8_copy:
    """The file itself when DuckDB can read it as is, else a temporary UTF-8 copy (removed on
    exit: it holds the file's data)."""

    def __init__(self, path: Path, text: str, reuse: bool):
        self.path, self.text, self.reuse, self.copy = path, text, reuse, None

    def __enter__(self) -> Path:
        if self.reuse:
            return self.path
        handle, name = tempfile.mkstemp(suffix=".csv")
        with os.fdopen(handle, "w", encoding="utf-8", newline="") as out:
            out.write(self.text)
        self.copy = Path(name)
        return self.copy

    def __exit__(self, *exc) -> None:
        if self.copy is not None:
            self.copy.unlink(missing_ok=True)


def _read_jsonl(text: str, max_field_chars: int) -> pl.DataFrame:
    """Parse line by line so one broken line becomes one quarantined row (with its text), not a
    lost file: bad JSON, a line that is not an object, one nested too deep, a key given twice."""
    rows: list[dict[str, str | None]] = []
    # Lines end at a line feed only: a carriage return or a form feed inside a value is part of
    # it (then quarantined as a control character), not a row break.
    for number, line in enumerate(text.split("\n"), start=1):
        line = line[:-1] if line.endswith("\r") else line
        if not line.strip():
            continue
        try:
            value = json.loads(line, object_pairs_hook=_unique_keys)
        except json.JSONDecodeError:
            problem = "not valid JSON"
        except RecursionError:
            problem = "nested too deep"
        except _DuplicateKey as exc:
            problem = f"key '{exc}' given twice"
        else:
            if isinstance(value, dict):
                rows.append({str(k): _as_text(v) for k, v in value.items()})
                continue
            problem = "not a JSON object"
        rows.append({PARSE_ERROR: f"line {number}: {problem}", LINE: line[:max_field_chars]})
    if not rows:
        raise FileRejected("empty file (no JSON lines)")
    return pl.DataFrame(rows, infer_schema_length=None).with_columns(pl.all().cast(pl.String))


class _DuplicateKey(ValueError):
    pass


def _unique_keys(pairs: list[tuple[str, object]]) -> dict:
    seen: dict = {}
    for key, value in pairs:
        if key in seen:
            raise _DuplicateKey(key[:64])
        seen[key] = value
    return seen


def _as_text(value: object) -> str | None:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return json.dumps(value, ensure_ascii=False)


def _conform(
    frame: pl.DataFrame,
    path: Path,
    spec: SourceSpec,
    max_field_chars: int,
    control_characters: str = "quarantine",
) -> pl.DataFrame:
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
    # A CSV header without a declared column is an export that changed: the file is refused. A
    # JSON line leaves out a key whose value is null, so a key no line carries is null (a
    # required value then fails its contract row by row).
    missing = [
        c for c in spec.required_columns if c not in frame.columns and spec.format != "jsonl"
    ]
    has_rows = PARSE_ERROR not in frame.columns or frame[PARSE_ERROR].is_null().any()
    if missing and has_rows:
        raise FileRejected(f"{path.name}: missing required column(s) {', '.join(missing)}")
    frame = _cut_long_fields(frame, max_field_chars)
    frame = _control_characters(frame, control_characters)
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


# Control characters no name, email or address holds: NUL and the other C0 codes but tab and
# line feed, DEL, and a carriage return that does not end a line.
CONTROL = r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]|\r[^\n]|\r$"


def _control_characters(frame: pl.DataFrame, mode: str) -> pl.DataFrame:
    """Quarantine the rows whose values hold a control character (``x\\x00y@example.com`` is no
    email, ``Ann\\x00a`` no name), or, with ``mode="strip"``, remove the characters."""
    columns = [c for c in frame.columns if c not in (PARSE_ERROR, LINE)]
    if not columns:
        return frame
    if mode == "strip":
        return frame.with_columns(
            pl.col(c)
            .str.replace_all(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]", "")
            .str.replace_all("\r\n", "\n")
            .str.replace_all("\r", "")
            for c in columns
        )
    found = [pl.when(pl.col(c).str.contains(CONTROL)).then(pl.lit(c)) for c in columns]
    frame = frame.with_columns(_control=pl.concat_str(found, separator=", ", ignore_nulls=True))
    if frame["_control"].fill_null("").str.len_chars().max() in (0, None):
        return frame.drop("_control")
    if PARSE_ERROR not in frame.columns:
        frame = frame.with_columns(pl.lit(None, dtype=pl.String).alias(PARSE_ERROR))
    message = pl.lit("control character in ") + pl.col("_control")
    return frame.with_columns(
        pl.when(pl.col("_control") != "")
        .then(pl.concat_str([pl.col(PARSE_ERROR), message], separator="; ", ignore_nulls=True))
        .otherwise(pl.col(PARSE_ERROR))
        .alias(PARSE_ERROR)
    ).drop("_control")


def _cut_long_fields(frame: pl.DataFrame, limit: int) -> pl.DataFrame:
    """A value over ``limit`` characters is cut to it and its row marked for quarantine: a
    megabyte first name is not a name, and must not become a golden one."""
    columns = [c for c in frame.columns if c != PARSE_ERROR]
    if not columns:
        return frame
    too_long = [pl.when(pl.col(c).str.len_chars() > limit).then(pl.lit(c)) for c in columns]
    reason = pl.concat_str(too_long, separator=", ", ignore_nulls=True)
    frame = frame.with_columns(_too_long=reason)
    if frame["_too_long"].fill_null("").str.len_chars().max() in (0, None):
        return frame.drop("_too_long")
    if PARSE_ERROR not in frame.columns:
        frame = frame.with_columns(pl.lit(None, dtype=pl.String).alias(PARSE_ERROR))
    message = pl.lit(f"longer than {limit} characters: ") + pl.col("_too_long")
    return frame.with_columns(
        *[pl.col(c).str.slice(0, limit) for c in columns],
        pl.when(pl.col("_too_long") != "")
        .then(pl.concat_str([pl.col(PARSE_ERROR), message], separator="; ", ignore_nulls=True))
        .otherwise(pl.col(PARSE_ERROR))
        .alias(PARSE_ERROR),
    ).drop("_too_long")
