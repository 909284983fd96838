"""The mess real exports have, applied to whole columns: typos, blanks, nicknames, swapped and
full names, email case, dots and +tags, phone formats, street spellings, birth-date formats, country
spellings. Per-value Python runs only on the cells that get one."""

from __future__ import annotations

import numpy as np
import polars as pl

from cdm_pipeline.demo.people import SUFFIX_ABBREVIATIONS, TODAY

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


def typo(values: np.ndarray, rate: float, rng: np.random.Generator) -> np.ndarray:
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


def blank(values: np.ndarray, rate: float, rng: np.random.Generator) -> np.ndarray:
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


def messy_names(p: pl.DataFrame, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    first = typo(_nicknames(p["first_name"].to_numpy(), 0.10, rng), 0.04, rng)
    last = typo(p["last_name"].to_numpy(), 0.04, rng)
    swap = rng.random(len(first)) < 0.02
    first[swap], last[swap] = last[swap], first[swap].copy()
    return first, last


def full_names(first: np.ndarray, last: np.ndarray, rng: np.random.Generator) -> np.ndarray:
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


def messy_email(email: np.ndarray, rng: np.random.Generator) -> np.ndarray:
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


def formatted_phone(
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


def messy_street(street: np.ndarray, rng: np.random.Generator) -> np.ndarray:
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


def sample(
    persons: pl.DataFrame, share: float, per_person_mean: float, rng: np.random.Generator
) -> pl.DataFrame:
    """Pick a share of people and repeat each 1 + Poisson(mean - 1) times."""
    chosen = persons.filter(pl.Series(rng.random(persons.height) < share))
    repeats = 1 + rng.poisson(max(per_person_mean - 1, 0), chosen.height)
    return chosen[np.repeat(np.arange(chosen.height), repeats)]


def timestamps(n: int, rng: np.random.Generator, days_back: int) -> np.ndarray:
    seconds = rng.integers(0, days_back * 86400, n)
    return (np.datetime64(TODAY) - seconds.astype("timedelta64[s]")).astype("datetime64[s]")


def messy_birth(birth: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    text = birth.astype(str).astype(object)
    r = rng.random(len(text))
    for i in np.flatnonzero(r < 0.03):
        y, m, d = text[i].split("-")
        if r[i] < 0.015 and int(d) <= 12 and d != m:
            text[i] = f"{y}-{d}-{m}"  # day and month swapped at entry
        else:
            text[i] = f"{y}-{m}-{int(d) % 28 + 1:02d}"  # one-off wrong day
    return text


def country_spelling(country: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    names = {
        "US": ["US", "USA", "United States"],
        "GB": ["GB", "UK", "United Kingdom"],
        "DE": ["DE", "Germany", "Deutschland"],
        "FR": ["FR", "France", "france"],
    }
    pick = rng.integers(0, 3, len(country))
    return np.array([names[c][k] for c, k in zip(country, pick, strict=True)], dtype=object)
