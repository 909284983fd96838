"""The suppression list: salted hashes of erased people's emails, phones, names and record keys.

Rows that would bring an erased person back are not landed again (ingest drops them and counts
them; standardising checks again with the record's own country), so an old file or a new export
cannot bring them back, while their household's records still land (``person_suppressed``).
"""

from __future__ import annotations

import duckdb
import polars as pl

from cdm_pipeline.governance.keys import (
    email_forms,
    fingerprint,
    name_form,
    phone_forms,
    secret_key,
)
from cdm_pipeline.registry import SourceSpec
from cdm_pipeline.standardise.fields import map_unique, split_name_parts, standardise_phone
from cdm_pipeline.warehouse import ensure_schemas

DDL = """
create table if not exists governance.suppression_list (
    kind varchar not null,          -- email | phone | household_email | household_phone | name | record
    fingerprint varchar not null,   -- sha256(secret key || normalised value)
    request_id varchar,
    added_at timestamp not null
)
"""


def ensure_suppression_list(conn: duckdb.DuckDBPyConnection) -> None:
    ensure_schemas(conn)
    conn.execute(DDL)


def fingerprint_counts(conn: duckdb.DuckDBPyConnection) -> tuple[int, int]:
    """(fingerprints, those that are not 64 hex digits): a plain value would be the second."""
    ensure_suppression_list(conn)
    ((fingerprints, malformed),) = conn.execute(
        "select count(*), count(*) filter (where not regexp_full_match(fingerprint, "
        "'[0-9a-f]{64}')) from governance.suppression_list"
    ).fetchall()
    return fingerprints, malformed


def suppressed(conn: duckdb.DuckDBPyConnection) -> dict[str, set[str]]:
    ensure_suppression_list(conn)
    out: dict[str, set[str]] = {kind: set() for kind in KINDS}
    for kind, value in conn.execute(
        "select kind, fingerprint from governance.suppression_list"
    ).fetchall():
        out.setdefault(kind, set()).add(value)
    return out


KINDS = ("email", "phone", "household_email", "household_phone", "name", "record")


def suppressed_rows(
    conn: duckdb.DuckDBPyConnection,
    frame: pl.DataFrame,
    source: SourceSpec,
    phone_regions: tuple[str, ...],
) -> pl.Series:
    """True for rows that would bring an erased person back (``person_suppressed``). The frame
    holds the source's own columns (or canonical ones, with ``record_key``)."""
    hashes = suppressed(conn)
    if frame.height == 0 or not any(hashes.values()):
        return pl.repeat(False, frame.height, dtype=pl.Boolean, eager=True)
    key = secret_key(conn)
    first, last = _names(frame, source)
    if "record_key" in frame.columns:
        record_key = frame["record_key"]
    else:
        record_key = (source.name + ":" + frame[source.record_id].cast(pl.String)).alias("k")
    email = _column(frame, source.identity.get("email"))
    phone = _column(frame, source.identity.get("phone"))
    return person_suppressed(
        key,
        hashes,
        emails=email,
        phones=(phone + "|" + phone_regions[0]).alias("phone"),  # read as its first region
        phone_forms_of=lambda v: phone_forms(
            v.rsplit("|", 1)[0], standardise_phone(v, phone_regions)
        ),
        first=first,
        last=last,
        record_keys=record_key,
    )


def suppressed_person_records(conn: duckdb.DuckDBPyConnection, records: pl.DataFrame) -> pl.Series:
    """``person_suppressed`` for standardised person records, the phone as standardised from the
    record's own country (a UK number typed '07911 123456' reads as +447911123456 only when the
    record says UK)."""
    hashes = suppressed(conn)
    if records.height == 0 or not any(hashes.values()):
        return pl.repeat(False, records.height, dtype=pl.Boolean, eager=True)
    key = secret_key(conn)
    phones = pl.concat_str(
        [records["phone_raw"].fill_null(""), records["phone_e164"].fill_null("")], separator="|"
    )
    phones = pl.select(
        pl.when(records["phone_raw"].is_null() & records["phone_e164"].is_null())
        .then(None)
        .otherwise(phones)
    ).to_series()
    return person_suppressed(
        key,
        hashes,
        emails=records["email_raw"],
        phones=phones,
        phone_forms_of=lambda v: phone_forms(*(part or None for part in v.split("|", 1))),
        first=records["first_name"],
        last=records["last_name"],
        record_keys=records["record_key"],
    )


