"""Which customer a privacy request is about: by the email or phone it gives, through every
linked record, and checked against the name it gives; and which of that customer's records are
surely the requester's (``requesters_records``). A household's shared number held in the
warehouse only by the partner must not make the partner the requester.
"""

from __future__ import annotations

import duckdb
import numpy as np
import polars as pl
from rapidfuzz.distance import JaroWinkler

from cdm_pipeline.governance.requests import PrivacyRequest
from cdm_pipeline.resolve.clustering import connected_component_labels
from cdm_pipeline.standardise.fields import (
    email_match_key,
    first_name_group,
    name_key,
    same_first_name,
    split_full_name,
    standardise_email,
    standardise_phone,
)

# Why a privacy request leaves a record of its customer alone (``requesters_records``).
UNCERTAIN_LINK = (
    "linked to the requester's records only through links under privacy.min_link_probability "
    "or links that the first names speak against"
)
UNATTRIBUTED = (
    "in no customer: it names no one and carries an email or phone of the requester's, "
    "which several customers hold"
)


def match_customers(
    conn: duckdb.DuckDBPyConnection,
    request: PrivacyRequest,
    phone_regions: tuple[str, ...],
    exact: bool = False,
) -> list[str]:
    """Customers holding the request's email or phone, through any of their linked records."""
    matches = match_requests(conn, [request], phone_regions, exact)
    return sorted(
        matches.filter(pl.col("customer_id").is_not_null())["customer_id"].unique().to_list()
    )


def match_requests(
    conn: duckdb.DuckDBPyConnection,
    requests: list[PrivacyRequest],
    phone_regions: tuple[str, ...],
    exact: bool = False,
) -> pl.DataFrame:
    """``request_id, customer_id, seed_keys`` for every customer holding a request's email or
    phone (``seed_keys``: the customer's records that carry it); a request matching no one has
    one row with a null customer.
    ``exact`` (access requests, which hand data out) compares the email as given, standardised
    but with its +tag and dots: victim+x@ is not victim@."""
    keys = _request_keys(requests, phone_regions, exact)
    email_column = "email" if exact else "email_norm"
    conn.register("request_keys", keys.to_arrow())
    try:
        # Two equality joins, not one join on "email or phone": each looks the few keys up
        # (a hash join) instead of comparing every record with every request.
        found = conn.sql(
            "with held as ("
            f"select k.request_id, p.record_key, p.{email_column} = k.email_key as by_email, "
            "p.phone_e164 = k.phone as by_phone from request_keys k "
            f"join identity.person_records p on p.{email_column} = k.email_key "
            "union all "
            f"select k.request_id, p.record_key, p.{email_column} = k.email_key, "
            "p.phone_e164 = k.phone from request_keys k "
            "join identity.person_records p on p.phone_e164 = k.phone) "
            "select k.request_id, x.customer_id, "
            "coalesce(bool_or(h.by_email), false) and coalesce(bool_or(h.by_phone), false) "
            "as holds_both, list(distinct h.record_key) filter (x.customer_id is not null) "
            "as seed_keys from request_keys k left join held h using (request_id) "
            "left join mart.customer_xref x on x.record_key = h.record_key "
            "and x.customer_id is not null group by all"
        ).pl()
    finally:
        conn.unregister("request_keys")
    # A request naming an email and a phone is the customer holding both, when one does: the
    # phone may be the household's, which the requester's family holds too.
    both = pl.col("holds_both").any().over("request_id")
    found = found.filter(~both | pl.col("holds_both")).select(
        "request_id", "customer_id", "seed_keys"
    )
    names = {r.request_id: r.name for r in requests}
    return _seeds_of_that_name(conn, _verify_names(conn, found, names), names)


def _request_keys(
    requests: list[PrivacyRequest], phone_regions: tuple[str, ...], exact: bool
) -> pl.DataFrame:
    """``request_id, email_key, phone``: each request's email and phone as the records hold them."""
    return pl.DataFrame(
        {
            "request_id": [r.request_id for r in requests],
            "email_key": [_email_key(r.email, exact) for r in requests],
            "phone": [
                standardise_phone(f"{r.phone}|{phone_regions[0]}", phone_regions)
                if r.phone
                else None
                for r in requests
            ],
        },
        schema={"request_id": pl.String, "email_key": pl.String, "phone": pl.String},
    )


