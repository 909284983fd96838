"""The demo's people: names weighted by real frequency, addresses, phones, households (shared
surname, address, often a phone or an inbox; twins) and emails. Drawn once; every channel copies them."""

from __future__ import annotations

import unicodedata
from datetime import datetime

import numpy as np
import polars as pl
from faker import Faker
from faker.providers.person.de_DE import Provider as GermanNames
from faker.providers.person.en_US import Provider as UsNames
from faker.providers.person.es_ES import Provider as SpanishNames
from faker.providers.person.fr_FR import Provider as FrenchNames

TODAY = datetime(2026, 11, 28, 23, 0, 0)
SUFFIX_ABBREVIATIONS = {
    "Street": "St",
    "Avenue": "Ave",
    "Road": "Rd",
    "Drive": "Dr",
    "Lane": "Ln",
    "Court": "Ct",
    "Boulevard": "Blvd",
    "Place": "Pl",
}


EMAIL_DOMAIN_WEIGHTS = np.array([0.36, 0.14, 0.12, 0.1, 0.08, 0.05, 0.04, 0.04, 0.04, 0.03])


EMAIL_DOMAINS = np.array(
    [
        "gmail.com",
        "yahoo.com",
        "outlook.com",
        "hotmail.com",
        "icloud.com",
        "aol.com",
        "proton.me",
        "comcast.net",
        "fastmail.com",
        "mail.com",
    ]
)


US_AREA_CODES = np.array(
    [
        201,
        202,
        206,
        212,
        213,
        214,
        303,
        305,
        312,
        404,
        415,
        503,
        512,
        602,
        615,
        617,
        702,
        713,
        801,
        919,
    ]
)


COUNTRIES = {  # share of people, phone prefix, national number maker
    "US": 0.82,
    "GB": 0.07,
    "DE": 0.06,
    "FR": 0.05,
}


