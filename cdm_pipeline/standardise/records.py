"""Turn canonical identity columns from any source into standardised person records."""

from __future__ import annotations

import hashlib
import json
import unicodedata
from datetime import date
from functools import partial
from importlib import metadata

import duckdb
import polars as pl

from cdm_pipeline.registry import IDENTITY_FIELDS
from cdm_pipeline.standardise import fields
from cdm_pipeline.validate.parsing import parse_date

# every canonical identity field a source may map, and its identifiers as one ``kind:value``
CANONICAL_INPUT = (*IDENTITY_FIELDS, "identifier")


def display_name(text: str) -> str | None:
    """A name as a person would write it: NFKC, single spaces, title case if typed in one case."""
    cleaned = " ".join(unicodedata.normalize("NFKC", text).split())
    if not cleaned:
        return None
    return cleaned.title() if cleaned.isupper() or cleaned.islower() else cleaned


STANDARDISE_VERSION = 2  # bump when a change here alters standardised values
LIBRARIES = ("phonenumbers", "email-validator", "nicknames", "usaddress-scourgify", "pycountry")


def clean_inputs(frame: pl.DataFrame) -> pl.DataFrame:
    """Trim text inputs; empty text is missing; a field the frame lacks is missing everywhere.
    Kept as the ``*_raw`` originals."""
    frame = frame.with_columns(
        pl.lit(None, pl.String).alias(c) for c in CANONICAL_INPUT if c not in frame.columns
    )
    text_cols = [c for c in CANONICAL_INPUT if c != "birth_date"]
    return frame.with_columns(
        [
            pl.when(pl.col(c).cast(pl.String).str.strip_chars() == "")
            .then(None)
            .otherwise(pl.col(c).cast(pl.String).str.strip_chars())
            .alias(c)
            for c in text_cols
        ]
    )


def standardise_fingerprint(settings: dict) -> str:
    """Standardised values depend on these settings and library versions (phone metadata, the
    nickname list): when one changes, every record is standardised again."""
    described = {
        "version": STANDARDISE_VERSION,
        "settings": settings,
        "libraries": {name: metadata.version(name) for name in LIBRARIES},
    }
    return hashlib.sha256(json.dumps(described, sort_keys=True).encode()).hexdigest()


def unchanged_record_keys(
    conn: duckdb.DuckDBPyConnection, canonical: str, same_settings: bool = True
) -> None:
    """``_reused_keys``: the record keys of the canonical records in table ``canonical`` whose
    cleaned inputs (as ``clean_inputs`` cleans them) equal what the stored person record was
    made from; none when the settings changed. DuckDB trims only spaces where polars trims all
    whitespace: a value padded with a tab counts as changed, and is standardised again."""
    if not same_settings:
        conn.execute("create or replace temp table _reused_keys (record_key varchar)")
        return
    same = [
        "p.source = c.source",
        "cast(p.source_record_id as varchar) = cast(c.source_record_id as varchar)",
        "p.trust_rank is not distinct from c.trust_rank",
        "p.event_at is not distinct from c.event_at",
    ] + [
        f"p.{c}_raw is not distinct from "
        + (f"cast(c.{c} as varchar)" if c == "birth_date" else f"nullif(trim(c.{c}), '')")
        for c in CANONICAL_INPUT
    ]
    conn.execute(
        "create or replace temp table _reused_keys as select c.record_key "
        f"from {canonical} c join identity.person_records p using (record_key) "
        f"where {' and '.join(same)}"
    )


def standardise_records(
    frame: pl.DataFrame,
    default_country: str = "US",
    phone_regions: tuple[str, ...] = (),
    keep_workers: bool = False,
) -> pl.DataFrame:
    """Standardise a frame holding ``CANONICAL_INPUT`` columns (any may be null) plus keys.

    Originals are kept as ``<field>_raw``; match keys are ``*_key``/``*_norm``; validity flags are
    ``email_valid``/``phone_valid`` (false only where a value was given and is not valid). The
    worker processes stop afterwards, their memory not held through the rest of the night;
    unless ``keep_workers``: a caller with more slices to come stops them (``fields.close_pool``)
    after the last, rather than start them again for each.
    """
    try:
        return _standardise(frame, default_country, phone_regions)
    finally:
        if not keep_workers:
            fields.close_pool()


