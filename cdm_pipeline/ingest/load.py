"""Load new landing files into ``raw.<source>`` exactly once, in one transaction per file."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path

import duckdb
import polars as pl

from cdm_pipeline.governance.suppression import suppressed_rows
from cdm_pipeline.ingest.reader import (
    DEFAULT_MAX_FIELD_CHARS,
    EXTRA,
    PARSE_ERROR,
    ROW_NUMBER,
    FileRejected,
    file_sha256,
    read_landing_file,
)
from cdm_pipeline.registry import SourceSpec
from cdm_pipeline.warehouse import ensure_schemas, quote_ident, sql_text, transaction


@dataclass
class LoadSummary:
    files_seen: int = 0
    files_loaded: int = 0
    files_skipped: int = 0
    files_rejected: int = 0
    rows_loaded: int = 0
    rows_suppressed: int = 0
    rejections: list[str] = field(default_factory=list)


def spec_hash(spec: SourceSpec) -> str:
    return hashlib.sha256(
        json.dumps(asdict(spec), sort_keys=True, default=str).encode()
    ).hexdigest()[:16]


def ensure_raw_table(conn: duckdb.DuckDBPyConnection, spec: SourceSpec) -> str:
    ensure_schemas(conn)
    conn.execute(sql_text("warehouse/fixed_tables"))
    table = f"raw.{quote_ident(spec.name)}"
    columns = ", ".join(f"{quote_ident(c)} varchar" for c in spec.column_names)
    conn.execute(
        f"create table if not exists {table} ({columns}, {EXTRA} varchar, {PARSE_ERROR} varchar, "
        f"{ROW_NUMBER} bigint, _source_file varchar, _file_sha256 varchar, _loaded_at timestamp, _run_id varchar)"
    )
    # A column added to the registry later is added to the table, never dropped.
    existing = {
        r[0]
        for r in conn.execute(
            "select column_name from information_schema.columns where table_schema = 'raw' and table_name = ?",
            [spec.name],
        ).fetchall()
    }
    for column in spec.column_names:
        if column not in existing:
            conn.execute(f"alter table {table} add column {quote_ident(column)} varchar")
    return table


def landing_files(landing_dir: Path, spec: SourceSpec) -> list[Path]:
    """The files of ``spec`` in the landing folder (links included when they point inside it)."""
    return confined_files(landing_dir, spec)[0]


def confined_files(landing_dir: Path, spec: SourceSpec) -> tuple[list[Path], list[Path]]:
    """(files inside the landing folder, files whose real location is outside it: a symbolic
    link or a linked folder pointing elsewhere). Those outside are never opened."""
    root = Path(landing_dir).resolve()
    inside, outside = [], []
    for path in sorted(Path(landing_dir).glob(spec.path)):
        real = path.resolve()
        if not real.is_relative_to(root):
            outside.append(path)
        elif real.is_file():
            inside.append(path)
    return inside, outside


def load_new_files(
    conn: duckdb.DuckDBPyConnection,
    spec: SourceSpec,
    landing_dir: Path,
    run_id: str,
    phone_regions: tuple[str, ...] = ("US",),
    max_field_chars: int = DEFAULT_MAX_FIELD_CHARS,
    control_characters: str = "quarantine",
) -> LoadSummary:
    """Land every file not loaded before. A file is known by its content hash, so a renamed copy
    is skipped too; a rejected file is retried only when its registry entry changes. Rows of
    erased people (on the suppression list) are not landed, only counted."""
    table = ensure_raw_table(conn, spec)
    summary = LoadSummary()
    current_spec = spec_hash(spec)
    seen = conn.execute(
        "select file_sha256, status, spec_hash from raw.file_ledger where source = ?", [spec.name]
    ).fetchall()
    loaded = {sha for sha, status, _ in seen if status == "loaded"}
    rejected = {sha for sha, status, h in seen if status == "rejected" and h == current_spec}
    files, outside = confined_files(landing_dir, spec)
    for path in outside:
        # Known by a hash of its name (its content is never read); recorded once.
        sha = "outside:" + hashlib.sha256(str(path.relative_to(landing_dir)).encode()).hexdigest()
        summary.files_seen += 1
        if sha in rejected:
            summary.files_skipped += 1
            continue
        reason = f"{path.name}: links outside the landing folder; refused, not read"
        summary.files_rejected += 1
        summary.rejections.append(reason)
        _ledger(
            conn,
            spec.name,
            path,
            sha,
            0,
            "rejected",
            reason,
            current_spec,
            datetime.now(),
            run_id,
            0,
        )
        rejected.add(sha)
    for path in files:
        summary.files_seen += 1
        sha = file_sha256(path)
        if sha in loaded or sha in rejected:
            summary.files_skipped += 1
            continue
        now = datetime.now()
        try:
            frame = read_landing_file(path, spec, max_field_chars, control_characters)
        except FileRejected as exc:
            summary.files_rejected += 1
            summary.rejections.append(str(exc))
            _ledger(
                conn, spec.name, path, sha, 0, "rejected", str(exc), current_spec, now, run_id, 0
            )
            continue
        blocked = suppressed_rows(conn, frame, source=spec, phone_regions=phone_regions)
        suppressed = int(blocked.sum() or 0)
        frame = frame.filter(~blocked)
        frame = frame.with_columns(
            _source_file=pl.lit(path.name),
            _file_sha256=pl.lit(sha),
            _loaded_at=pl.lit(now),
            _run_id=pl.lit(run_id),
        )
        with transaction(conn):
            conn.register("landed_file", frame.to_arrow())
            conn.execute(f"insert into {table} by name select * from landed_file")
            conn.unregister("landed_file")
            _ledger(
                conn,
                spec.name,
                path,
                sha,
                frame.height,
                "loaded",
                None,
                current_spec,
                now,
                run_id,
                suppressed,
            )
        loaded.add(sha)
        summary.files_loaded += 1
        summary.rows_loaded += frame.height
        summary.rows_suppressed += suppressed
    return summary


def _ledger(
    conn,
    source: str,
    path: Path,
    sha: str,
    rows: int,
    status: str,
    error: str | None,
    spec: str,
    now: datetime,
    run_id: str,
    suppressed: int,
) -> None:
    conn.execute(
        "insert into raw.file_ledger (source, source_file, file_sha256, file_bytes, row_count, status, error, "
        "spec_hash, loaded_at, run_id, suppressed_rows) values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            source,
            path.name,
            sha,
            path.lstat().st_size
            if status == "rejected" and sha.startswith("outside:")
            else path.stat().st_size,
            rows,
            status,
            error,
            spec,
            now,
            run_id,
            suppressed,
        ],
    )


def open_rejections(conn: duckdb.DuckDBPyConnection, source: str) -> list[tuple[str, str]]:
    """``(file, reason)`` of every rejected file of ``source`` still open: not acknowledged by
    a steward and not replaced by a file of the same name that loaded. They fail the source's
    check on every run, not only the run that saw them."""
    return conn.execute(
        "select source_file, any_value(error) from raw.file_ledger r where source = ? "
        "and status = 'rejected' and acknowledged_at is null and not exists (select 1 from "
        "raw.file_ledger l where l.source = r.source and l.source_file = r.source_file "
        "and l.status = 'loaded' and l.loaded_at > r.loaded_at) group by 1 order by 1",
        [source],
    ).fetchall()


def acknowledge_rejection(conn: duckdb.DuckDBPyConnection, source: str, file_name: str) -> int:
    """A steward's answer to a rejected file that will not be replaced: its check stops
    failing. Returns how many ledger rows were acknowledged."""
    ensure_schemas(conn)
    conn.execute(sql_text("warehouse/fixed_tables"))
    (n,) = conn.execute(
        "update raw.file_ledger set acknowledged_at = now() where source = ? and source_file = ? "
        "and status = 'rejected' and acknowledged_at is null",
        [source, file_name],
    ).fetchall()[0]
    return n


def recent_loads(conn: duckdb.DuckDBPyConnection, source: str, runs: int) -> list[int]:
    """Rows the source's last ``runs`` loads that landed anything brought (newest first)."""
    rows = conn.execute(
        "select rows_in from governance.load_history where source = ? and stage = 'raw' "
        "and rows_in > 0 order by recorded_at desc limit ?",
        [source, runs],
    ).fetchall()
    return [r[0] for r in rows]


def record_load(
    conn: duckdb.DuckDBPyConnection, run_id: str, source: str, rows: int, now: datetime
) -> None:
    conn.execute(
        "insert into governance.load_history values (?, ?, 'raw', ?, ?)",
        [run_id, source, rows, now],
    )


def last_delivery(conn: duckdb.DuckDBPyConnection, source: str) -> datetime | None:
    """When the source last delivered a file that loaded (from the file ledger)."""
    return conn.execute(
        "select max(loaded_at) from raw.file_ledger where source = ? and status = 'loaded'",
        [source],
    ).fetchall()[0][0]