def person_suppressed(
    key: str,
    hashes: dict[str, set[str]],
    emails: pl.Series,
    phones: pl.Series,
    phone_forms_of,
    first: pl.Series,
    last: pl.Series,
    record_keys: pl.Series,
) -> pl.Series:
    """Would this row bring an erased person back? Yes when it carries an email or phone only
    the erased person held; or a value they shared with their household, or the record id of
    one of their records, *and* their name (or no name, but an email or phone). So a re-landed copy, a changed
    email under the same contact id, or a new record with their own phone stay out, while
    another member's record with the family phone, or a new person reusing a record id, lands."""

    def fingerprints(values: pl.Series, kinds: tuple[str, ...], forms) -> pl.Series | None:
        """Each distinct value's forms hashed once, for every kind that looks at them (an email
        is checked as the erased person's own and as a household's: one hashing)."""
        if not any(hashes.get(kind) for kind in kinds):
            return None
        return map_unique(
            values, lambda v: [fingerprint(key, f) for f in forms(v)], pl.List(pl.String)
        )

    def hit(prints: pl.Series | None, kind: str) -> pl.Series:
        if prints is None or not hashes.get(kind):
            return pl.repeat(False, emails.len(), dtype=pl.Boolean, eager=True)
        return (
            prints.list.eval(pl.element().is_in(sorted(hashes[kind]))).list.any().fill_null(False)
        )

    email_prints = fingerprints(emails, ("email", "household_email"), email_forms)
    phone_prints = fingerprints(phones, ("phone", "household_phone"), phone_forms_of)
    own = hit(email_prints, "email") | hit(phone_prints, "phone")
    shared = (
        hit(email_prints, "household_email")
        | hit(phone_prints, "household_phone")
        | hit(fingerprints(record_keys, ("record",), lambda v: {v}), "record")
    )
    names = pl.DataFrame({"f": first, "l": last}).select(
        pl.when(pl.col("f").is_not_null() & pl.col("l").is_not_null()).then(
            pl.concat_str(["f", "l"], separator="\u0000")
        )
    )["f"]
    named = names.is_not_null()
    same_name = hit(
        fingerprints(names, ("name",), lambda v: {name_form(*v.split("\u0000", 1))} - {None}),
        "name",
    )
    # A row with no name, email or phone (an order anonymised at erasure) carries no one back.
    contact = emails.is_not_null() | phones.is_not_null()
    return own | (shared & (same_name | (~named & contact)))


def _column(frame: pl.DataFrame, column: str | tuple[str, ...] | None) -> pl.Series:
    """A mapped column as text (several joined by a space), or all null."""
    if column is None:
        return pl.repeat(None, frame.height, dtype=pl.String, eager=True)
    if isinstance(column, str):
        return frame[column].cast(pl.String)
    return frame.select(
        pl.concat_str([pl.col(c).cast(pl.String) for c in column], separator=" ", ignore_nulls=True)
    ).to_series()


def _names(frame: pl.DataFrame, source: SourceSpec) -> tuple[pl.Series, pl.Series]:
    """First and last name as given, else split from the full name."""
    first = _column(frame, source.identity.get("first_name"))
    last = _column(frame, source.identity.get("last_name"))
    full = _column(frame, source.identity.get("full_name"))
    if full.null_count() < full.len():
        split = map_unique(
            full,
            split_name_parts,
            pl.Struct({"first": pl.String, "last": pl.String}),
        )
        first = first.fill_null(split.struct.field("first"))
        last = last.fill_null(split.struct.field("last"))
    return first, last