def unattributed_records(conn: duckdb.DuckDBPyConnection, taken: pl.DataFrame) -> pl.DataFrame:
    """``request_id, source, source_record_id`` of the records in no customer that carry an
    email or phone of the records a request takes (``taken``: ``request_id, record_key``). The
    resolver leaves a record unlinked when it names no one and several customers hold its only
    identifier (a consent event on a family inbox): it may be the requester's or a family
    member's. The request cannot tell; a steward can."""
    conn.register("taken_records", taken.select("request_id", "record_key").to_arrow())
    try:
        return conn.sql(
            "with held as (select distinct t.request_id, p.email_norm, p.phone_e164 "
            "from taken_records t join identity.person_records p using (record_key)), "
            "carrying as ("
            "select h.request_id, p.record_key from held h "
            "join identity.person_records p on p.email_norm = h.email_norm "
            "union "
            "select h.request_id, p.record_key from held h "
            "join identity.person_records p on p.phone_e164 = h.phone_e164) "
            "select distinct c.request_id, x.source, x.source_record_id from carrying c "
            "join mart.customer_xref x using (record_key) where x.customer_id is null "
            "order by all"
        ).pl()
    finally:
        conn.unregister("taken_records")


def _verify_names(
    conn: duckdb.DuckDBPyConnection, found: pl.DataFrame, names: dict[str, str | None]
) -> pl.DataFrame:
    """Keep a customer for a request that gives a name only if one of the customer's records
    carries that name (surname alike, first name alike or a nickname of it, typos allowed), or
    none carries a name at all.
    A household phone or inbox held in the warehouse only by the requester's partner must not
    erase the partner. Dropped customers leave the request with ``customer_id`` null and
    ``name_mismatch`` true (a steward decides)."""
    found = found.with_columns(name_mismatch=pl.lit(False))
    named = {r: split_full_name(n) for r, n in names.items() if n and n.strip()}
    candidates = found.filter(
        pl.col("request_id").is_in(list(named)) & pl.col("customer_id").is_not_null()
    )
    if candidates.height == 0:
        return found
    records = conn.execute(
        "select x.customer_id, p.first_name_key, p.first_name_group, p.last_name_key "
        "from identity.person_records p join mart.customer_xref x using (record_key) "
        "where x.customer_id in (select unnest($ids))",
        {"ids": candidates["customer_id"].unique().to_list()},
    ).fetchall()
    held: dict[str, list[tuple]] = {}
    for customer_id, *name in records:
        held.setdefault(customer_id, []).append(tuple(name))
    # A customer whose records carry no name at all (an email-only survey answer) cannot
    # contradict the name: the identifier is all there is to go by.
    rejected = {
        (request_id, customer_id)
        for request_id, customer_id in candidates.select("request_id", "customer_id").iter_rows()
        if any(first or last for first, _, last in held.get(customer_id, []))
        and not any(_same_name(named[request_id], n) for n in held.get(customer_id, []))
    }
    if not rejected:
        return found
    keep = pl.struct("request_id", "customer_id").map_elements(
        lambda r: (r["request_id"], r["customer_id"]) not in rejected, return_dtype=pl.Boolean
    )
    found = found.with_columns(name_mismatch=~keep)
    kept = found.filter(~pl.col("name_mismatch"))
    lost = (
        found.filter(pl.col("name_mismatch"))
        .select("request_id")
        .unique()
        .filter(~pl.col("request_id").is_in(kept["request_id"].implode()))
        .with_columns(customer_id=pl.lit(None, pl.String), name_mismatch=pl.lit(True))
    )
    return pl.concat([kept, lost], how="diagonal")


def _seeds_of_that_name(
    conn: duckdb.DuckDBPyConnection, found: pl.DataFrame, names: dict[str, str | None]
) -> pl.DataFrame:
    """Drop from a named request's ``seed_keys`` the records that carry its email or phone under
    another first name: a partner's sign-up on the family inbox is not the requester's because
    the request gives that inbox. The customer stays matched through its other seeds."""
    firsts = {r: name_key(split_full_name(n)[0]) for r, n in names.items() if n and n.strip()}
    firsts = {r: f for r, f in firsts.items() if f}
    seeds = found.filter(pl.col("request_id").is_in(list(firsts))).select(
        "request_id", "customer_id", pl.col("seed_keys").alias("record_key")
    )
    seeds = seeds.explode("record_key").drop_nulls("record_key")
    if seeds.height == 0:
        return found
    named = conn.execute(
        "select record_key, first_name_key, first_name_group from identity.person_records "
        "where record_key in (select unnest($keys)) and first_name_key is not null",
        {"keys": seeds["record_key"].unique().to_list()},
    ).fetchall()
    first_of = {key: (first, group) for key, first, group in named}
    other = {
        (request_id, key)
        for request_id, key in seeds.select("request_id", "record_key").iter_rows()
        if key in first_of and not _first_names_alike(firsts[request_id], *first_of[key])
    }
    if not other:
        return found
    dropped = pl.DataFrame(list(other), schema=["request_id", "record_key"], orient="row")
    kept = (
        seeds.join(dropped, on=["request_id", "record_key"], how="anti")
        .group_by("request_id", "customer_id")
        .agg(kept="record_key")
    )
    touched = pl.col("request_id").is_in(dropped["request_id"].unique().implode())
    # A customer left with no seed stays matched (its records carry the name); a privacy
    # action then finds none of its records certain, and a steward decides.
    return (
        found.join(kept, on=["request_id", "customer_id"], how="left")
        .with_columns(seed_keys=pl.when(touched).then("kept").otherwise("seed_keys"))
        .drop("kept")
    )


