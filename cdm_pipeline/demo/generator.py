"""Generate realistic, messy, seeded demo landing files for the seven channels, with ground truth.

People are drawn once (names weighted by real US frequency, some German/French/Spanish names with
accents) and then appear across channels with the mess real exports have: typos, nicknames, swapped
names, missing fields, many phone formats, email case/dots/plus-tags, people who moved or changed
email. Hard negatives are planted on purpose: household members who share a surname and address
and often a phone or an email, twins who also share a birth date, and common names.

Columns are built with numpy over whole arrays; per-value Python runs only on the small share of
cells that get a typo or a defect. The truth (``truth/records.parquet``: which person each landed
row belongs to, which rows are planted bad) is written apart from the landing files and is read only
by tests and benchmarks.
"""

from __future__ import annotations

import json
import unicodedata
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl
from faker import Faker
from faker.providers.person.de_DE import Provider as GermanNames
from faker.providers.person.en_US import Provider as UsNames
from faker.providers.person.es_ES import Provider as SpanishNames
from faker.providers.person.fr_FR import Provider as FrenchNames

TODAY = datetime(2026, 11, 28, 23, 0, 0)

# A handful of nickname pairs the generator uses; the resolver uses the maintained `nicknames`
# package instead, which knows far more than this.
NICKNAMES = {
    "Robert": ["Bob", "Rob", "Bobby"],
    "William": ["Bill", "Will", "Billy"],
    "Richard": ["Rick", "Dick", "Rich"],
    "James": ["Jim", "Jimmy"],
    "John": ["Jack", "Johnny"],
    "Michael": ["Mike", "Mikey"],
    "Elizabeth": ["Liz", "Beth", "Betty"],
    "Margaret": ["Peggy", "Maggie"],
    "Katherine": ["Kate", "Kathy"],
    "Jennifer": ["Jen", "Jenny"],
    "Thomas": ["Tom", "Tommy"],
    "Christopher": ["Chris"],
    "Daniel": ["Dan", "Danny"],
    "Joseph": ["Joe", "Joey"],
    "Anthony": ["Tony"],
    "Patricia": ["Pat", "Patty", "Trish"],
    "Susan": ["Sue", "Susie"],
    "Deborah": ["Debbie", "Deb"],
    "Edward": ["Ed", "Eddie", "Ted"],
    "Charles": ["Charlie", "Chuck"],
    "Matthew": ["Matt"],
    "Nicholas": ["Nick"],
    "Alexander": ["Alex"],
    "Benjamin": ["Ben"],
    "Samuel": ["Sam"],
    "Jonathan": ["Jon"],
    "Kimberly": ["Kim"],
    "Rebecca": ["Becky"],
    "Jessica": ["Jess"],
    "Steven": ["Steve"],
    "Timothy": ["Tim"],
    "Andrew": ["Andy", "Drew"],
    "Joshua": ["Josh"],
    "Gregory": ["Greg"],
    "Donald": ["Don"],
    "Ronald": ["Ron"],
    "Kenneth": ["Ken"],
    "Douglas": ["Doug"],
    "Victoria": ["Vicky"],
    "Christina": ["Tina"],
}
COUNTRIES = {  # share of people, phone prefix, national number maker
    "US": 0.82,
    "GB": 0.07,
    "DE": 0.06,
    "FR": 0.05,
}
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
EMAIL_DOMAIN_WEIGHTS = np.array([0.36, 0.14, 0.12, 0.1, 0.08, 0.05, 0.04, 0.04, 0.04, 0.03])
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
SOURCES = (
    "crm_contacts",
    "web_signups",
    "orders",
    "support_interactions",
    "consent_events",
    "surveys",
    "privacy_requests",
)


@dataclass(frozen=True)
class DemoPaths:
    landing: Path
    truth: Path


