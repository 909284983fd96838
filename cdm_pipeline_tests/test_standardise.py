"""Stage 3: standardisation of identity fields, table-driven."""

from __future__ import annotations

from datetime import date

import duckdb
import polars as pl
import pytest

from cdm_pipeline.standardise import fields
from cdm_pipeline.standardise.records import (
    CANONICAL_INPUT,
    clean_inputs,
    standardise_records,
    unchanged_record_keys,
)


@pytest.mark.parametrize(
    ("raw", "email", "key"),
    [
        ("  John.Doe+shop@GMail.com ", "john.doe+shop@gmail.com", "johndoe@gmail.com"),
        ("j.doe@googlemail.com", "j.doe@googlemail.com", "jdoe@gmail.com"),
        ("Ann.Lee+x@Outlook.com", "ann.lee+x@outlook.com", "ann.lee@outlook.com"),
        ("not-an-email@", None, None),
        ("jane at example dot com", None, None),
    ],
    ids=["gmail-dots-tag", "googlemail", "outlook-tag-keeps-dots", "no-domain", "words"],
)
def test_email(raw, email, key):
    standardised = fields.standardise_email(raw)
    assert standardised == email
    assert fields.email_match_key(standardised) == key


@pytest.mark.parametrize(
    ("raw", "region", "e164"),
    [
        ("(212) 555-0134", "US", "+12125550134"),
        ("212.555.0134", "US", "+12125550134"),
        ("+1 212 555 0134", "GB", "+12125550134"),
        ("07911 123456", "GB", "+447911123456"),
        ("0151 12345678", "US", "+4915112345678"),
        ("12345", "US", None),
    ],
    ids=[
        "us-parens",
        "us-dots",
        "international",
        "gb-national",
        "de-found-by-fallback",
        "too-short",
    ],
)
def test_phone(raw, region, e164):
    assert fields.standardise_phone(f"{raw}|{region}", ("US", "GB", "DE", "FR")) == e164


def test_email_halves_agree_with_the_whole_address_check():
    """Checking a plain address's halves gives what the validator gives for the whole address,
    on generated addresses and on the shapes that break one rule or another."""
    import random

    from email_validator import EmailNotValidError, validate_email
    from faker import Faker

    def whole(raw: str) -> str | None:
        try:
            return validate_email(raw.strip(), check_deliverability=False).normalized.lower()
        except EmailNotValidError:
            return None

    fake = Faker()
    fake.seed_instance(5)
    rng = random.Random(5)
    edge = [
        "a..b@x.com",
        ".a@x.com",
        "a.@x.com",
        "a@x..com",
        "a@-x.com",
        "a@x-.com",
        "a@x",
        "a@localhost",
        "a@x.c",
        "a@1.2.3.4",
        "a@x.123",
        "a@example.test",
        "a@x.invalid",
        "x" * 64 + "@x.com",
        "x" * 65 + "@x.com",
        "a@" + "x" * 63 + ".com",
        "a@" + "x" * 64 + ".com",
        "a@" + ".".join(["x" * 60] * 4) + ".com",
        ("y" * 60 + ".") + "@x.com",
        "a@" + ".".join(["x" * 40] * 5) + ".co",
        "a+b@x.com",
        "a-b_c@x-y.co.uk",
        "A.B@X.COM",
        "postmaster@X.com",
        "a@x.com.",
        "a@_x.com",
        "a@x_y.com",
        "-a@x.com",
        "a@xn--bcher-kva.com",
        "a@xn--x.com",
    ]
    generated = [fake.email() for _ in range(1500)] + [
        "".join(rng.choice("ab.-_+1@") for _ in range(rng.randint(3, 14))) for _ in range(1500)
    ]
    for raw in edge + generated:
        assert fields.standardise_email(raw) == whole(raw), raw


def test_phone_validity_shortcut_agrees_with_the_library():
    """The main-region shortcut gives what ``phonenumbers.is_valid_number`` gives, on numbers
    of shared calling codes (+1: US, CA, the Caribbean; +44: GB, GG, JE; +7: RU, KZ) and junk."""
    import random

    import phonenumbers

    rng = random.Random(3)
    regions = ["US", "CA", "AG", "JM", "GB", "GG", "JE", "RU", "KZ", "DE", "FR", "AU", "MX", "IN"]
    codes = ["", "+1", "+44", "+7", "+49", "+33", "+61", "+52", "+91", "001", "0"]
    checked = valid = 0
    for _ in range(6000):
        digits = "".join(rng.choice("0123456789") for _ in range(rng.randint(6, 12)))
        raw, region = rng.choice(codes) + digits, rng.choice(regions)
        try:
            number = phonenumbers.parse(raw, region)
        except phonenumbers.NumberParseException:
            continue
        expected = phonenumbers.is_valid_number(number)
        assert fields._valid_in_main_region(number, region) <= expected, (raw, region)
        assert (fields._valid_e164(raw, region) is not None) == expected, (raw, region)
        checked += 1
        valid += expected
    assert checked > 4000 and valid > 300  # the sample holds both kinds


