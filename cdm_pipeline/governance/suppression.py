"""The suppression list: salted hashes of erased people's emails and phone numbers.

Rows carrying a suppressed identifier are not landed again (ingest drops them and counts them),
so an old file or a new export cannot bring an erased person back.
"""

from __future__ import annotations

import duckdb
import polars as pl

from cdm_pipeline.governance.keys import email_forms, fingerprint, phone_forms, secret_key
from cdm_pipeline.registry import SourceSpec
from cdm_pipeline.standardise.fields import map_unique, standardise_phone
from cdm_pipeline.warehouse import ensure_schemas

DDL = """
create table if not exists governance.suppression_list (
    kind varchar not null,          -- email | phone | name
    fingerprint varchar not null,   -- sha256(secret key || normalised value)
    request_id varchar,
    added_at timestamp not null
)
"""


def ensure_suppression_list(conn: duckdb.DuckDBPyConnection) -> None:
    ensure_schemas(conn)
    conn.execute(DDL)


def suppressed(conn: duckdb.DuckDBPyConnection) -> dict[str, set[str]]:
    ensure_suppression_list(conn)
    out: dict[str, set[str]] = {"email": set(), "phone": set(), "name": set()}
    for kind, value in conn.execute(
        "select kind, fingerprint from governance.suppression_list"
    ).fetchall():
        out.setdefault(kind, set()).add(value)
    return out


def suppressed_rows(
    conn: duckdb.DuckDBPyConnection,
    frame: pl.DataFrame,
    source: SourceSpec,
    phone_regions: tuple[str, ...],
) -> pl.Series:
    """True for rows whose email or phone (in any form) is on the suppression list."""
    hashes = suppressed(conn)
    flags = pl.Series([False] * frame.height, dtype=pl.Boolean)
    if not (hashes["email"] or hashes["phone"]) or frame.height == 0:
        return flags
    key = secret_key(conn)
    email_column = source.identity.get("email")
    if email_column and hashes["email"]:
        hit = map_unique(
            frame[email_column],
            lambda v: any(fingerprint(key, f) in hashes["email"] for f in email_forms(v)),
            pl.Boolean,
        ).fill_null(False)
        flags = flags | hit
    phone_column = source.identity.get("phone")
    if phone_column and hashes["phone"]:
        hit = map_unique(
            frame[phone_column],
            lambda v: any(
                fingerprint(key, f) in hashes["phone"]
                for f in phone_forms(v, standardise_phone(f"{v}|{phone_regions[0]}", phone_regions))
            ),
            pl.Boolean,
        ).fill_null(False)
        flags = flags | hit
    return flags


def suppressed_person_records(conn: duckdb.DuckDBPyConnection, records: pl.DataFrame) -> pl.Series:
    """True for standardised person records carrying a suppressed email or phone in any form,
    the phone as standardised from the record's own country (a UK number typed '07911 123456'
    reads as +447911123456 only when the record says UK)."""
    hashes = suppressed(conn)
    flags = pl.repeat(False, records.height, dtype=pl.Boolean, eager=True)
    if not (hashes["email"] or hashes["phone"]) or records.height == 0:
        return flags
    key = secret_key(conn)
    for column, kind, forms in (
        ("email_raw", "email", email_forms),
        ("phone_e164", "phone", lambda v: phone_forms(None, v)),
        ("phone_raw", "phone", phone_forms),
    ):
        if hashes[kind]:
            hit = map_unique(
                records[column],
                lambda v, forms=forms, kind=kind: any(
                    fingerprint(key, f) in hashes[kind] for f in forms(v)
                ),
                pl.Boolean,
            ).fill_null(False)
            flags = flags | hit
    return flags
