"""Collapse records with identical standardised identity into one profile.

A person's ten orders usually carry the same name, email, phone and address: they are one profile
for matching, so the resolver compares profiles, not rows.
"""

from __future__ import annotations

import polars as pl

MATCH_FIELDS = (
    "first_name_key",
    "last_name_key",
    "email_norm",
    "phone_e164",
    "street_key",
    "postal_code",
    "city_key",
    "birth_date",
)
DERIVED_KEYS = ("first_name_group", "first_initial", "last_name_soundex", "email_local")


def build_profiles(records: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Return (profiles with ``profile_id`` and ``record_count``, record_key -> profile_id).

    Profile ids follow the sorted signature, so they are deterministic for the same records.
    """
    signature = list(MATCH_FIELDS)
    profiles = (
        records.group_by(signature)
        .agg(
            *[pl.col(c).first() for c in DERIVED_KEYS],
            pl.len().alias("record_count"),
            pl.col("record_key").min().alias("first_record_key"),
        )
        .sort("first_record_key")
        .with_row_index("profile_id")
        .with_columns(pl.col("profile_id").cast(pl.Int64))
    )
    membership = (
        records.select("record_key", *signature)
        .join(profiles.select("profile_id", *signature), on=signature, how="left", nulls_equal=True)
        .select("record_key", "profile_id")
    )
    return profiles, membership
