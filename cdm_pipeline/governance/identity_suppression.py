"""Suppression by identity: an erased person re-landed under a new record id, a new email and a
new phone, but with her name, birth date and address, stays out.

Erasure keeps, for each erased record, two salted hashes of identity combinations: name with
birth date, and name with street and postcode (``identity_forms``); never a field alone (a
birth date or a surname alone is guessed from its hash in seconds). A new record whose name
with birth date or with address hashes to one of them is compared with the erased person as the
resolver would: the combinations it shares are agreements, what else it carries (another birth
date, another address, an email or phone no erased person held) are disagreements, and it stays
out when the resolver's model (``identity.resolver_model``) gives one person at its match
threshold. A record of her name born on another day is never held (a namesake: suppression
must touch no one else). A household member with the shared phone has another first name:
nothing matches.
"""

from __future__ import annotations

import math

import duckdb
import polars as pl

from cdm_pipeline.governance.keys import email_forms, fingerprint, phone_forms, secret_key
from cdm_pipeline.governance.suppression import suppressed
from cdm_pipeline.resolve.comparisons import default_comparisons, model_comparisons
from cdm_pipeline.resolve.scoring import ModelParameters
from cdm_pipeline.standardise.fields import map_unique
from cdm_pipeline.warehouse import table_exists

IDENTITY_KINDS = ("name_birth", "name_location")


def identity_forms(record: dict) -> list[tuple[str, str]]:
    """(kind, form) of a standardised person record's identity combinations."""
    first, last = record.get("first_name_key"), record.get("last_name_key")
    if not first or not last:
        return []
    forms = []
    if record.get("birth_date"):
        forms.append(("name_birth", f"{first}|{last}|{record['birth_date']}"))
    if record.get("street_key") and record.get("postal_code"):
        forms.append(
            ("name_location", f"{first}|{last}|{record['street_key']}|{record['postal_code']}")
        )
    return forms


def identity_suppressed(
    conn: duckdb.DuckDBPyConnection, records: pl.DataFrame, match_threshold: float
) -> pl.Series:
    """True for standardised person records the model judges an erased person (see module)."""
    hashes = suppressed(conn)
    none = pl.repeat(False, records.height, dtype=pl.Boolean, eager=True)
    model = _stored_model(conn)
    if records.height == 0 or model is None or not any(hashes.get(k) for k in IDENTITY_KINDS):
        return none
    key = secret_key(conn)
    comparisons = {c.name: c for c in model_comparisons(default_comparisons())}
    prior = model.prior
    needed = math.log2(match_threshold / (1 - match_threshold)) - math.log2(prior / (1 - prior))
    # Each distinct combination is hashed once, in bulk; only records that hit one are weighed.
    first, last = pl.col("first_name_key"), pl.col("last_name_key")
    forms = records.select(
        name_birth=pl.concat_str(
            [first, last, pl.col("birth_date").cast(pl.String)], separator="|"
        ),
        name_location=pl.concat_str(
            [first, last, pl.col("street_key"), pl.col("postal_code")], separator="|"
        ),
    )
    hit_any = pl.repeat(False, records.height, dtype=pl.Boolean, eager=True)
    for kind in IDENTITY_KINDS:
        wanted = hashes.get(kind, set())
        if wanted:
            hit = map_unique(
                forms[kind], lambda v, w=wanted: fingerprint(key, v) in w, pl.Boolean, spread=False
            )
            hit_any = hit_any | hit.fill_null(False)
    out = pl.repeat(False, records.height, dtype=pl.Boolean, eager=True).to_list()
    for row in hit_any.arg_true().to_list():
        record = records.row(row, named=True)
        hits = {
            kind: fingerprint(key, form) in hashes.get(kind, set())
            for kind, form in identity_forms(record)
        }
        if hits.get("name_birth") is False:
            # Her name at her address, born another day: a namesake (a daughter named after
            # her), never taken for her, whatever a model trained on little data says.
            continue
        levels = {"first_name_key": "exact", "last_name_key": "exact"}
        if "name_birth" in hits:
            levels["birth_date"] = "exact"
        if "name_location" in hits:  # the name matched by birth date: another address differs
            levels["location"] = "exact" if hits["name_location"] else "different"
        for field, kinds, forms_of in (
            ("email_norm", ("email", "household_email"), email_forms),
            ("phone_e164", ("phone", "household_phone"), lambda v: phone_forms(None, v)),
        ):
            if record.get(field):
                held = any(
                    fingerprint(key, f) in hashes.get(k, set())
                    for k in kinds
                    for f in forms_of(record[field])
                )
                levels[field] = "exact" if held else "different"
        bits = sum(
            model.weight(name, comparisons[name].exact_level if level == "exact" else 0)
            for name, level in levels.items()
            if name in comparisons
        )
        out[row] = bits >= needed
    return pl.Series(out, dtype=pl.Boolean)


def _stored_model(conn: duckdb.DuckDBPyConnection) -> ModelParameters | None:
    if not table_exists(conn, "identity", "resolver_model"):
        return None
    rows = conn.execute("select model_json from identity.resolver_model limit 1").fetchall()
    if not rows:
        return None
    empty = pl.DataFrame(schema={"comparison": pl.String, "value": pl.String, "share": pl.Float64})
    return ModelParameters.from_stored(rows[0][0], empty)
