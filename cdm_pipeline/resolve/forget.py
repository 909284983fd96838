"""The resolver's side of erasure: forgetting records and customers without editing its state
from outside. What is forgotten is exactly what the next night's resolution would conclude."""

from __future__ import annotations

from datetime import datetime

import duckdb
import polars as pl

from cdm_pipeline.resolve.engine import blocking_rules
from cdm_pipeline.resolve.incremental import blocks_left_under_limit
from cdm_pipeline.resolve.profiles import DERIVED_KEYS, MATCH_FIELDS
from cdm_pipeline.warehouse import quote_ident, table_exists

UNLINKED = "unlinked: no usable identifier"
HELD = "held: linked to an erased customer below privacy.min_link_probability"


def forget_customers(
    conn: duckdb.DuckDBPyConnection,
    customer_ids: pl.Series,
    records: pl.DataFrame,
    kept_sources: set[str],
    now: datetime,
    run_id: str | None,
    resolve_settings: dict | None,
) -> None:
    """Forget erased customers: their erased records (``record_key, source,
    source_record_id``) leave ``identity.person_records`` (``remove_person_records``), those
    records' profiles lose every identity value, their match pairs go, and each customer id gets
    an ``erased`` history event. Records of ``kept_sources`` (erasure anonymises them) stay in
    ``mart.customer_xref`` linked to no one. A customer's records not in ``records`` (held back
    for a steward) stay, linked to no one until the customers around what was erased are resolved
    again (``store.settle_after_removals``), which gives them a new id."""
    conn.register("_forgotten_customers", customer_ids.to_frame("customer_id").to_arrow())
    conn.register("_forgotten_records", records.to_arrow())
    try:
        profiles = (
            "(select profile_id from mart.customer_xref where profile_id is not null "
            "and record_key in (select record_key from _forgotten_records))"
        )
        if table_exists(conn, "identity", "match_pairs"):
            conn.execute(
                f"delete from identity.match_pairs where profile_id_l in {profiles} "
                f"or profile_id_r in {profiles}"
            )
        forget_profiles(conn, f"profile_id in {profiles}", {}, resolve_settings)
        remove_person_records(
            conn, "record_key in (select record_key from _forgotten_records)", {}, kept_sources
        )
        conn.execute(
            "update mart.customer_xref set customer_id = null, link_method = $held "
            "where customer_id in (select customer_id from _forgotten_customers) "
            "and record_key not in (select record_key from _forgotten_records)",
            {"held": HELD},
        )
        conn.execute(
            "delete from mart.customer_xref where customer_id in "
            "(select customer_id from _forgotten_customers)"
        )
        conn.execute(
            "insert into mart.customer_xref by name select record_key, source, source_record_id, "
            "null as customer_id, null as profile_id, $unlinked as link_method, $now as resolved_at "
            "from _forgotten_records where source in (select unnest($kept))",
            {"now": now, "kept": sorted(kept_sources), "unlinked": UNLINKED},
        )
        conn.execute(
            "insert into identity.customer_id_history by name select 'erased' as event, "
            "customer_id, null as related_customer_id, 0 as record_count, $run as run_id, "
            "$now as event_at from (select distinct customer_id from _forgotten_customers)",
            {"run": run_id, "now": now},
        )
    finally:
        conn.unregister("_forgotten_customers")
        conn.unregister("_forgotten_records")


# What a person record keeps when its source row is anonymised: the record, not the person.
RECORD_COLUMNS = ("record_key", "source", "source_record_id", "trust_rank", "event_at")


def remove_person_records(
    conn: duckdb.DuckDBPyConnection, condition: str, params: dict, kept_sources: set[str]
) -> int:
    """Person records meeting ``condition`` go; those of ``kept_sources`` (anonymised where they
    landed) stay with every identity column emptied, as tomorrow's standardising of the
    anonymised row would make them: the night that erases ends where the next one starts.
    Returns how many changed."""
    columns = [
        name
        for (name,) in conn.execute(
            "select column_name from information_schema.columns "
            "where table_schema = 'identity' and table_name = 'person_records'"
        ).fetchall()
        if name not in RECORD_COLUMNS
    ]
    kept = {**params, "kept": sorted(kept_sources)}
    (blanked,) = conn.execute(
        f"update identity.person_records set {', '.join(f'{quote_ident(c)} = null' for c in columns)} "
        f"where ({condition}) and source in (select unnest($kept))",
        kept,
    ).fetchall()[0]
    (deleted,) = conn.execute(
        f"delete from identity.person_records where ({condition}) "
        "and source not in (select unnest($kept))",
        kept,
    ).fetchall()[0]
    return blanked + deleted


def unlink_orphans(conn: duckdb.DuckDBPyConnection, kept_sources: set[str]) -> int:
    """Cross-reference rows whose person record is gone (scrubbed): unlinked where the source
    row stays anonymised, removed otherwise. Returns how many changed."""
    orphan = "record_key not in (select record_key from identity.person_records)"
    kept = {"kept": sorted(kept_sources)}
    (unlinked,) = conn.execute(
        "update mart.customer_xref set customer_id = null, profile_id = null, "
        f"link_method = $unlinked where {orphan} and customer_id is not null "
        "and source in (select unnest($kept))",
        {**kept, "unlinked": UNLINKED},
    ).fetchall()[0]
    (removed,) = conn.execute(
        f"delete from mart.customer_xref where {orphan} and source not in (select unnest($kept))",
        kept,
    ).fetchall()[0]
    return unlinked + removed


# The resolver's state keeps an erased profile's id and cluster (the next run must know it is
# gone, to re-cluster what it was linked to) but none of its identity.
_BLANK_PROFILE = ", ".join(
    [*(f"{quote_ident(c)} = null" for c in (*MATCH_FIELDS, *DERIVED_KEYS)), "erased = true"]
)


def forget_profiles(
    conn: duckdb.DuckDBPyConnection, where: str, params: dict, resolve_settings: dict | None
) -> int:
    """Blank the identity of the resolver-state profiles matching ``where`` (their ids stay, so
    the next run knows they are gone). Blocks their removal takes back under a size limit are
    marked ``recheck`` first, while their keys are still known."""
    if not table_exists(conn, "identity", "profiles"):
        return 0
    leaving = conn.sql(
        f"select profile_id from identity.profiles where {where}", params=params
    ).pl()
    if leaving.height == 0:
        return 0
    conn.execute(
        "alter table identity.profiles add column if not exists recheck boolean default false"
    )
    if resolve_settings is not None:
        rules = blocking_rules(resolve_settings)
        keys = sorted({c for rule in rules for c in rule.columns})
        profiles = conn.sql(
            f"select profile_id, {', '.join(quote_ident(k) for k in keys)} from identity.profiles"
        ).pl()
        recheck = blocks_left_under_limit(
            profiles, leaving["profile_id"], rules, resolve_settings["max_block_size"]
        )
        if recheck.len():
            conn.register("_recheck", recheck.to_frame("profile_id").to_arrow())
            try:
                conn.execute(
                    "update identity.profiles set recheck = true "
                    "where profile_id in (select profile_id from _recheck)"
                )
            finally:
                conn.unregister("_recheck")
    conn.register("_leaving", leaving.to_arrow())
    try:
        conn.execute(
            f"update identity.profiles set {_BLANK_PROFILE} "
            "where profile_id in (select profile_id from _leaving)"
        )
    finally:
        conn.unregister("_leaving")
    return leaving.height