def generate(
    people: int = 3000, seed: int = 7, out: Path = Path("data"), days: int = 2
) -> DemoPaths:
    """Write the demo landing files under ``out/landing`` and the truth under ``out/demo/truth``."""
    rng = np.random.default_rng(seed)
    persons = _people(people, rng, seed)
    landing, truth_dir = out / "landing", out / "demo" / "truth"
    truth_dir.mkdir(parents=True, exist_ok=True)
    builders = {
        "crm_contacts": _crm,
        "web_signups": _web,
        "orders": _orders,
        "support_interactions": _support,
        "consent_events": _consent,
        "surveys": _surveys,
        "privacy_requests": _privacy,
    }
    truth_frames = []
    for source, build in builders.items():
        records, person_ids = build(persons, rng)
        records, defects = _plant_defects(source, records, rng)
        truth_frames.append(_write_source(source, records, person_ids, defects, landing, days, rng))
    pl.concat(truth_frames).write_parquet(truth_dir / "records.parquet")
    persons.drop("first_names_pool").write_parquet(truth_dir / "persons.parquet")
    return DemoPaths(landing=landing, truth=truth_dir)


# --------------------------------------------------------------------------- people


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


def _people(
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
    frame = _frame(
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
        old_email=_strings(np.where(changed, old_email, None)),
        old_street=_strings(np.where(moved, old_street, None)),
        old_city=_strings(np.where(moved, cities[old_city, 0], None)),
        old_state=_strings(np.where(moved, cities[old_city, 1], None)),
        old_postal_code=_strings(np.where(moved, cities[old_city, 2], None)),
    )


def _frame(columns: dict, schema_overrides: dict | None = None) -> pl.DataFrame:
    """Build a frame from numpy columns; object arrays (strings with None) go in as lists."""
    data = {
        k: v.tolist() if isinstance(v, np.ndarray) and v.dtype == object else v
        for k, v in columns.items()
    }
    return pl.DataFrame(data, schema_overrides=schema_overrides, strict=False)


def _strings(values: np.ndarray) -> pl.Series:
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


# --------------------------------------------------------------------------- noise


def _typo(values: np.ndarray, rate: float, rng: np.random.Generator) -> np.ndarray:
    """Insert a single-character edit (delete, swap, substitute, double) in a share of values."""
    out = values.astype(object).copy()
    for i in np.flatnonzero(rng.random(len(values)) < rate):
        s = out[i]
        if not isinstance(s, str) or len(s) < 4:
            continue
        k = int(rng.integers(1, len(s) - 1))
        op = int(rng.integers(0, 4))
        if op == 0:
            s = s[:k] + s[k + 1 :]
        elif op == 1:
            s = s[:k] + s[k + 1] + s[k] + s[k + 2 :]
        elif op == 2:
            s = s[:k] + "aeioustnr"[int(rng.integers(0, 9))] + s[k + 1 :]
        else:
            s = s[:k] + s[k] + s[k:]
        out[i] = s
    return out


def _blank(values: np.ndarray, rate: float, rng: np.random.Generator) -> np.ndarray:
    out = values.astype(object).copy()
    out[rng.random(len(values)) < rate] = None
    return out


def _nicknames(first: np.ndarray, rate: float, rng: np.random.Generator) -> np.ndarray:
    out = first.astype(object).copy()
    for i in np.flatnonzero(rng.random(len(first)) < rate):
        options = NICKNAMES.get(out[i])
        if options:
            out[i] = options[int(rng.integers(0, len(options)))]
    return out


def _messy_names(p: pl.DataFrame, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    first = _typo(_nicknames(p["first_name"].to_numpy(), 0.10, rng), 0.04, rng)
    last = _typo(p["last_name"].to_numpy(), 0.04, rng)
    swap = rng.random(len(first)) < 0.02
    first[swap], last[swap] = last[swap], first[swap].copy()
    return first, last


def _full_names(first: np.ndarray, last: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    style = rng.random(len(first))
    out = np.empty(len(first), dtype=object)
    for i, (f, la) in enumerate(zip(first, last, strict=True)):
        f, la = f or "", la or ""
        if style[i] < 0.08:
            out[i] = f"{la}, {f}".strip(", ")
        elif style[i] < 0.14:
            out[i] = f"{f} {la}".upper().strip()
        else:
            out[i] = f"{f} {la}".strip()
        if not out[i]:
            out[i] = None
    return out


def _messy_email(email: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    out = email.astype(object).copy()
    r = rng.random(len(out))
    for i in np.flatnonzero(r < 0.30):
        e = out[i]
        if e is None:
            continue
        local, _, domain = e.partition("@")
        if r[i] < 0.10:
            e = e.upper() if r[i] < 0.03 else e[:1].upper() + e[1:]
        elif r[i] < 0.16 and domain == "gmail.com":
            e = f"{local}+shop@{domain}" if "." in local else f"{local[:2]}.{local[2:]}@{domain}"
        elif r[i] < 0.20:
            e = f"  {e} "
        elif r[i] < 0.24 and domain == "gmail.com":
            e = f"{local.replace('.', '')}@googlemail.com"
        out[i] = e
    return out


def _formatted_phone(
    national: np.ndarray, country: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    codes = {"US": "1", "GB": "44", "DE": "49", "FR": "33"}
    style = rng.integers(0, 5, len(national))
    out = np.empty(len(national), dtype=object)
    for i, (num, c) in enumerate(zip(national, country, strict=True)):
        if num is None:
            out[i] = None
            continue
        cc = codes[c]
        if c == "US":
            a, b, d = num[:3], num[3:6], num[6:]
            out[i] = (
                f"+1{num}",
                f"({a}) {b}-{d}",
                f"{a}.{b}.{d}",
                f"{a}-{b}-{d}",
                f"1 {a} {b} {d}",
            )[style[i]]
        else:
            out[i] = (
                f"+{cc}{num}",
                f"0{num}",
                f"+{cc} {num[:3]} {num[3:]}",
                f"00{cc} {num}",
                f"0{num[:3]} {num[3:]}",
            )[style[i]]
    return out


def _messy_street(street: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    out = street.astype(object).copy()
    r = rng.random(len(out))
    for i in np.flatnonzero(r < 0.25):
        s = out[i]
        if s is None:
            continue
        if r[i] < 0.15:
            for full, short in SUFFIX_ABBREVIATIONS.items():
                if s.endswith(full):
                    s = s[: -len(full)] + (short + "." if r[i] < 0.05 else short)
        elif r[i] < 0.20:
            s = s.upper()
        else:
            s = f"{s} Apt {int(rng.integers(1, 40))}"
        out[i] = s
    return out


def _sample(
    persons: pl.DataFrame, share: float, per_person_mean: float, rng: np.random.Generator
) -> pl.DataFrame:
    """Pick a share of people and repeat each 1 + Poisson(mean - 1) times."""
    chosen = persons.filter(pl.Series(rng.random(persons.height) < share))
    repeats = 1 + rng.poisson(max(per_person_mean - 1, 0), chosen.height)
    return chosen[np.repeat(np.arange(chosen.height), repeats)]


def _timestamps(n: int, rng: np.random.Generator, days_back: int) -> np.ndarray:
    seconds = rng.integers(0, days_back * 86400, n)
    return (np.datetime64(TODAY) - seconds.astype("timedelta64[s]")).astype("datetime64[s]")


# --------------------------------------------------------------------------- channels


def _crm(persons: pl.DataFrame, rng: np.random.Generator) -> tuple[pl.DataFrame, np.ndarray]:
    p = _sample(persons, 0.65, 1.04, rng)
    n = p.height
    first, last = _messy_names(p, rng)
    has_old_email = p["old_email"].is_not_null().to_numpy()
    moved = p["old_street"].is_not_null().to_numpy()
    email = np.where(has_old_email, p["old_email"].to_numpy(), p["email"].to_numpy())
    street = np.where(moved, p["old_street"].to_numpy(), p["street"].to_numpy())
    pick = lambda col: np.where(moved, p[f"old_{col}"].to_numpy(), p[col].to_numpy())  # noqa: E731
    birth = p["birth_date"].to_numpy().astype("datetime64[D]")
    birth_text = _messy_birth(birth, rng)
    created = _timestamps(n, rng, 2500)
    # Records of people who later changed email or moved are older, so "most recent" rules prefer
    # the newer channels.
    age = np.where(has_old_email | moved, rng.integers(400, 900, n), rng.integers(0, 300, n))
    updated = (np.datetime64(TODAY) - (age * 86400).astype("timedelta64[s]")).astype(
        "datetime64[s]"
    )
    created = np.minimum(created, updated)
    frame = _frame(
        {
            "contact_id": [f"C{i:07d}" for i in range(1, n + 1)],
            "first_name": _blank(first, 0.02, rng),
            "last_name": _blank(last, 0.01, rng),
            "email": _blank(_messy_email(email, rng), 0.05, rng),
            "phone": _blank(
                _formatted_phone(p["phone_national"].to_numpy(), p["country"].to_numpy(), rng),
                0.08,
                rng,
            ),
            "street": _blank(_messy_street(street, rng), 0.05, rng),
            "city": _blank(pick("city"), 0.03, rng),
            "state": pick("state"),
            "postal_code": _blank(pick("postal_code"), 0.04, rng),
            "country": _country_spelling(p["country"].to_numpy(), rng),
            "birth_date": _blank(birth_text, 0.15, rng),
            "created_at": created.astype(str),
            "updated_at": updated.astype(str),
            "account_owner": np.array(["alice.owner", "bruno.owner", "chen.owner", "dana.owner"])[
                rng.integers(0, 4, n)
            ],
        },
        schema_overrides={
            c: pl.String
            for c in (
                "first_name",
                "last_name",
                "email",
                "phone",
                "street",
                "city",
                "postal_code",
                "birth_date",
            )
        },
    )
    return frame, p["person_id"].to_numpy()


def _messy_birth(birth: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    text = birth.astype(str).astype(object)
    r = rng.random(len(text))
    for i in np.flatnonzero(r < 0.03):
        y, m, d = text[i].split("-")
        if r[i] < 0.015 and int(d) <= 12 and d != m:
            text[i] = f"{y}-{d}-{m}"  # day and month swapped at entry
        else:
            text[i] = f"{y}-{m}-{int(d) % 28 + 1:02d}"  # one-off wrong day
    return text


def _country_spelling(country: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    names = {
        "US": ["US", "USA", "United States"],
        "GB": ["GB", "UK", "United Kingdom"],
        "DE": ["DE", "Germany", "Deutschland"],
        "FR": ["FR", "France", "france"],
    }
    pick = rng.integers(0, 3, len(country))
    return np.array([names[c][k] for c, k in zip(country, pick, strict=True)], dtype=object)


def _web(persons: pl.DataFrame, rng: np.random.Generator) -> tuple[pl.DataFrame, np.ndarray]:
    p = _sample(persons, 0.40, 1.05, rng)
    n = p.height
    first, last = _messy_names(p, rng)
    frame = _frame(
        {
            "signup_id": [f"W{i:07d}" for i in range(1, n + 1)],
            "full_name": _blank(_full_names(first, last, rng), 0.03, rng),
            "email": _messy_email(p["email"].to_numpy(), rng),
            "phone": _blank(
                _formatted_phone(p["phone_national"].to_numpy(), p["country"].to_numpy(), rng),
                0.55,
                rng,
            ),
            "country": _country_spelling(p["country"].to_numpy(), rng),
            "marketing_opt_in": rng.random(n) < 0.55,
            "signed_up_at": np.char.replace(_timestamps(n, rng, 900).astype(str), "T", " "),
            "utm_source": np.array(
                ["google", "facebook", "newsletter", "direct", "instagram"], dtype=object
            )[rng.integers(0, 5, n)],
            "device": np.array(["mobile", "desktop", "tablet"], dtype=object)[
                rng.integers(0, 3, n)
            ],
        },
        schema_overrides={"full_name": pl.String, "phone": pl.String},
    )
    return frame, p["person_id"].to_numpy()


def _orders(persons: pl.DataFrame, rng: np.random.Generator) -> tuple[pl.DataFrame, np.ndarray]:
    p = _sample(persons, 0.50, 2.2, rng)
    n = p.height
    first, last = _messy_names(p, rng)
    amount = np.round(rng.lognormal(3.8, 0.8, n), 2)
    currency = np.select(
        [p["country"].to_numpy() == "GB", np.isin(p["country"].to_numpy(), ["DE", "FR"])],
        ["GBP", "EUR"],
        "USD",
    )
    frame = _frame(
        {
            "order_id": [f"O{i:08d}" for i in range(1, n + 1)],
            "customer_email": _blank(_messy_email(p["email"].to_numpy(), rng), 0.02, rng),
            "billing_name": _blank(_full_names(first, last, rng), 0.02, rng),
            "billing_phone": _blank(
                _formatted_phone(p["phone_national"].to_numpy(), p["country"].to_numpy(), rng),
                0.3,
                rng,
            ),
            "shipping_street": _messy_street(p["street"].to_numpy(), rng),
            "shipping_city": p["city"].to_numpy(),
            "shipping_state": p["state"].to_numpy(),
            "shipping_postal_code": p["postal_code"].to_numpy(),
            "shipping_country": p["country"].to_numpy(),
            "ordered_at": _timestamps(n, rng, 365).astype("datetime64[us]"),
            "amount": amount,
            "currency": currency,
            "status": np.array(
                ["placed", "shipped", "delivered", "cancelled", "returned"], dtype=object
            )[rng.choice(5, n, p=[0.1, 0.15, 0.65, 0.05, 0.05])],
        },
        schema_overrides={
            "customer_email": pl.String,
            "billing_name": pl.String,
            "billing_phone": pl.String,
        },
    )
    return frame, p["person_id"].to_numpy()


def _support(persons: pl.DataFrame, rng: np.random.Generator) -> tuple[pl.DataFrame, np.ndarray]:
    p = _sample(persons, 0.30, 1.6, rng)
    n = p.height
    first, last = _messy_names(p, rng)
    channel = np.array(["voice", "chat", "email", "sms"], dtype=object)[
        rng.choice(4, n, p=[0.4, 0.3, 0.2, 0.1])
    ]
    by_phone = np.isin(channel, ["voice", "sms"])
    phone = _formatted_phone(p["phone_national"].to_numpy(), p["country"].to_numpy(), rng)
    frame = _frame(
        {
            "interaction_id": [f"I{i:08d}" for i in range(1, n + 1)],
            "channel": channel,
            "caller_phone": np.where(by_phone, phone, None),
            "from_address": np.where(by_phone, None, _messy_email(p["email"].to_numpy(), rng)),
            "customer_name": _blank(
                np.array(
                    [
                        _typo(np.array([s]), 0.05, rng)[0] if s else s
                        for s in _full_names(first, last, rng)
                    ],
                    dtype=object,
                ),
                0.1,
                rng,
            ),
            "started_at": _timestamps(n, rng, 900).astype(str),
            "duration_seconds": rng.integers(30, 3600, n).astype(str),
            "agent_id": np.char.add("agent_", rng.integers(1, 60, n).astype(str)),
            "queue": np.array(["billing", "orders", "returns", "account"], dtype=object)[
                rng.integers(0, 4, n)
            ],
            "topic": np.array(
                ["refund", "delivery", "password", "complaint", "product question"], dtype=object
            )[rng.integers(0, 5, n)],
            "resolution": np.array(
                ["resolved", "unresolved", "escalated", "pending"], dtype=object
            )[rng.choice(4, n, p=[0.7, 0.12, 0.08, 0.1])],
            "csat": _blank(rng.integers(1, 6, n).astype(str), 0.4, rng),
        },
        schema_overrides={
            "caller_phone": pl.String,
            "from_address": pl.String,
            "customer_name": pl.String,
            "csat": pl.String,
        },
    )
    return frame, p["person_id"].to_numpy()


def _consent(persons: pl.DataFrame, rng: np.random.Generator) -> tuple[pl.DataFrame, np.ndarray]:
    p = _sample(persons, 0.35, 1.8, rng)
    n = p.height
    purpose = np.array(
        ["email_marketing", "sms_marketing", "analytics", "third_party_sharing"], dtype=object
    )[rng.choice(4, n, p=[0.45, 0.2, 0.2, 0.15])]
    sms = purpose == "sms_marketing"
    phone = _formatted_phone(p["phone_national"].to_numpy(), p["country"].to_numpy(), rng)
    frame = _frame(
        {
            "event_id": [f"E{i:08d}" for i in range(1, n + 1)],
            "email": np.where(sms, None, _messy_email(p["email"].to_numpy(), rng)),
            "phone": np.where(sms, phone, None),
            "purpose": purpose,
            "action": np.where(rng.random(n) < 0.7, "grant", "revoke"),
            "event_at": _timestamps(n, rng, 700).astype(str),
            "source": np.array(
                ["preference_center", "web_form", "unsubscribe_link", "call_center"], dtype=object
            )[rng.integers(0, 4, n)],
        },
        schema_overrides={"email": pl.String, "phone": pl.String},
    )
    return frame, p["person_id"].to_numpy()


def _surveys(persons: pl.DataFrame, rng: np.random.Generator) -> tuple[pl.DataFrame, np.ndarray]:
    p = _sample(persons, 0.15, 1.2, rng)
    n = p.height
    nps = rng.choice(11, n, p=[0.03, 0.02, 0.03, 0.04, 0.05, 0.08, 0.1, 0.15, 0.18, 0.17, 0.15])
    comments = np.array(
        [
            "Great service",
            "Delivery was late",
            "Love the product",
            "Too expensive",
            "Support never called back",
            "",
            "Easy checkout",
            "Package arrived damaged",
        ],
        dtype=object,
    )
    frame = _frame(
        {
            "response_id": [f"S{i:07d}" for i in range(1, n + 1)],
            "email": _messy_email(p["email"].to_numpy(), rng),
            "nps": nps.astype(object),
            "comment": comments[rng.integers(0, len(comments), n)],
            "submitted_at": _timestamps(n, rng, 500).astype(str),
        }
    )
    return frame, p["person_id"].to_numpy()


def _request_times(times: np.ndarray) -> np.ndarray:
    """Privacy requests arrive in the days before the demo is generated, not before the fixed
    demo date: their legal deadlines (30 or 45 days) lie ahead whenever the demo is run."""
    shift = np.datetime64(datetime.now().replace(microsecond=0)) - np.datetime64(TODAY)
    shifted = times.astype("datetime64[s]") + max(shift, np.timedelta64(0, "s"))
    return shifted.astype("datetime64[s]").astype(str)


def _privacy(persons: pl.DataFrame, rng: np.random.Generator) -> tuple[pl.DataFrame, np.ndarray]:
    p = persons.filter(pl.Series(rng.random(persons.height) < 0.006))
    n = p.height
    by_email = rng.random(n) < 0.7
    phone = _formatted_phone(p["phone_national"].to_numpy(), p["country"].to_numpy(), rng)
    frame = _frame(
        {
            "request_id": [f"R{i:06d}" for i in range(1, n + 1)],
            "request_type": np.where(rng.random(n) < 0.6, "erasure", "access"),
            "email": np.where(by_email, p["email"].to_numpy(), None),
            "phone": np.where(by_email, None, phone),
            "name": np.char.add(
                np.char.add(p["first_name"].to_numpy().astype(str), " "),
                p["last_name"].to_numpy().astype(str),
            ),
            "received_at": _request_times(_timestamps(n, rng, 20)),
            "jurisdiction": np.where(p["country"].to_numpy() == "US", "CCPA", "GDPR"),
        },
        schema_overrides={"email": pl.String, "phone": pl.String},
    )
    # One request that matches nobody, for the steward queue.
    nobody = pl.DataFrame(
        {
            "request_id": ["R999999"],
            "request_type": ["erasure"],
            "email": ["nobody.known@example.org"],
            "phone": [None],
            "name": ["Nobody Known"],
            "received_at": _request_times(np.array([np.datetime64(TODAY)])),
            "jurisdiction": ["GDPR"],
        },
        schema=frame.schema,
    )
    return pl.concat([frame, nobody]), np.concatenate([p["person_id"].to_numpy(), [0]])


# --------------------------------------------------------------------------- defects


DEFECTS = {
    "crm_contacts": [
        ("email", "not-an-email@"),
        ("birth_date", "1987-02-30"),
        ("birth_date", "2091-04-01"),
        ("contact_id", None),
        ("contact_id", "DUPLICATE"),
        ("created_at", "yesterday"),
    ],
    "web_signups": [
        ("email", "jane at example dot com"),
        ("email", None),
        ("signed_up_at", "not a date"),
        ("marketing_opt_in", "maybe"),
        ("signup_id", "DUPLICATE"),
    ],
    "orders": [
        ("amount", -42.5),
        ("order_id", None),
        ("order_id", "DUPLICATE"),
        ("currency", "XYZ"),
        ("customer_email", "broken@@example.com"),
    ],
    "support_interactions": [
        ("csat", "7"),
        ("channel", "fax"),
        ("duration_seconds", "-5"),
        ("interaction_id", "DUPLICATE"),
        ("started_at", "31/31/2024"),
    ],
    "consent_events": [
        ("purpose", "spam_me"),
        ("action", "maybe"),
        ("event_id", None),
        ("email", "no-at-sign.example.com"),
    ],
    "surveys": [("nps", 11), ("nps", "ten"), ("email", "@example.com"), ("response_id", None)],
    "privacy_requests": [("request_type", "delete_everything"), ("jurisdiction", None)],
}


def _plant_defects(
    source: str, records: pl.DataFrame, rng: np.random.Generator
) -> tuple[pl.DataFrame, np.ndarray]:
    """Break ~1.5% of rows (at least one per kind) and return the defect label per row."""
    n = records.height
    defects = np.full(n, None, dtype=object)
    options = DEFECTS[source]
    rate = 0.015 if source != "privacy_requests" else 0.0
    chosen = np.flatnonzero(rng.random(n) < rate)
    chosen = np.union1d(
        chosen, rng.choice(np.arange(1, n), size=min(len(options), n - 1), replace=False)
    )
    columns = {c: records[c].to_list() for c in records.columns}
    id_column = records.columns[0]
    for k, i in enumerate(chosen):
        column, value = (
            options[k % len(options)]
            if k < len(options)
            else options[int(rng.integers(0, len(options)))]
        )
        if value == "DUPLICATE":
            value = columns[id_column][i - 1]
            if i == 0 or value is None or defects[i - 1] is not None:
                continue
        columns[column][i] = value
        defects[i] = (
            f"{column}={value!r}" if column != id_column or value is None else f"duplicate {column}"
        )
    schema = {
        c: (
            pl.Object
            if c in ("nps", "marketing_opt_in", "amount") and source in ("surveys", "web_signups")
            else records.schema[c]
        )
        for c in records.columns
    }
    if source == "orders":
        schema = dict(records.schema)
    return pl.DataFrame(columns, schema=schema, strict=False), defects


# --------------------------------------------------------------------------- files


def _write_source(
    source: str,
    records: pl.DataFrame,
    person_ids: np.ndarray,
    defects: np.ndarray,
    landing: Path,
    days: int,
    rng: np.random.Generator,
) -> pl.DataFrame:
    folder = landing / source
    folder.mkdir(parents=True, exist_ok=True)
    n = records.height
    # Rows are split across daily files in their order, so a duplicate id lands after its original.
    bounds = np.linspace(0, n, days + 1).astype(int)
    truth = []
    for day in range(days):
        stamp = (TODAY.date() - timedelta(days=days - 1 - day)).isoformat()
        part = records.slice(bounds[day], bounds[day + 1] - bounds[day])
        ext = {
            "crm_contacts": "csv",
            "support_interactions": "csv",
            "consent_events": "csv",
            "privacy_requests": "csv",
            "orders": "parquet",
        }.get(source, "jsonl")
        path = folder / f"{source}_{stamp}.{ext}"
        if ext == "csv":
            part.write_csv(path)
        elif ext == "parquet":
            part.write_parquet(path)
        else:
            with path.open("w", encoding="utf-8") as handle:
                for row in part.rows(named=True):
                    handle.write(json.dumps(row, default=str, ensure_ascii=False) + "\n")
        truth.append(
            pl.DataFrame(
                {
                    "source": pl.Series([source] * part.height, dtype=pl.String),
                    "source_file": pl.Series([path.name] * part.height, dtype=pl.String),
                    "row_number": np.arange(1, part.height + 1),
                    "record_id": part[records.columns[0]].cast(pl.String),
                    "person_id": pl.Series(
                        person_ids[bounds[day] : bounds[day + 1]], dtype=pl.Int64
                    ),
                    "defect": _strings(defects[bounds[day] : bounds[day + 1]]),
                }
            )
        )
    return pl.concat(truth).with_columns(planted_bad=pl.col("defect").is_not_null())
