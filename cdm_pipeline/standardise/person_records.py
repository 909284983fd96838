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
from cdm_pipeline.standardise.load import canonical_records
from cdm_pipeline.standardise.records import (
    CANONICAL_INPUT,
    clean_inputs,
    standardise_records,
    unchanged_record_keys,
)
from cdm_pipeline.warehouse import StagedTable, replace_table, table_exists

# Records are standardised in slices of this many (bounded memory at any size) into a table of
# their own, renamed to identity.person_records in one transaction (written once, not copied).
STANDARDISE_SLICE_RECORDS = 1_000_000
VALIDITY_INPUTS = (
    "select source, email_raw, email, phone_raw, phone_e164, birth_date_raw, birth_date "
    "from identity.person_records"
)


def tonights_inputs(
    conn: duckdb.DuckDBPyConnection,
    sources: list[SourceSpec],
    fingerprint: str,
    regions: tuple[str, ...],
) -> tuple[pl.DataFrame, pl.DataFrame, int]:
    """(canonical records to standardise tonight, ``record_key`` of stored records kept as they
    are, records left out because their person was erased). A record whose inputs did not change
    since it was standardised under the same settings is kept (it passed the suppression check
    then; erasure removes it since)."""
    canonical = clean_inputs(canonical_records(conn, {s.name: s for s in sources}))
    reused = unchanged_record_keys(canonical, stored_inputs(conn, fingerprint))
    canonical = canonical.join(reused, on="record_key", how="anti")
    blocked = pl.Series([False] * canonical.height, dtype=pl.Boolean)
    for source in sources:
        mask = (canonical["source"] == source.name).to_numpy()
        if mask.any():
            hits = suppressed_rows(
                conn, canonical.filter(pl.Series(mask)), _canonical_spec(source), regions
            )
            blocked = blocked.scatter(mask.nonzero()[0], hits)
    return canonical.filter(~blocked), reused, int(blocked.sum() or 0)


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
    reused: pl.DataFrame,
    settings: dict,
    suppressed: int,
    match_threshold: float,
) -> tuple[int, int, int, pl.DataFrame]:
    """Stage the reused records and tonight's, standardised slice by slice (memory stays
    bounded); returns (suppressed, standardised, records) counts and the ``source,
    source_record_id`` of new records left out as an erased person by identity
    (``identity_suppressed``): the caller removes what landed of them."""
    conn = staged.conn
    if reused.height > 0:
        conn.register("_reused", reused.to_arrow())
        staged.create_as(
            "select * from identity.person_records "
            "where record_key in (select record_key from _reused)"
        )
        conn.unregister("_reused")
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
    return suppressed, standardised, records, pl.concat(held_out)


def stored_inputs(conn: duckdb.DuckDBPyConnection, fingerprint: str) -> pl.DataFrame:
    """What last run's person records were made from, if made under the same settings."""
    columns = ["record_key", "source", "source_record_id", "trust_rank", "event_at"] + [
        f"{c}_raw" for c in CANONICAL_INPUT
    ]
    if table_exists(conn, "identity", "standardise_settings") and table_exists(
        conn, "identity", "person_records"
    ):
        rows = conn.execute("select fingerprint from identity.standardise_settings").fetchall()
        if rows == [(fingerprint,)]:
            return conn.sql(f"select {', '.join(columns)} from identity.person_records").pl()
    return pl.DataFrame(
        schema={"record_key": pl.String, "source": pl.String, "source_record_id": pl.String}
        | {"trust_rank": pl.Int32, "event_at": pl.Datetime("us")}
        | {f"{c}_raw": pl.String for c in CANONICAL_INPUT}
    )


def _canonical_spec(source: SourceSpec) -> SourceSpec:
    """The source as seen in canonical records: identity columns carry canonical names."""
    return replace(source, identity={f: f for f in source.identity})


def validity_rates(conn: duckdb.DuckDBPyConnection) -> pl.DataFrame:
    """Per source: of the values given, the share that standardised to a valid value."""
    return (
        conn.sql(VALIDITY_INPUTS)
        .pl()
        .group_by("source")
        .agg(
            email_valid_rate=_rate(
                pl.col("email_raw").is_not_null(), pl.col("email").is_not_null()
            ),
            phone_valid_rate=_rate(
                pl.col("phone_raw").is_not_null(), pl.col("phone_e164").is_not_null()
            ),
            birth_date_valid_rate=_rate(
                pl.col("birth_date_raw").is_not_null(), pl.col("birth_date").is_not_null()
            ),
        )
        .sort("source")
    )


def _rate(given: pl.Expr, valid: pl.Expr) -> pl.Expr:
    n = given.sum()
    return pl.when(n > 0).then((given & valid).sum() / n).otherwise(1.0)


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
