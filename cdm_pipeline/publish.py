"""A night works on a draft of the warehouse and publishes it whole, or not at all.

Readers (any DuckDB client, the CLI's exports, BI tools) open the published file; a run never
writes it. The run's first connection copies the published file to a draft beside it
(``draft_path``), every step writes the draft, and the last step (``publish``) checks it and
renames it over the published file. A rename is atomic: a reader that opened the old file keeps
reading the old night until it reconnects, a killed run leaves the published file as it was, and
the next run starts again from it. The old file is gone once the rename is done (its blocks are
freed when the last reader closes it): no older copy is kept.

One run writes a warehouse at a time (``run_lock``): an OS lock on ``<warehouse>.run``, taken by
``cdm run`` before it starts and by the run's warehouse resource before its first step, released
when the process ends, however it ends.
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import duckdb

from cdm_pipeline.warehouse import quote_ident

# The locks this process holds: warehouse -> (open lock file, run id or "").
_HELD: dict[Path, tuple] = {}


class WarehouseBusy(RuntimeError):
    """Another run (or process) is writing the warehouse."""


def draft_path(published: Path) -> Path:
    """Tonight's draft, beside the published file (a rename within one folder is atomic)."""
    return published.with_name(f".{published.stem}.night{published.suffix}")


def lock_path(published: Path) -> Path:
    return published.with_name(published.name + ".run")


def acquire_run_lock(published: Path, run_id: str = "", holder: str = "") -> None:
    """Take the warehouse's run lock for this process (kept until ``release_run_lock`` or the
    process ends), or raise ``WarehouseBusy`` naming who holds it. Taking it again in the
    process that holds it only records the run id."""
    published = Path(published).resolve()
    if published in _HELD:
        handle, _ = _HELD[published]
        if run_id:
            _write(handle, f"{run_id} {os.getpid()} {holder}".strip())
            _HELD[published] = (handle, run_id)
        return
    path = lock_path(published)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = path.open("a+")
    held_by = _holder_of(handle)
    if held_by:
        handle.close()
        raise WarehouseBusy(
            f"the warehouse {published} is being written by {_describe(held_by)}: one run at a "
            "time; run again when it ends"
        )
    _write(handle, f"{run_id} {os.getpid()} {holder}".strip())
    _HELD[published] = (handle, run_id)


def _holder_of(handle, wait: float = 1.0) -> str:
    """Lock ``handle`` and return "", or return what the holder wrote. A holder writes just after
    it locks and empties the file just before it unlocks: an empty file under a lock is a
    moment, and is read again (or the lock taken) for up to ``wait`` seconds."""
    deadline = time.monotonic() + wait
    while True:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return ""
        except BlockingIOError:
            handle.seek(0)
            text = handle.read().strip()
            if text or time.monotonic() >= deadline:
                return text or "another process"
            time.sleep(0.02)


def release_run_lock(published: Path) -> None:
    handle, _ = _HELD.pop(Path(published).resolve(), (None, None))
    if handle is not None:
        handle.seek(0)
        handle.truncate()
        handle.flush()
        fcntl.flock(handle, fcntl.LOCK_UN)
        handle.close()


def lock_holder(published: Path) -> str:
    """What the run lock's holder wrote (``run_id pid [who]``), or "" when it is free."""
    path = lock_path(Path(published).resolve())
    if not path.exists():
        return ""
    with path.open("a+") as handle:
        held_by = _holder_of(handle)
        if not held_by:
            fcntl.flock(handle, fcntl.LOCK_UN)
        return held_by


def held_here(published: Path) -> bool:
    """True when this process holds the warehouse's run lock."""
    return Path(published).resolve() in _HELD


def holds_run_lock(published: Path, run_id: str) -> bool:
    """True when this process holds the lock, or the holder wrote ``run_id`` (a step process
    of a run whose launching process holds it)."""
    published = Path(published).resolve()
    if published in _HELD:
        return True
    held_by = lock_holder(published)
    return bool(run_id) and held_by.split(" ", 1)[0] == run_id


@contextmanager
def run_lock(published: Path, run_id: str = "", holder: str = "") -> Iterator[None]:
    acquire_run_lock(published, run_id, holder)
    try:
        yield
    finally:
        release_run_lock(published)


def _write(handle, text: str) -> None:
    handle.seek(0)
    handle.truncate()
    handle.write(text)
    handle.flush()


def _describe(held_by: str) -> str:
    parts = held_by.split(" ", 2)
    if len(parts) >= 2 and parts[1].isdigit():
        who = f" ({parts[2]})" if len(parts) == 3 else ""
        return f"run {parts[0]} (pid {parts[1]}){who}" if parts[0] else f"pid {parts[1]}{who}"
    return held_by


def start_draft(published: Path, run_id: str) -> Path:
    """The draft for ``run_id``: made from the published file the first time the run asks (a
    draft another run left, finished or killed, is replaced); the same file after that."""
    draft = draft_path(published)
    marker = draft.with_name(draft.name + ".of")
    if draft.exists() and marker.exists() and marker.read_text() == run_id:
        return draft
    for stale in (draft, Path(f"{draft}.wal"), marker):
        stale.unlink(missing_ok=True)
    if published.exists():
        _not_written_elsewhere(published)
        shutil.copyfile(published, draft)
        if Path(f"{published}.wal").exists():  # written before nights were drafts: replayed
            shutil.copyfile(f"{published}.wal", f"{draft}.wal")
    marker.write_text(run_id)
    return draft


