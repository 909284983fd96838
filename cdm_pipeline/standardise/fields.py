"""Standardise identity fields: email, phone (E.164), names, addresses, postal codes, countries.

Each function takes a polars Series (or frame) of raw text and returns standardised values.
Distinct values are standardised once and joined back, because the libraries are per-value.

Why one file of ~470 lines: each field is one short function over its library, and a newcomer
looking for how a field is standardised finds every field here.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.util
import os
import pickle
import re
import unicodedata
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from functools import cache

import jellyfish
import nicknames
import phonenumbers
import polars as pl
import pycountry
from email_validator import EmailNotValidError, validate_email
from email_validator.rfc_constants import EMAIL_MAX_LENGTH
from email_validator.syntax import validate_email_local_part
from scourgify import address_constants as usps

# The library compiles its metadata's patterns through re.compile on every use; with its own
# cache on, a pattern is looked up in a dict (profiled: 8 % of a number's parse).
phonenumbers.enable_pattern_cache()

# Providers that ignore dots in the local part; most providers ignore a "+tag".
DOTLESS_PROVIDERS = {"gmail.com": "gmail.com", "googlemail.com": "gmail.com"}
COUNTRY_ALIASES = {
    "uk": "GB",
    "england": "GB",
    "scotland": "GB",
    "wales": "GB",
    "great britain": "GB",
    "usa": "US",
    "u.s.a.": "US",
    "u.s.": "US",
    "america": "US",
    "united states of america": "US",
    "deutschland": "DE",
    "allemagne": "DE",
    "espana": "ES",
    "españa": "ES",
    "holland": "NL",
}
NAME_SUFFIXES = {"jr", "sr", "ii", "iii", "iv", "v", "phd", "md", "dds", "esq"}
NAME_PARTICLES = {"van", "von", "de", "da", "del", "der", "di", "la", "le", "st", "mac", "mc"}


def map_unique(
    values: pl.Series,
    function: Callable[[str], object],
    dtype: pl.DataType,
    keys: pl.Series | None = None,
    spread: bool = True,
) -> pl.Series:
    """Apply a per-value Python function once per distinct non-null value.

    ``keys`` (optional, aligned with ``values``) are what the function is applied to instead: a
    form of each value the function cannot tell from the value itself ("(212) 555-0101" and
    "212.555.0101" are both "2125550101"), so that it runs once per distinct key. Large inputs
    are spread over the machine's cores (``parallel_map``) unless ``spread`` is false (this
    process's core is free while the workers parse something else)."""
    if not spread:
        values = keys if keys is not None else values
        distinct = values.drop_nulls().unique()
        return _looked_up(values, distinct, [function(x) for x in distinct.to_list()], dtype)
    return map_unique_started(values, function, dtype, keys)()


def map_unique_started(
    values: pl.Series,
    function: Callable[[str], object],
    dtype: pl.DataType,
    keys: pl.Series | None = None,
) -> Callable[[], pl.Series]:
    """``map_unique`` handed to the worker processes now; calling the result collects it. The
    caller's own work runs meanwhile, so that its core is not idle while the workers parse."""
    values = keys if keys is not None else values
    distinct = values.drop_nulls().unique()
    results = parallel_map_started(function, distinct.to_list())
    return lambda: _looked_up(values, distinct, results(), dtype)


def _looked_up(
    values: pl.Series, distinct: pl.Series, results: list, dtype: pl.DataType
) -> pl.Series:
    """Each value's result: its key joined to the distinct keys' results."""
    lookup = pl.DataFrame({"key": distinct, "value": pl.Series(results, dtype=dtype)})
    return (
        values.to_frame("key")
        .join(lookup, on="key", how="left", maintain_order="left")["value"]
        .alias(values.name)
    )


PARALLEL_FROM = 20_000  # distinct values; below this a worker's start-up costs more than it saves
_POOL: ProcessPoolExecutor | bool | None = None


def parallel_map(function: Callable[[str], object], items: list[str]) -> list:
    """``[function(x) for x in items]``, on every core when there are many items. The workers
    are spawned (forking a process that runs polars' and DuckDB's threads can deadlock) once per
    process and kept; ``function`` must be picklable (a module function or a partial of one)."""
    return parallel_map_started(function, items)()


