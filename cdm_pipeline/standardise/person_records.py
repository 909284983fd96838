"""``identity.person_records``, night by night: what to standardise tonight (records whose inputs
changed, less those of erased people), written slice by slice, and how valid the results are."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

import duckdb
import polars as pl

from cdm_pipeline.governance.erasure import erase_source_rows
from cdm_pipeline.governance.identity_suppression import identity_suppressed
from cdm_pipeline.governance.suppression import suppressed_person_records, suppressed_rows
from cdm_pipeline.registry import SourceSpec
from cdm_pipeline.standardise.fields import close_pool
from cdm_pipeline.standardise.load import canonical_records, create_canonical_table
from cdm_pipeline.standardise.records import (
    clean_inputs,
    standardise_records,
    unchanged_record_keys,
)
from cdm_pipeline.warehouse import StagedTable, replace_table, table_exists

# Records are standardised in slices of this many (bounded memory at any size) into a table of
# their own, renamed to identity.person_records in one transaction (written once, not copied).
STANDARDISE_SLICE_RECORDS = 1_000_000


def tonights_inputs(
    conn: duckdb.DuckDBPyConnection,
    sources: list[SourceSpec],
    fingerprint: str,
    regions: tuple[str, ...],
) -> tuple[pl.DataFrame, int, int]:
    """(canonical records to standardise tonight, stored records kept as they are, records left
    out because their person was erased). A record whose inputs did not change since it was
    standardised under the same settings is kept (it passed the suppression check then;
    erasure removes it since): the comparison runs in DuckDB (``_reused_keys``), and only the
    new and changed records come into Python."""
    by_name = {s.name: s for s in sources}
    if same_settings(conn, fingerprint):
        create_canonical_table(conn, by_name, "_canonical")
        unchanged_record_keys(conn, "_canonical")
        canonical = conn.sql(
            "select * from _canonical where record_key not in (select record_key from _reused_keys)"
        ).pl()
        conn.execute("drop table _canonical")
    else:  # every record is standardised: read straight into Python, with no copy in DuckDB
        unchanged_record_keys(conn, "", same_settings=False)
        canonical = canonical_records(conn, by_name)
    canonical = clean_inputs(canonical)
    reused = conn.execute("select count(*) from _reused_keys").fetchall()[0][0]
    blocked = pl.Series([False] * canonical.height, dtype=pl.Boolean)
    for source in sources:
        mask = (canonical["source"] == source.name).to_numpy()
        if mask.any():
            hits = suppressed_rows(
                conn, canonical.filter(pl.Series(mask)), _canonical_spec(source), regions
            )
            blocked = blocked.scatter(mask.nonzero()[0], hits)
    return canonical.filter(~blocked), reused, int(blocked.sum() or 0)


def same_settings(conn: duckdb.DuckDBPyConnection, fingerprint: str) -> bool:
    """The stored person records were made under these settings."""
    if not (
        table_exists(conn, "identity", "standardise_settings")
        and table_exists(conn, "identity", "person_records")
    ):
        return False
    rows = conn.execute("select fingerprint from identity.standardise_settings").fetchall()
    return rows == [(fingerprint,)]


def remember_settings(conn: duckdb.DuckDBPyConnection, fingerprint: str, run_id: str) -> None:
    """The settings tonight's records were standardised under: a change standardises all again."""
    replace_table(
        conn,
        "identity",
        "standardise_settings",
        pl.DataFrame({"fingerprint": [fingerprint], "run_id": [run_id]}),
    )


def write_person_records(
    staged: StagedTable,
    canonical: pl.DataFrame,
    reused: int,
    settings: dict,
    suppressed: int,
    match_threshold: float,
) -> tuple[int, int, int, pl.DataFrame, bool]:
    """Stage tonight's records, standardised slice by slice (memory stays bounded), after the
    reused ones, or alone when the reused are most (a nightly delta: ``publish_person_records``
    then changes the live table in place rather than copying every kept row). Returns
    (suppressed, standardised, records) counts, the ``source, source_record_id`` of new records
    left out as an erased person by identity (``identity_suppressed``: the caller removes what
    landed of them), and whether the change is in place."""
    conn = staged.conn
    in_place = 0 < reused and canonical.height <= reused
    if reused > 0 and not in_place:
        staged.create_as(
            "select * from identity.person_records "
            "where record_key in (select record_key from _reused_keys)"
        )
    standardised = 0
    held_out = [pl.DataFrame(schema={"source": pl.String, "source_record_id": pl.String})]
    try:
        for start in range(0, max(canonical.height, 1), STANDARDISE_SLICE_RECORDS):
            fresh = standardise_records(
                canonical.slice(start, STANDARDISE_SLICE_RECORDS),
                settings["default_country"],
                tuple(settings["phone_regions"]),
                keep_workers=True,
            )
            late = suppressed_person_records(conn, fresh)
            by_identity = identity_suppressed(conn, fresh, match_threshold) & ~late
            held_out.append(fresh.filter(by_identity).select("source", "source_record_id"))
            late = late | by_identity
            suppressed += int(late.sum() or 0)
            fresh = fresh.filter(~late)
            standardised += fresh.height
            staged.append(fresh)
    finally:
        close_pool()
    records = conn.execute(f"select count(*) from {staged.name}").fetchall()[0][0]
    return (
        suppressed,
        standardised,
        records + (reused if in_place else 0),
        pl.concat(held_out),
        in_place,
    )


def publish_person_records(staged: StagedTable, in_place: bool) -> None:
    """Tonight's person records in place of the stored ones (inside the run's transaction):
    the staged table swapped in, or, in place, the changed and gone records deleted and
    tonight's inserted (the kept records keep their order, as a copy would)."""
    if not in_place:
        staged.swap()
        return
    staged.conn.execute(
        "delete from identity.person_records "
        "where record_key not in (select record_key from _reused_keys)"
    )
    staged.conn.execute(f"insert into identity.person_records by name select * from {staged.name}")


def _canonical_spec(source: SourceSpec) -> SourceSpec:
    """The source as seen in canonical records: identity columns carry canonical names."""
    return replace(source, identity={f: f for f in source.identity})


def validity_rates(conn: duckdb.DuckDBPyConnection) -> pl.DataFrame:
    """Per source: of the values given, the share that standardised to a valid value (1.0 when
    none was given). Counted in DuckDB."""
    rates = ", ".join(
        f"coalesce(count(*) filter (where {raw} is not null and {valid} is not null) "
        f"/ nullif(count({raw}), 0), 1.0) as {name}_valid_rate"
        for name, raw, valid in (
            ("email", "email_raw", "email"),
            ("phone", "phone_raw", "phone_e164"),
            ("birth_date", "birth_date_raw", "birth_date"),
        )
    )
    return conn.sql(
        f"select source, {rates} from identity.person_records group by source order by source"
    ).pl()


def erase_held_out(
    conn: duckdb.DuckDBPyConnection,
    sources: dict[str, SourceSpec],
    held_out: pl.DataFrame,
    now: datetime,
) -> int:
    """What landed of records left out as an erased person (``write_person_records``) goes as
    an erasure takes it: from raw and staging (anonymised where the source says so), counted in
    the file ledger. Returns the records."""
    for (source,), rows in held_out.group_by("source"):
        erase_source_rows(conn, sources[source], rows["source_record_id"].to_list(), now)
    return held_out.height
