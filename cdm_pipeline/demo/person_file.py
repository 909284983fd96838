"""One partner-style CSV of person records with duplicates, in the generator's other profiles.

The demo (``generator.generate``) is seven channels of one company with households, twins and
shared inboxes. Accuracy measured only there would say little about other data, so the same
people can also be written as one flat export, the shape a partner or a public benchmark set has:

- ``clean``: no households; every record carries email and phone (typos, nicknames, swapped
  names, reformatted phones, changed emails, moved house, birth-date slips, blanks).
- ``classic``: the same records without email and phone: names, address and birth date only.
- ``households``: as ``clean``, but 12% of people live in another person's household (shared
  surname, address, often phone, sometimes birth date and inbox).
- ``two_source``: the same people in two files that carry different fields, as a CRM and a shop
  do: ``crm_contacts`` (names, phone, street, town, postcode, birth date; no email) and
  ``shop_customers`` (one full-name column, email, phone, postcode; no street, no birth date).

``noise`` scales every rate of mess (blanks, typos, nicknames) and adds first names cut to an
initial or replaced outright: the accuracy benchmark reports profiles at noise rates and seeds
the resolver was not tuned on.

Columns use names of their own (``given``, ``family``, ``dob``, ...), not the canonical ones, so a
sources file has to map them as a user's would. The truth (``record_id, person_id``) is written
beside the landing folder, never inside it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from cdm_pipeline.demo.noise import (
    blank,
    country_spelling,
    formatted_phone,
    full_names,
    messy_birth,
    messy_email,
    messy_names,
    messy_street,
    timestamps,
    typo,
)
from cdm_pipeline.demo.people import draw_people

PROFILES = ("clean", "classic", "households", "two_source")
SOURCE = "partner_people"
TWO_SOURCES = ("crm_contacts", "shop_customers")


def generate_person_file(
    records: int,
    profile: str,
    out: Path,
    seed: int = 11,
    duplicate_share: float = 0.5,
    noise: float = 1.0,
) -> tuple[Path, Path]:
    """Write ``out/landing/<source>/*.csv`` with about ``records`` rows and ``out/truth.csv``;
    return the landing folder and the truth. Half of the people have 1-3 more records."""
    if profile not in PROFILES:
        raise ValueError(f"profile must be one of {PROFILES}")
    rng = np.random.default_rng(seed)
    people = max(int(records / (1 + duplicate_share * 1.8)), 2)
    persons = draw_people(
        people, rng, seed, household_share=0.12 if profile == "households" else 0.0
    )
    extra = np.where(rng.random(people) < duplicate_share, rng.integers(1, 4, people), 0)
    rows = persons[np.repeat(np.arange(people), 1 + extra)]
    # The first record of a person is the one we know best; later ones carry the mess.
    first_of_person = np.r_[
        True, rows["person_id"].to_numpy()[1:] != rows["person_id"].to_numpy()[:-1]
    ]
    frame = _records(rows, rng, first_of_person, noise)
    if profile == "classic":
        frame = frame.drop("email", "mobile")
    order = rng.permutation(frame.height)
    frame = frame[order]
    ids = rows["person_id"].to_numpy()[order]
    files = {SOURCE: frame}
    if profile == "two_source":
        shop = rng.random(frame.height) < 0.5
        files = {
            "crm_contacts": frame.filter(~shop).drop("email"),
            "shop_customers": frame.filter(shop).select(
                "ref",
                full_name=pl.Series(
                    full_names(frame["given"].to_numpy(), frame["family"].to_numpy(), rng)
                ).filter(shop),
                email="email",
                mobile="mobile",
                zip="zip",
                country="country",
                captured_at="captured_at",
            ),
        }
        sources = np.where(shop, "shop_customers", "crm_contacts")
    else:
        sources = np.full(frame.height, SOURCE)
    for source, rows_of_source in files.items():
        landing = out / "landing" / source
        landing.mkdir(parents=True, exist_ok=True)
        rows_of_source.write_csv(landing / f"{source}.csv")
    truth = out / "truth.csv"
    pl.DataFrame({"source": sources, "source_record_id": frame["ref"], "entity_id": ids}).write_csv(
        truth
    )
    return out / "landing", truth


def _records(
    p: pl.DataFrame, rng: np.random.Generator, pristine: np.ndarray, noise: float = 1.0
) -> pl.DataFrame:
    n = p.height
    first, last = messy_names(p, rng)
    if noise > 1:  # more typos, first names cut to an initial or replaced by another name
        first = typo(first, 0.04 * (noise - 1), rng)
        last = typo(last, 0.04 * (noise - 1), rng)
        cut = rng.random(n) < 0.03 * (noise - 1)
        first = np.where(cut, np.array([f[:1] if isinstance(f, str) else f for f in first]), first)
        replaced = rng.random(n) < 0.03 * (noise - 1)
        first = np.where(replaced, p["first_name"].to_numpy()[rng.permutation(n)], first)
    first = np.where(pristine, p["first_name"].to_numpy(), first)
    last = np.where(pristine, p["last_name"].to_numpy(), last)
    moved = p["old_street"].is_not_null().to_numpy() & ~pristine & (rng.random(n) < 0.5)
    changed = p["old_email"].is_not_null().to_numpy() & ~pristine & (rng.random(n) < 0.5)
    pick = lambda col: np.where(moved, p[f"old_{col}"].to_numpy(), p[col].to_numpy())  # noqa: E731
    email = np.where(changed, p["old_email"].to_numpy(), p["email"].to_numpy())
    birth = p["birth_date"].to_numpy().astype("datetime64[D]")

    def blanked(values: np.ndarray, rate: float) -> np.ndarray:
        return blank(values, np.where(pristine, 0.0, min(rate * noise, 0.9)), rng)

    return pl.DataFrame(
        {
            "ref": [f"P{i:08d}" for i in range(1, n + 1)],
            "given": blanked(first, 0.03),
            "family": blanked(last, 0.01),
            "email": blanked(messy_email(email, rng), 0.05),
            "mobile": blanked(
                formatted_phone(p["phone_national"].to_numpy(), p["country"].to_numpy(), rng),
                0.08,
            ),
            "address": blanked(messy_street(pick("street"), rng), 0.05),
            "town": blanked(typo(pick("city"), 0.02 * noise, rng), 0.03),
            "region": pick("state"),
            "zip": blanked(pick("postal_code"), 0.04),
            "country": country_spelling(p["country"].to_numpy(), rng),
            "dob": blanked(messy_birth(birth, rng), 0.10),
            "captured_at": timestamps(n, rng, 1500).astype(str),
        },
        schema_overrides={
            c: pl.String
            for c in ("given", "family", "email", "mobile", "address", "town", "zip", "dob")
        },
        strict=False,
    )


SOURCES_YAML = """\
# A partner's person export ({profile} profile), declared by configuration alone.
sources:
  partner_people:
    path: partner_people/*.csv
    format: csv
    record_id: ref
    event_at: captured_at
    role: person
    identity:
      first_name: given
      last_name: family
{contacts}      street: address
      city: town
      state: region
      postal_code: zip
      country: country
      birth_date: dob
    columns:
      ref: {{type: id}}
      given: {{type: string}}
      family: {{type: string}}
{contact_columns}      address: {{type: string}}
      town: {{type: string}}
      region: {{type: string}}
      zip: {{type: string}}
      country: {{type: string}}
      dob: {{type: string}}
      captured_at: {{type: timestamp}}
"""


TWO_SOURCES_YAML = """\
# A CRM export without email and a shop's customer file with one name column, no street and no
# birth date: the same people, linked on what the two files share.
sources:
  crm_contacts:
    path: crm_contacts/*.csv
    format: csv
    record_id: ref
    event_at: captured_at
    role: person
    identity:
      first_name: given
      last_name: family
      phone: mobile
      street: address
      city: town
      state: region
      postal_code: zip
      country: country
      birth_date: dob
    columns:
      ref: {type: id}
      given: {type: string}
      family: {type: string}
      mobile: {type: string}
      address: {type: string}
      town: {type: string}
      region: {type: string}
      zip: {type: string}
      country: {type: string}
      dob: {type: string}
      captured_at: {type: timestamp}
  shop_customers:
    path: shop_customers/*.csv
    format: csv
    record_id: ref
    event_at: captured_at
    role: person
    identity:
      full_name: full_name
      email: email
      phone: mobile
      postal_code: zip
      country: country
    columns:
      ref: {type: id}
      full_name: {type: string}
      email: {type: string}
      mobile: {type: string}
      zip: {type: string}
      country: {type: string}
      captured_at: {type: timestamp}
"""


def sources_yaml(profile: str) -> str:
    """The sources file a user would write for this profile's export."""
    if profile == "two_source":
        return TWO_SOURCES_YAML
    contacts = profile != "classic"
    return SOURCES_YAML.format(
        profile=profile,
        contacts="      email: email\n      phone: mobile\n" if contacts else "",
        contact_columns="      email: {type: string}\n      mobile: {type: string}\n"
        if contacts
        else "",
    )