def _same_name(requested: tuple[str | None, str | None], held: tuple) -> bool:
    first, last = (name_key(part) for part in requested)
    held_first, held_group, held_last = held
    if not last or not held_last:
        return False
    if JaroWinkler.similarity(last.replace(" ", ""), held_last) < 0.9:
        return False
    if not first or not held_first:
        return True  # the surname is all either side gives
    return _first_names_alike(first, held_first, held_group)


def _first_names_alike(first: str, held_first: str, held_group: str | None) -> bool:
    """The same first name, a nickname of it, a typo of it, or its initial."""
    return (
        first_name_group(first) == held_group
        or same_first_name(first, held_first)
        or JaroWinkler.similarity(first, held_first) >= 0.88
        or (len(first) == 1 and held_first.startswith(first))
    )


def _email_key(raw: str | None, exact: bool = False) -> str | None:
    email = standardise_email(raw) if raw else None
    return email if exact or not email else email_match_key(email)


def name_mismatches(matches: pl.DataFrame) -> set[str]:
    return set(matches.filter(pl.col("name_mismatch"))["request_id"])


def requesters_records(
    conn: duckdb.DuckDBPyConnection, matches: pl.DataFrame, min_link_probability: float
) -> pl.DataFrame:
    """``request_id, customer_id, record_key, source, source_record_id, certain`` for every
    record of the customers in ``matches`` (from ``match_requests``). A record is ``certain``
    when a chain of links, each at least ``min_link_probability`` probable (or a steward's
    must-link), joins it to one of the request's ``seed_keys``. An erasure or an access export
    takes the certain records only: the customer may hold a record joined by a weaker link
    (linking can afford a doubt that handing out or deleting a person's data cannot), which a
    steward then decides. A link that the first names speak against (the model weighs their
    agreement level as evidence of two people: different names, or names only loosely alike,
    Brett and Brigitte) does not count either, however probable: what it rests on (surname,
    address, inbox, phone) a household shares. Read by key: only the matched customers' rows
    and pairs."""
    matched = matches.filter(pl.col("customer_id").is_not_null())
    schema = {
        "request_id": pl.String,
        "customer_id": pl.String,
        "record_key": pl.String,
        "source": pl.String,
        "source_record_id": pl.String,
        "certain": pl.Boolean,
    }
    if matched.height == 0:
        return pl.DataFrame(schema=schema)
    members = conn.sql(
        "select customer_id, record_key, source, source_record_id, profile_id "
        "from mart.customer_xref where customer_id in (select unnest($ids))",
        params={"ids": sorted(set(matched["customer_id"]))},
    ).pl()
    profiles = sorted(set(members["profile_id"].drop_nulls()))
    edges = conn.execute(
        "select cast(profile_id_l as varchar), cast(profile_id_r as varchar) "
        "from identity.match_pairs where linked "
        "and (must_link or match_probability >= $p "
        "and coalesce(first_name_key_weight, 0) >= 0) "
        "and profile_id_l in (select unnest($ids)) and profile_id_r in (select unnest($ids))",
        {"p": min_link_probability, "ids": profiles},
    ).fetchall()
    # A record is a node through its profile (records of one profile are identical in identity).
    node = pl.coalesce(pl.col("profile_id").cast(pl.String), pl.col("record_key"))
    members = members.with_columns(node=node)
    group = _components(members["node"].to_list(), edges)
    members = members.with_columns(
        group=pl.col("node").replace_strict(group, return_dtype=pl.Int64)
    )
    seeds = (
        matched.select("request_id", "customer_id", pl.col("seed_keys").alias("record_key"))
        .explode("record_key")
        .join(members.select("record_key", "group"), on="record_key")
        .select("request_id", "group")
        .unique()
    )
    requested = matched.select("request_id", "customer_id").unique()
    return (
        requested.join(members, on="customer_id")
        .join(seeds.with_columns(certain=pl.lit(True)), on=["request_id", "group"], how="left")
        .with_columns(pl.col("certain").fill_null(False))
        .select(*schema)
        .cast(schema)
    )


def _components(nodes: list[str], edges: list[tuple[str, str]]) -> dict[str, int]:
    """node -> its connected component's label, through ``edges``."""
    index = {n: i for i, n in enumerate(dict.fromkeys(nodes))}
    pairs = np.array(
        [(index[a], index[b]) for a, b in edges if a in index and b in index], dtype=np.int64
    ).reshape(-1, 2)
    labels = connected_component_labels(
        np.arange(len(index), dtype=np.int64), pairs[:, 0], pairs[:, 1]
    )
    return {n: int(labels[i]) for n, i in index.items()}