@pytest.mark.parametrize(
    ("raw", "iso"),
    [
        ("US", "US"),
        ("USA", "US"),
        ("United Kingdom", "GB"),
        ("UK", "GB"),
        ("Deutschland", "DE"),
        ("france", "FR"),
        ("Atlantis", None),
    ],
)
def test_country(raw, iso):
    assert fields.standardise_country(raw) == iso


@pytest.mark.parametrize(
    ("full", "first", "last"),
    [
        ("Hernandez, Jennifer", "Jennifer", "Hernandez"),
        ("Ludwig van Beethoven", "Ludwig", "van Beethoven"),
        ("Brian Koch III", "Brian", "Koch"),
        ("Cher", "Cher", None),
    ],
)
def test_full_name_split(full, first, last):
    assert fields.split_full_name(full) == (first, last)


def test_names_fold_accents_and_nicknames_group():
    assert fields.name_key("José-María  Núñez") == "jose maria nunez"
    assert fields.first_name_group("bob") == fields.first_name_group("robert") == "robert"
    pairs = set(fields.nickname_pairs().iter_rows())
    assert ("bob", "robert") in pairs and ("robert", "bob") in pairs


@pytest.mark.parametrize(
    ("raw", "street", "unit"),
    [
        ("12 Main Street Apt 4", "12 MAIN ST", "4"),
        ("12 north main st.", "12 N MAIN ST", None),
        ("7 Oak Ave #5", "7 OAK AVE", "5"),
        ("4 Rue de la Paix", "4 RUE DE LA PAIX", None),
    ],
)
def test_street(raw, street, unit):
    assert fields.street_key(raw) == (street, unit)


def test_records_keep_originals_beside_standardised_values():
    frame = pl.DataFrame(
        {
            "record_key": ["s:1"],
            "source": ["s"],
            "source_record_id": ["1"],
            "trust_rank": [1],
            "event_at": [None],
            "first_name": [None],
            "last_name": [None],
            "full_name": ["SMITH, JOHN"],
            "email": [" J.Smith@Example.com"],
            "phone": ["(212) 555-0134"],
            "street": ["1 Main Street"],
            "city": ["Springfield"],
            "state": ["il"],
            "postal_code": ["62701-1234"],
            "country": ["USA"],
            "birth_date": ["1980-02-30"],
        }
    )
    out = standardise_records(frame).row(0, named=True)
    assert (out["first_name"], out["last_name"]) == ("John", "Smith")
    assert out["email"] == "j.smith@example.com" and out["email_raw"] == "J.Smith@Example.com"
    assert (
        out["phone_e164"] == "+12125550134"
        and out["postal_code"] == "62701"
        and out["country"] == "US"
    )
    assert out["birth_date"] is None and out["birth_date_raw"] == "1980-02-30"


def test_implausible_birth_dates_are_dropped():
    text_fields = [c for c in CANONICAL_INPUT if c != "birth_date"]
    frame = pl.DataFrame(
        {c: [None, None] for c in text_fields}, schema={c: pl.String for c in text_fields}
    )
    frame = frame.with_columns(
        record_key=pl.Series(["a", "b"]),
        source=pl.lit("s"),
        source_record_id=pl.lit("1"),
        trust_rank=pl.lit(1),
        event_at=pl.lit(None),
        birth_date=pl.Series([date(1850, 1, 1), date(1990, 5, 6)]),
    )
    assert standardise_records(frame)["birth_date"].to_list() == [None, date(1990, 5, 6)]


def test_only_new_or_changed_inputs_are_standardised_again():
    inputs = pl.DataFrame(
        {
            "record_key": ["s:1", "s:2", "s:3"],
            "source": ["s"] * 3,
            "source_record_id": ["1", "2", "3"],
            "trust_rank": pl.Series([1, 1, 1], dtype=pl.Int32),
            "event_at": [None, None, None],
        }
        | {c: [None, None, None] for c in CANONICAL_INPUT}
    ).with_columns(
        email=pl.Series([" a@example.com", "b@example.com", None]),
        full_name=pl.Series(["Ann Lee", "Bob Day", "Cy Young"]),
    )
    stored = standardise_records(clean_inputs(inputs))
    # As landed tonight (not cleaned): s:1 only gains spaces (the same cleaned input), s:2
    # changes its email, s:3 gives an empty name where it gave none (the same), s:4 is new.
    tonight = inputs.with_columns(
        email=pl.Series(["a@example.com  ", "bob@example.com", None]),
        phone=pl.Series([None, None, "  "]),
    ).vstack(inputs.slice(2, 1).with_columns(record_key=pl.lit("s:4")))
    conn = duckdb.connect()
    conn.execute("create schema identity")

    def unchanged(stored_records: pl.DataFrame) -> list[str]:
        conn.register("_stored", stored_records.to_arrow())
        conn.register("_tonight", tonight.to_arrow())
        conn.execute("create or replace table identity.person_records as from _stored")
        conn.execute("create or replace temp table _canonical as from _tonight")
        unchanged_record_keys(conn, "_canonical")
        return sorted(k for (k,) in conn.execute("select * from _reused_keys").fetchall())

    assert unchanged(stored) == ["s:1", "s:3"]
    assert unchanged(stored.with_columns(trust_rank=pl.lit(2, pl.Int32))) == []  # re-ranked
    unchanged_record_keys(conn, "_canonical", same_settings=False)
    assert conn.execute("select count(*) from _reused_keys").fetchall() == [(0,)]