def parallel_map_started(function: Callable[[str], object], items: list[str]) -> Callable[[], list]:
    """``parallel_map`` submitted now, its results gathered when the returned function is
    called (a small input is simply computed then, in this process)."""
    global _POOL
    workers = min(os.cpu_count() or 1, 8)
    if len(items) < PARALLEL_FROM or workers < 2 or _POOL is False or not _picklable(function):
        return lambda: [function(x) for x in items]
    if _POOL is None:
        _POOL = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))
        # Stopped before a multiprocessing child joins its children at exit (see close_pool),
        # and before its queues close (their finalizers run at priority 10).
        multiprocessing.util.Finalize(_POOL, close_pool, exitpriority=100)
    size = -(-len(items) // (workers * 4))
    chunks = [items[i : i + size] for i in range(0, len(items), size)]
    futures = [_POOL.submit(_apply, function, chunk) for chunk in chunks]

    def gather() -> list:
        global _POOL
        out: list = []
        try:
            for future in futures:
                out.extend(future.result())
        except BrokenProcessPool:
            # Workers could not start (a calling script without an ``if __name__ ==
            # "__main__"`` guard is run again by spawn): the same work, here, from now on.
            _POOL = False
            return [function(x) for x in items]
        return out

    return gather


def close_pool() -> None:
    """Stop the worker processes. A process started by ``multiprocessing`` (a step of
    ``cdm run --parallel``, a Dask worker) joins its children before the executor's own exit
    hook runs: workers left waiting would keep it from ever exiting (a 3M-record night hung so)."""
    global _POOL
    if isinstance(_POOL, ProcessPoolExecutor):
        _POOL.shutdown(wait=True, cancel_futures=True)
        _POOL = None


def _picklable(function: Callable) -> bool:
    """Only a module function (or a partial of one) can travel to a worker; a closure runs here."""
    try:
        pickle.dumps(function)
    except (pickle.PicklingError, AttributeError, TypeError):
        return False
    return True


def _apply(function: Callable[[str], object], chunk: list[str]) -> list:
    return [function(x) for x in chunk]


def phone_keys(raw: pl.Series, region: pl.Series) -> pl.Series:
    """``raw|region`` for the phone parser, with a number written in digits and punctuation only
    reduced to its digits (the parser reads nothing else from it); anything else (a leading +,
    letters, an extension) is passed as written."""
    plain = raw.str.contains(r"^[0-9 ().\-/]+$")
    text = pl.select(
        pl.when(plain).then(raw.str.replace_all(r"[^0-9]", "")).otherwise(raw)
    ).to_series()
    return pl.select(pl.concat_str([text, region], separator="|")).to_series().alias("phone")


def email_keys(raw: pl.Series) -> pl.Series:
    """An ASCII address lower-cased and trimmed: its validity and normal form do not depend on
    case (``standardise_email`` lower-cases its result); other text is passed as written."""
    ascii_text = raw.str.contains(r"^[\x00-\x7F]*$")
    return (
        pl.select(pl.when(ascii_text).then(raw.str.strip_chars().str.to_lowercase()).otherwise(raw))
        .to_series()
        .alias("email")
    )


# --------------------------------------------------------------------------- text


def fold(text: str) -> str:
    """NFKC, case-folded, accents removed: the form names and places are compared in."""
    if text.isascii():  # all of it is lower-casing then (the common case, 5x faster)
        return text.lower()
    return _fold_unicode(text)


def _fold_unicode(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).casefold()
    text = "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c))
    return text.replace("ß", "ss").replace("ø", "o").replace("æ", "ae").replace("ł", "l")


def name_key(text: str | None) -> str | None:
    """A name for matching: folded, letters only, single spaces, no generational suffix (Jr, III);
    None when nothing is left."""
    if text is None:
        return None
    words = "".join(c if c.isalpha() else " " for c in fold(text)).split()
    while len(words) > 1 and words[-1] in NAME_SUFFIXES:
        words.pop()
    return " ".join(words) or None


def split_full_name(full: str | None) -> tuple[str | None, str | None]:
    """'Last, First' or 'First [Middle] Last' -> (first, last), keeping surname particles."""
    if full is None or not full.strip():
        return None, None
    words = full.replace(".", " ").split()
    while len(words) > 2 and words[-1].casefold().strip(",") in NAME_SUFFIXES:
        words.pop()
    full = " ".join(words)
    if "," in full:
        last, _, first = full.partition(",")
        return (first.strip().split(" ")[0] or None), (last.strip() or None)
    parts = full.split()
    if len(parts) == 1:
        return parts[0], None
    last_start = len(parts) - 1
    while last_start > 1 and parts[last_start - 1].casefold() in NAME_PARTICLES:
        last_start -= 1
    return parts[0], " ".join(parts[last_start:])


# --------------------------------------------------------------------------- email


# What nearly every address looks like: no quotes, brackets, spaces or non-ASCII letters.
_PLAIN_ADDRESS = re.compile(r"[A-Za-z0-9._+\-]+@[A-Za-z0-9.\-]+")


def standardise_email(raw: str) -> str | None:
    """Lower-cased, syntax-checked address (no DNS lookups); None if it is not a valid address.

    A plain address is checked by the validator in its two halves, the domain once per distinct
    domain (most addresses share a few): the domain's checks cost the most, and neither half's
    checks depend on the other (only the whole length does, checked here with the validator's
    limit). Anything else is checked whole."""
    text = raw.strip()
    plain = _PLAIN_ADDRESS.fullmatch(text) and "xn--" not in text.lower()  # (IDNA: made Unicode)
    if plain and len(text) <= EMAIL_MAX_LENGTH:
        local, _, domain = text.partition("@")
        return text.lower() if _valid_domain(domain.lower()) and _valid_local(local) else None
    try:
        checked = validate_email(text, check_deliverability=False)
    except EmailNotValidError:
        return None
    return checked.normalized.lower()


@cache
def _valid_domain(domain: str) -> bool:
    return _validates(f"a@{domain}")


def _valid_local(local: str) -> bool:
    """The validator's own check of the part before the @ (with its defaults), without a domain
    check that costs more (``email-validator`` is pinned; the tests compare with whole
    addresses)."""
    try:
        validate_email_local_part(local)
    except EmailNotValidError:
        return False
    return True


def _validates(address: str) -> bool:
    try:
        validate_email(address, check_deliverability=False)
    except EmailNotValidError:
        return False
    return True


def email_match_key(email: str | None) -> str | None:
    """Provider-aware normal form for matching: no +tag; no dots where the provider ignores them."""
    if email is None:
        return None
    local, _, domain = email.partition("@")
    local = local.split("+", 1)[0]
    if domain in DOTLESS_PROVIDERS:
        domain = DOTLESS_PROVIDERS[domain]
        local = local.replace(".", "")
    return f"{local}@{domain}" if local else None


# --------------------------------------------------------------------------- phone


def standardise_phone(raw_and_region: str, fallback_regions: tuple[str, ...] = ()) -> str | None:
    """E.164 for a number valid in its record's region (``"<raw>|<ISO2>"``). A national-format
    number from a source with no country (a call-center caller id) is tried in the deployment's
    other regions and kept only if exactly one of them finds it valid."""
    raw, _, region = raw_and_region.rpartition("|")
    found = _valid_e164(raw, region or "US")
    if found or raw.lstrip().startswith("+"):
        return found
    candidates = {e for r in fallback_regions if r != region and (e := _valid_e164(raw, r))}
    return candidates.pop() if len(candidates) == 1 else None


def _valid_e164(raw: str, region: str) -> str | None:
    try:
        number = phonenumbers.parse(raw, region)
    except phonenumbers.NumberParseException:
        return None
    if not (_valid_in_main_region(number, region) or phonenumbers.is_valid_number(number)):
        return None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


@cache
def _main_region_of(region: str) -> bool:
    """The region is its calling code's main one (US for +1) and claims no leading digits."""
    metadata = phonenumbers.PhoneMetadata.metadata_for_region(region)
    return (
        metadata is not None
        and metadata.leading_digits is None
        and phonenumbers.region_code_for_country_code(metadata.country_code) == region
    )


def _valid_in_main_region(number: phonenumbers.PhoneNumber, region: str) -> bool:
    """``is_valid_number`` first looks for the number's region among every region of its
    calling code (25 share +1), trying the main one first: a number valid in the main region it
    was read in is valid by that answer, without the search (a third of the parse cost)."""
    return _main_region_of(region) and phonenumbers.is_valid_number_for_region(number, region)


# --------------------------------------------------------------------------- country


@cache
def standardise_country(raw: str) -> str | None:
    """ISO 3166-1 alpha-2 from a code, an English name or a common alias."""
    text = raw.strip()
    if not text:
        return None
    alias = COUNTRY_ALIASES.get(fold(text))
    if alias:
        return alias
    try:
        return pycountry.countries.lookup(text).alpha_2
    except LookupError:
        return None


# --------------------------------------------------------------------------- names


@cache
def _nicknamer() -> nicknames.NickNamer:
    return nicknames.NickNamer()


def first_name_group(name: str) -> str:
    """Canonical form of a first name for blocking: a formal name stays itself; a nickname maps
    to its formal name with the most nicknames (Bob -> robert)."""
    namer = _nicknamer()
    candidates = sorted(namer.canonicals_of(name))
    if not candidates:
        return name
    own = len(namer.nicknames_of(name))
    best = max(candidates, key=lambda f: len(namer.nicknames_of(f)))
    return best if len(namer.nicknames_of(best)) > own else name


def same_first_name(a: str, b: str) -> bool:
    """One is a nickname of the other, or both are nicknames of one name (Tony, Anthony)."""
    namer = _nicknamer()
    forms_a = {a} | namer.canonicals_of(a) | namer.nicknames_of(a)
    forms_b = {b} | namer.canonicals_of(b) | namer.nicknames_of(b)
    return b in forms_a or a in forms_b or bool(namer.canonicals_of(a) & namer.canonicals_of(b))


@cache
def nickname_pairs() -> pl.DataFrame:
    """Every (a, b) pair of first names that are the same name by the nickname list, both ways."""
    namer = _nicknamer()
    pairs: set[tuple[str, str]] = set()
    for triplet in nicknames.name_triplets():
        formal, nick = triplet.name1, triplet.name2
        pairs.add((formal, nick))
        for sibling in namer.nicknames_of(formal):
            if sibling != nick:
                pairs.add((nick, sibling))
    both = pairs | {(b, a) for a, b in pairs}
    return pl.DataFrame(sorted(both), schema=["name_l", "name_r"], orient="row")


def soundex(name: str) -> str:
    return jellyfish.soundex(name.replace(" ", ""))


# --------------------------------------------------------------------------- address

_UNIT_WORDS = (
    set(usps.OCCUPANCY_TYPE_ABBREVIATIONS)
    | set(usps.OCCUPANCY_TYPE_ABBREVIATIONS.values())
    | {"#", "NO"}
)


def split_name_parts(full: str) -> dict[str, str | None]:
    """``split_full_name`` as a struct row (a module function: it may run in a worker process)."""
    return dict(zip(("first", "last"), split_full_name(full), strict=True))


_NOT_ASCII_WORD = re.compile(r"[^0-9A-Za-z#]")


def _street_words(text: str) -> list[str]:
    """Letters, digits and '#' runs (ASCII by one regex, the common case)."""
    if text.isascii():
        return _NOT_ASCII_WORD.sub(" ", text).split()
    return _street_words_unicode(text)


def _street_words_unicode(text: str) -> list[str]:
    return "".join(c if c.isalnum() or c == "#" else " " for c in text).split()


def street_parts(raw: str) -> dict[str, str | None]:
    """``street_key`` as a struct row (a module function: it may run in a worker process)."""
    return dict(zip(("street", "unit"), street_key(raw), strict=True))


def street_key(raw: str) -> tuple[str | None, str | None]:
    """(street, unit) in USPS Pub 28 abbreviations: '12 Main Street Apt 4' -> ('12 MAIN ST', '4')."""
    tokens = _street_words(fold(raw).upper().replace("#", " # "))
    street, unit = tokens, []
    for i, token in enumerate(tokens):
        if token in _UNIT_WORDS and i > 0:
            street, unit = tokens[:i], [t for t in tokens[i + 1 :] if t not in _UNIT_WORDS]
            break
    # Suffixes abbreviate only in last place and directionals only next to the number or last,
    # so 'Rue de la Paix' keeps its 'LA'.
    street = [
        usps.STREET_TYPE_ABBREVIATIONS.get(t, t)
        if i == len(street) - 1 and i > 0
        else usps.DIRECTIONAL_REPLACEMENTS.get(t, t)
        if i == 1
        else t
        for i, t in enumerate(street)
    ]
    return (" ".join(street) or None), (" ".join(unit) or None)


def postal_key(raw: str | None, country: str | None) -> str | None:
    if raw is None:
        return None
    text = "".join(c for c in raw.upper() if c.isalnum())
    if country in (None, "US") and len(text) >= 5 and text[:5].isdigit():
        return text[:5]
    return text or None