def _name_pool(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """First names with real frequencies, gender, and surnames weighted by rank (Zipf-like)."""
    male, female = UsNames.first_names_male, UsNames.first_names_female
    firsts = list(male) + list(female)
    weights = np.array(list(male.values()) + list(female.values()))
    gender = np.array(["M"] * len(male) + ["F"] * len(female))
    foreign = list(GermanNames.first_names_male[:150]) + list(FrenchNames.first_names_female[:150])
    foreign += list(
        SpanishNames.first_names_male[:100]
        if isinstance(SpanishNames.first_names_male, tuple)
        else list(SpanishNames.first_names_male)[:100]
    )
    firsts += foreign
    weights = np.concatenate(
        [weights / weights.sum() * 0.88, np.full(len(foreign), 0.12 / len(foreign))]
    )
    gender = np.concatenate([gender, np.array(["M"] * 150 + ["F"] * 150 + ["M"] * 100)])
    lasts = (
        list(UsNames.last_names)
        + list(GermanNames.last_names[:200])
        + list(FrenchNames.last_names[:200])
    )
    ranks = np.arange(len(lasts))
    last_weights = 1.0 / (ranks + 8.0)
    last_weights /= last_weights.sum()
    return np.array(firsts), weights / weights.sum(), gender, (np.array(lasts), last_weights)


def draw_people(
    n: int, rng: np.random.Generator, seed: int, household_share: float = 0.12
) -> pl.DataFrame:
    firsts, first_w, genders, (lasts, last_w) = _name_pool(rng)
    first_idx = rng.choice(len(firsts), size=n, p=first_w)
    last = lasts[rng.choice(len(lasts), size=n, p=last_w)]
    birth = np.datetime64("1940-01-01") + rng.integers(0, 66 * 365, size=n).astype("timedelta64[D]")
    country = rng.choice(list(COUNTRIES), size=n, p=list(COUNTRIES.values()))
    streets, cities = _address_pools(seed, rng)
    house = rng.integers(1, 9999, size=n)
    street = np.char.add(
        np.char.add(house.astype(str), " "), streets[rng.integers(0, len(streets), n)]
    )
    city_idx = rng.integers(0, len(cities), n)
    frame = make_frame(
        {
            "person_id": np.arange(1, n + 1),
            "first_name": firsts[first_idx],
            "first_names_pool": first_idx,
            "gender": genders[first_idx],
            "last_name": last,
            "birth_date": birth,
            "country": country,
            "street": street,
            "city": cities[city_idx, 0],
            "state": cities[city_idx, 1],
            "postal_code": cities[city_idx, 2],
            "phone_national": _phones(country, rng),
        }
    )
    frame = _households(frame, rng, household_share)
    frame = frame.with_columns(email=_emails(frame, rng))
    # People who changed email (old one stays in the CRM) or moved house (old address in the CRM).
    changed = rng.random(n) < 0.08
    moved = rng.random(n) < 0.10
    old_street = np.char.add(
        np.char.add(rng.integers(1, 9999, n).astype(str), " "),
        streets[rng.integers(0, len(streets), n)],
    )
    old_city = rng.integers(0, len(cities), n)
    old_email = np.char.add(
        np.char.add(
            np.char.lower(np.array([_ascii(s)[:1] for s in frame["first_name"]])),
            np.char.lower(np.array([_ascii(s).replace(" ", "") for s in frame["last_name"]])),
        ),
        np.char.add(rng.integers(10, 99, n).astype(str), "@oldmail.net"),
    )
    old_email = np.char.add(
        np.char.add(frame["person_id"].cast(str).to_numpy().astype(str), "."), old_email
    )
    return frame.with_columns(
        old_email=strings(np.where(changed, old_email, None)),
        old_street=strings(np.where(moved, old_street, None)),
        old_city=strings(np.where(moved, cities[old_city, 0], None)),
        old_state=strings(np.where(moved, cities[old_city, 1], None)),
        old_postal_code=strings(np.where(moved, cities[old_city, 2], None)),
    )


def make_frame(columns: dict, schema_overrides: dict | None = None) -> pl.DataFrame:
    """Build a frame from numpy columns; object arrays (strings with None) go in as lists."""
    data = {
        k: v.tolist() if isinstance(v, np.ndarray) and v.dtype == object else v
        for k, v in columns.items()
    }
    return pl.DataFrame(data, schema_overrides=schema_overrides, strict=False)


def strings(values: np.ndarray) -> pl.Series:
    return pl.Series(values.tolist(), dtype=pl.String)


def _address_pools(seed: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    fake = Faker("en_US")
    fake.seed_instance(seed)
    suffixes = list(SUFFIX_ABBREVIATIONS)
    streets = np.array([f"{fake.last_name()} {suffixes[i % len(suffixes)]}" for i in range(1500)])
    cities = np.array([(fake.city(), fake.state_abbr(), fake.postcode()) for _ in range(600)])
    return streets, cities


def _phones(country: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """National significant numbers that `phonenumbers` accepts as valid for each country."""
    n = len(country)
    us = np.char.add(
        np.char.add(
            US_AREA_CODES[rng.integers(0, len(US_AREA_CODES), n)].astype(str),
            rng.integers(201, 989, n).astype(str),
        ),
        np.char.zfill(rng.integers(0, 10000, n).astype(str), 4),
    )
    gb = np.char.add("79", np.char.zfill(rng.integers(0, 10**8, n).astype(str), 8))
    de = np.char.add("151", np.char.zfill(rng.integers(0, 10**8, n).astype(str), 8))
    fr = np.char.add("6", np.char.zfill(rng.integers(0, 10**8, n).astype(str), 8))
    return np.select([country == "US", country == "GB", country == "DE"], [us, gb, de], fr)


def _households(frame: pl.DataFrame, rng: np.random.Generator, share: float) -> pl.DataFrame:
    """Make a share of people members of another person's household (the hard negatives)."""
    n = frame.height
    members = np.flatnonzero(rng.random(n) < share)
    heads = rng.integers(0, n, size=len(members))
    keep = ~np.isin(heads, members) & (heads != members)
    members, heads = members[keep], heads[keep]
    cols = {c: frame[c].to_numpy().copy() for c in frame.columns}
    household = cols["person_id"].copy()
    for col in ("last_name", "street", "city", "state", "postal_code", "country"):
        cols[col][members] = cols[col][heads]
    share_phone = rng.random(len(members)) < 0.6
    cols["phone_national"][members[share_phone]] = cols["phone_national"][heads[share_phone]]
    # A member who moved in keeps a number of their own, but one of the household's country.
    own = members[~share_phone]
    if len(own):
        cols["phone_national"][own] = _phones(cols["country"][own], rng)
    twins = rng.random(len(members)) < 0.2
    cols["birth_date"][members[twins]] = cols["birth_date"][heads[twins]]
    household[members] = household[heads]
    out = pl.DataFrame(cols).with_columns(household_id=pl.Series(household))
    shared_email = np.zeros(n, dtype=bool)
    shared_email[members[rng.random(len(members)) < 0.15]] = True
    head_of = np.arange(n)
    head_of[members] = heads
    return out.with_columns(shares_email_with=pl.Series(np.where(shared_email, head_of, -1)))


def _emails(frame: pl.DataFrame, rng: np.random.Generator) -> pl.Series:
    n = frame.height
    first = np.char.lower(np.array([_ascii(s).replace(" ", "") for s in frame["first_name"]]))
    last = np.char.lower(np.array([_ascii(s).replace(" ", "") for s in frame["last_name"]]))
    domain = EMAIL_DOMAINS[rng.choice(len(EMAIL_DOMAINS), size=n, p=EMAIL_DOMAIN_WEIGHTS)]
    style = rng.integers(0, 4, n)
    digits = rng.integers(1, 9999, n).astype(str)
    local = np.select(
        [style == 0, style == 1, style == 2],
        [
            np.char.add(np.char.add(first, "."), last),
            np.char.add(np.char.add(first, last), digits),
            np.char.add(np.char.add(np.char.array(first).astype("U1"), last), digits),
        ],
        np.char.add(np.char.add(np.char.add(first, "_"), last), digits),
    )
    email = pl.Series(np.char.add(np.char.add(local, "@"), domain))
    dup = email.is_duplicated().to_numpy()
    email = np.where(
        dup,
        np.char.add(
            np.char.add(local, frame["person_id"].cast(str).to_numpy().astype(str)),
            np.char.add("@", domain),
        ),
        email.to_numpy(),
    )
    share = frame["shares_email_with"].to_numpy()
    shared = share >= 0
    email[shared] = email[share[shared]]  # a family inbox shared by household members
    return pl.Series(email)


def _ascii(text: str) -> str:
    return unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