def _not_written_elsewhere(published: Path) -> None:
    """Readers may hold the published file; a writer outside the pipeline may not (its copy
    would be torn, and its writes lost at the rename): refuse the night, naming its process."""
    try:
        duckdb.connect(str(published), read_only=True).close()
    except duckdb.IOException as exc:
        busy = held_by_another_process(exc, published, "for writing: only the pipeline writes it")
        if busy is None:
            raise
        raise busy from None


def held_by_another_process(
    exc: duckdb.IOException, database: Path | str, why: str
) -> WarehouseBusy | None:
    """DuckDB's lock conflict as one line naming the process that holds the file (None: the
    error is another one)."""
    if "lock" not in str(exc).lower():
        return None
    holder = re.search(r"PID (\d+)", str(exc))
    return WarehouseBusy(
        f"the warehouse {database} is open by another process"
        + (f" (pid {holder.group(1)})" if holder else "")
        + f" {why}"
    )


def publish(published: Path, rewrite: bool, memory_limit: str | None = None) -> Path:
    """Put tonight's draft in the published file's place. With ``rewrite`` (rows were deleted
    tonight: an erasure, retention) the draft is first copied into a fresh file, table by
    table: a deleted row's bytes stay readable in the free blocks of the file it was deleted
    from, never in a file it was not written to. ``memory_limit`` bounds the copy's DuckDB (the
    night's, ``CDM_DUCKDB_MEMORY_LIMIT``)."""
    draft = draft_path(published)
    if not draft.exists():
        raise FileNotFoundError(f"no draft of {published} to publish")
    _checkpointed(draft)
    if rewrite:
        fresh = draft.with_name(draft.name + ".fresh")
        fresh.unlink(missing_ok=True)
        copy_into_fresh_file(draft, fresh, memory_limit=memory_limit)
        os.replace(fresh, draft)
    os.replace(draft, published)
    Path(f"{published}.wal").unlink(missing_ok=True)
    draft.with_name(draft.name + ".of").unlink(missing_ok=True)
    _sync_folder(published.parent)
    return published


def copy_into_fresh_file(
    source: Path, fresh: Path, workers: int | None = None, memory_limit: str | None = None
) -> None:
    """What ``copy from database`` does (the schema, then every table's rows), with the tables
    copied ``workers`` at a time, largest first, under a memory limit. DuckDB compresses a small
    table's new row groups on one core, so the one-statement copy left the other idle; under
    DuckDB's default limit (80 % of the machine) it held 5.4 GB for a 1M-people warehouse, 3.9 GB
    under the night's 4 GB (``benchmarks/publish_cost.py``: 0.82 of its time at 100k people,
    0.93 at 1M). Only rows are copied: a deleted row, and the free blocks of ``source``, never
    reach ``fresh``."""
    workers = workers or min(os.cpu_count() or 1, 4)
    spill = Path(f"{fresh}.tmp")  # beside the files, not in the working directory
    config = {"temp_directory": str(spill)} | (
        {"memory_limit": memory_limit} if memory_limit else {}
    )
    try:
        with duckdb.connect(config=config) as conn:
            conn.execute("attach ? as night (read_only)", [str(source)])
            conn.execute("attach ? as fresh", [str(fresh)])
            conn.execute("copy from database night to fresh (schema)")
            tables = conn.execute(
                "select schema_name, table_name from duckdb_tables() "
                "where database_name = 'night' order by estimated_size desc"
            ).fetchall()

            def copy_rows(table: tuple[str, str]) -> None:
                name = ".".join(quote_ident(part) for part in table)
                with conn.cursor() as cursor:
                    cursor.execute(f"insert into fresh.{name} select * from night.{name}")

            with ThreadPoolExecutor(workers) as pool:
                list(pool.map(copy_rows, tables))  # raises the first table's error
            conn.execute("checkpoint fresh")
            conn.execute("detach night")
            conn.execute("detach fresh")
    finally:  # it holds copied rows, never a deleted one
        shutil.rmtree(spill, ignore_errors=True)


def _checkpointed(path: Path) -> None:
    """Fold the file's write-ahead log into it, so that the file alone is the database."""
    if not Path(f"{path}.wal").exists():
        return
    with duckdb.connect(str(path)) as conn:
        conn.execute("checkpoint")


def _sync_folder(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# Actions that delete rows: after them the night is copied into a fresh file before it is
# published, so that no deleted value stays readable in the file's free blocks.
DELETING_ACTIONS = ("erased", "purged")


def rows_deleted_in_run(conn: duckdb.DuckDBPyConnection, run_id: str) -> int:
    """Rows the run's erasures and purges deleted (from the audit log)."""
    return conn.execute(
        "select coalesce(sum(row_count), 0) from governance.audit_log "
        f"where run_id = ? and action in ({', '.join('?' * len(DELETING_ACTIONS))})",
        [run_id, *DELETING_ACTIONS],
    ).fetchall()[0][0]


def table_counts(conn: duckdb.DuckDBPyConnection, tables: tuple[str, ...]) -> dict[str, int]:
    """Row counts of those of ``tables`` (``schema.table``) that exist."""
    found = {
        f"{schema}.{table}"
        for schema, table in conn.execute(
            "select table_schema, table_name from information_schema.tables"
        ).fetchall()
    }
    return {
        table: conn.execute(f"select count(*) from {table}").fetchall()[0][0]
        for table in tables
        if table in found
    }
