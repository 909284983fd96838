"""The warehouse's secret key, for salted identifier hashes and stable pseudonyms.

Generated once and kept in ``governance.secret_key``. Whoever can read the warehouse can read
the PII anyway; the analyst database never receives the key, so its pseudonyms cannot be
reversed or recomputed there.
"""

from __future__ import annotations

import hashlib
import secrets
import unicodedata

import duckdb

from cdm_pipeline.warehouse import ensure_schemas


def secret_key(conn: duckdb.DuckDBPyConnection) -> str:
    ensure_schemas(conn)
    conn.execute(
        "create table if not exists governance.secret_key (key varchar not null, created_at timestamp)"
    )
    rows = conn.execute("select key from governance.secret_key limit 1").fetchall()
    if rows:
        return rows[0][0]
    key = secrets.token_hex(32)
    conn.execute("insert into governance.secret_key values (?, current_timestamp)", [key])
    return key


def fingerprint(key: str, value: str) -> str:
    """Salted SHA-256 of a normalised identifier: what the suppression list stores. Plain
    salted SHA-256 (not HMAC) so DuckDB's ``sha256(key || value)`` can scan tables for it."""
    return hashlib.sha256((key + value).encode("utf-8")).hexdigest()


def email_forms(raw: str | None) -> set[str]:
    """The forms of an email worth recognising later: as typed (trimmed, lower) and its match key."""
    from cdm_pipeline.standardise.fields import email_match_key, standardise_email

    if not raw:
        return set()
    forms = {raw.strip().lower()}
    valid = standardise_email(raw)
    if valid:
        forms |= {valid, email_match_key(valid) or valid}
    return {f for f in forms if f}


def phone_forms(raw: str | None, e164: str | None = None) -> set[str]:
    """Digits-only forms: as typed and in E.164 (so '(212) 555-0134' and '+12125550134' both hit)."""
    import phonenumbers

    values = [raw, e164]
    if e164:
        values.append(str(phonenumbers.parse(e164).national_number))
    forms = set()
    for value in values:
        digits = "".join(c for c in (value or "") if c.isdigit())
        # Leading zeros dropped too: a trunk prefix ('07911 123456' is national number
        # 7911123456) or an international one ('0044 7911...' is 447911...).
        for form in (digits, digits.lstrip("0")):
            if len(form) >= 7:
                forms.add(form)
    return forms


def name_form(first: str | None, last: str | None) -> str | None:
    if not first or not last:
        return None
    text = unicodedata.normalize("NFKC", f"{first} {last}").casefold()
    return " ".join(text.split())