def _standardise(
    frame: pl.DataFrame, default_country: str, phone_regions: tuple[str, ...]
) -> pl.DataFrame:
    frame = clean_inputs(frame)
    # The record's own country; the deployment default only decides how to read its phone.
    country = fields.map_unique(frame["country"], fields.standardise_country, pl.String)
    region = country.fill_null(default_country)
    # Phones and streets cost the most: the workers parse them while this process does the rest.
    phone_started = fields.map_unique_started(
        frame["phone"],
        partial(fields.standardise_phone, fallback_regions=tuple(phone_regions)),
        pl.String,
        fields.phone_keys(frame["phone"], region),
    )
    street_started = fields.map_unique_started(
        frame["street"], fields.street_parts, pl.Struct({"street": pl.String, "unit": pl.String})
    )
    first, last = _names(frame)
    email = fields.map_unique(
        frame["email"],
        fields.standardise_email,
        pl.String,
        fields.email_keys(frame["email"]),
        spread=False,
    )
    email_norm = fields.map_unique(email, fields.email_match_key, pl.String, spread=False)
    first_key = fields.map_unique(first, fields.name_key, pl.String)
    last_key = fields.map_unique(last, fields.name_key, pl.String)
    out = frame.select(
        "record_key",
        "source",
        "source_record_id",
        "trust_rank",
        "event_at",
        *[pl.col(c).alias(f"{c}_raw") for c in CANONICAL_INPUT],
    ).with_columns(
        first_name=fields.map_unique(first, display_name, pl.String),
        last_name=fields.map_unique(last, display_name, pl.String),
        first_name_key=first_key,
        first_name_group=fields.map_unique(first_key, fields.first_name_group, pl.String),
        first_initial=first_key.str.slice(0, 1),
        last_name_key=last_key.str.replace_all(" ", ""),
        last_name_soundex=fields.map_unique(last_key, fields.soundex, pl.String),
        # Both names in alphabetical order: blocks "Sophie Snell" with "Snell Sophie".
        name_tokens=_name_tokens(first_key, last_key.str.replace_all(" ", "")),
        email=email,
        email_norm=email_norm,
        email_local=email_norm.str.split("@").list.first(),
        email_valid=frame["email"].is_null() | email.is_not_null(),
        phone_e164=pl.lit(None, pl.String),
        phone_valid=pl.lit(None, pl.Boolean),
        street_key=pl.lit(None, pl.String),
        unit=pl.lit(None, pl.String),
        city_key=fields.map_unique(frame["city"], fields.name_key, pl.String),
        state=frame["state"].str.to_uppercase(),
        postal_code=_postal_codes(frame["postal_code"], region),
        country=country,
        birth_date=_birth_dates(frame["birth_date"]),
        identifier_key=_identifier_keys(frame["identifier"]),
    )
    phone = phone_started()
    street_parts = street_started()
    return out.with_columns(
        phone_e164=phone,
        phone_valid=frame["phone"].is_null() | phone.is_not_null(),
        street_key=street_parts.struct.field("street"),
        unit=street_parts.struct.field("unit"),
    )


def _name_tokens(first: pl.Series, last: pl.Series) -> pl.Series:
    """The two name keys in alphabetical order, one space between (either alone if the other
    is missing).

    >>> _name_tokens(pl.Series(["sophie", None, "b"]), pl.Series(["snell", "lee", None])).to_list()
    ['snell sophie', 'lee', 'b']
    """
    return pl.select(
        pl.when(first.is_null() | last.is_null())
        .then(pl.coalesce(first, last))
        .when(first <= last)
        .then(pl.concat_str([first, last], separator=" "))
        .otherwise(pl.concat_str([last, first], separator=" "))
    ).to_series()


def _postal_codes(raw: pl.Series, region: pl.Series) -> pl.Series:
    """``fields.postal_key`` in columns: letters and digits upper-cased; a US code cut to its
    five-digit ZIP."""
    text = raw.str.to_uppercase().str.replace_all(r"[^\p{L}\p{N}]", "")
    zip5 = region.eq("US") & text.str.contains(r"^[0-9]{5}")
    return (
        pl.select(pl.when(zip5).then(text.str.slice(0, 5)).otherwise(text).replace("", None))
        .to_series()
        .alias("postal_code")
    )


def _identifier_keys(values: pl.Series) -> pl.Series:
    """``kind:VALUE`` with the value's letters and digits only, upper case (``123-45-678`` and
    ``12345678`` are one id); null when the value has none."""
    kind = values.str.extract(r"^([^:]*):", 1)
    value = (
        values.str.replace(r"^[^:]*:", "").str.to_uppercase().str.replace_all(r"[^\p{L}\p{N}]", "")
    )
    return (
        pl.select(pl.when(value.str.len_chars() > 0).then(kind + ":" + value))
        .to_series()
        .alias("identifier_key")
    )


def _names(frame: pl.DataFrame) -> tuple[pl.Series, pl.Series]:
    """First/last from their own columns, else split from the full name."""
    split = fields.map_unique(
        frame["full_name"],
        fields.split_name_parts,
        pl.Struct({"first": pl.String, "last": pl.String}),
    )
    first = frame["first_name"].fill_null(split.struct.field("first")).rename("first_name")
    last = frame["last_name"].fill_null(split.struct.field("last")).rename("last_name")
    return first, last


def _birth_dates(values: pl.Series) -> pl.Series:
    """ISO dates; text in any supported format is parsed; dates outside 1900..today become null."""
    if values.dtype != pl.Date:
        values = values.cast(pl.String).to_frame("b").select(parse_date("b"))["b"]
    plausible = pl.col("b").is_between(date(1900, 1, 1), date.today())
    return (
        values.to_frame("b").select(pl.when(plausible).then(pl.col("b")))["b"].rename("birth_date")
    )