def test_fast_standardising_gives_the_same_values(monkeypatch):
    """Values reduced to keys (a phone's digits, an ASCII email lower-cased) and spread over
    worker processes standardise exactly as each raw value does on its own."""
    import polars as pl

    from cdm_pipeline.standardise import fields
    from cdm_pipeline.standardise.records import standardise_records

    phones = [
        "(212) 555-0101",
        "212.555.0101",
        "+1 212 555 0101",
        "212-555-0101 x12",
        "1-800-FLOWERS",
        "020 7946 0958",
        "+44 (0)20 7946 0958",
        "0049 30 123456",
        "555",
        "",
        "  415/555 0199 ",
        "+33 1 42 68 53 00",
        "01 42 68 53 00",
        "(0)30-1234567",
    ]
    emails = [
        "Ann.Lee@Example.org",
        " ann.lee@example.org ",
        "ANN+tag@GMAIL.com",
        "bad@@x",
        "a@b",
        "jörg@müller.de",
        "Jörg@Müller.de",
        "x..y@example.org",
        "user@localhost",
        "",
    ]
    regions = ["US", "GB", "DE", "FR", "US", "GB", "US"]
    frame = pl.DataFrame(
        {
            "record_key": [f"s:{i}" for i in range(len(phones) * len(emails))],
            "source": "s",
            "source_record_id": [str(i) for i in range(len(phones) * len(emails))],
            "trust_rank": 5,
            "event_at": None,
            "phone": [p for p in phones for _ in emails],
            "email": [e for _ in phones for e in emails],
            "country": [regions[i % len(regions)] for i in range(len(phones) * len(emails))],
            "first_name": "Ann",
            "full_name": "Lee, Ann",
            "street": "1 Main St Apt 2",
            "postal_code": ["62701-1234", "sw1a 1aa", "10115"] * (len(phones) * len(emails) // 3)
            + ["62701"] * (len(phones) * len(emails) % 3),
        }
    )
    regions_all = ("US", "GB", "DE", "FR")
    expected = [
        fields.standardise_phone(f"{p}|{c}", regions_all) if p else None
        for p, c in zip(frame["phone"], frame["country"], strict=True)
    ]
    expected_email = [fields.standardise_email(e) if e else None for e in frame["email"]]
    monkeypatch.setattr(fields, "PARALLEL_FROM", 1)  # every field through the worker processes
    out = standardise_records(frame, "US", regions_all)
    assert out["phone_e164"].to_list() == expected
    assert out["email"].to_list() == expected_email
    monkeypatch.setattr(fields, "PARALLEL_FROM", 10**9)
    assert standardise_records(frame, "US", regions_all).equals(out)


def test_ascii_shortcuts_agree_with_the_unicode_path():
    """Folding and street words take a shortcut for ASCII text; on every printable ASCII
    character, and on random strings of them, it gives what the Unicode path gives."""
    import random
    import string

    from cdm_pipeline.standardise import fields

    rnd = random.Random(7)
    samples = list(string.printable) + [
        "".join(rnd.choices(string.printable, k=rnd.randint(0, 40))) for _ in range(3000)
    ]
    for text in samples:
        assert fields.fold(text) == fields._fold_unicode(text)
        upper = text.upper()
        assert fields._street_words(upper) == fields._street_words_unicode(upper)


def test_a_closure_is_standardised_in_this_process(monkeypatch):
    """A function that cannot travel to a worker (a closure) runs here instead of failing."""
    import polars as pl

    from cdm_pipeline.standardise import fields

    monkeypatch.setattr(fields, "PARALLEL_FROM", 1)
    suffix = "!"
    out = fields.map_unique(pl.Series(["a", "b", "a", None]), lambda v: v + suffix, pl.String)
    assert out.to_list() == ["a!", "b!", "a!", None]


def _standardise_in_a_child() -> None:
    from cdm_pipeline.standardise import fields

    fields.PARALLEL_FROM = 1
    assert fields.parallel_map(fields.name_key, ["Ann Lee", "Bo"]) == ["ann lee", "bo"]


def test_a_process_that_used_the_workers_still_exits():
    """A step of ``cdm run --parallel`` is a multiprocessing child; at exit it joins its
    children, so worker processes left open hung a 3M-record night. Without any explicit close
    the child must end."""
    import multiprocessing

    child = multiprocessing.get_context("spawn").Process(target=_standardise_in_a_child)
    child.start()
    child.join(60)
    alive = child.is_alive()
    if alive:
        child.kill()
    assert not alive and child.exitcode == 0
