"""The requesters' quarantined rows: erasure must reach rows the resolver never saw.

A row that failed its contract (a broken email, an impossible birth date) is kept in quarantine
as it landed, and is linked to no customer. It is read back as identity columns, standardised as
the resolver's records are, and compared with the erased records by name and what else agrees.
"""

from __future__ import annotations

import duckdb
import polars as pl

from cdm_pipeline.registry import SourceSpec
from cdm_pipeline.standardise.fields import name_key
from cdm_pipeline.standardise.load import canonical_quarantined_records
from cdm_pipeline.standardise.records import standardise_records

QUARANTINE_EVIDENCE = (
    ("email_norm",),
    ("phone_e164",),
    ("street_key", "postal_code"),
    ("birth_date",),
)


def quarantined_rows_of(
    conn: duckdb.DuckDBPyConnection,
    records: pl.DataFrame,
    sources: dict[str, SourceSpec],
    standardise_settings: dict,
) -> pl.DataFrame:
    """Quarantined rows that are the customers' whose person ``records`` (``customer_id`` and
    ``identity.person_records`` columns) are given, though the resolver never saw them (a second
    order with a broken email, a CRM row with an impossible birth date): ``source, file_sha256,
    row_number, record_key, source_record_id, first_name, last_name, customer_id``. Erasure
    takes them; an access request shows them.

    A row is a customer's when it carries the name of one of their ``records`` (the same
    surname, the same first name or one of its nicknames) and agrees with that record on more
    of email, phone, street with postcode and birth date than with any other customer's record
    that carries the same name: a namesake at the same address keeps the row. A row without a
    name is left to the scrub of suppressed emails and phones. Rows are told apart by file and
    line, not by record id: two people's rows may share one (a duplicate id is one reason for
    quarantine)."""
    empty = pl.DataFrame(
        schema={
            "source": pl.String,
            "file_sha256": pl.String,
            "row_number": pl.Int64,
            "record_key": pl.String,
            "source_record_id": pl.String,
            "first_name": pl.String,
            "last_name": pl.String,
            "customer_id": pl.String,
        }
    )
    landed = _naming(canonical_quarantined_records(conn, sources), records["last_name_key"])
    if landed.height == 0:
        return empty
    rows = standardise_records(
        landed.drop("file_sha256", "row_number"),
        standardise_settings["default_country"],
        tuple(standardise_settings["phone_regions"]),
    ).hstack(landed.select("file_sha256", "row_number", row=pl.int_range(landed.height)))
    rows = rows.filter(
        pl.col("first_name_key").is_not_null() & pl.col("last_name_key").is_not_null()
    )
    # A row kept under the id of one of the records is that record's (erasure takes it with it).
    rows = rows.join(records.select("record_key"), on="record_key", how="anti")
    if rows.height == 0:
        return empty
    evidence = [c for columns in QUARANTINE_EVIDENCE for c in columns]
    named = ["last_name_key", "first_name_key", "first_name_group"]
    mine = _agreement(rows, records.select("customer_id", *named, *evidence))
    if mine.height == 0:
        return empty
    # Only rows that carry a requester's name and share evidence with one are weighed against
    # the namesakes: the rest of the quarantine is not read again (it is most of it).
    rows = rows.join(mine.select("row").unique(), on="row", how="semi")
    others = conn.sql(
        f"select x.customer_id, {', '.join('p.' + c for c in (*named, *evidence))} "
        "from identity.person_records p join mart.customer_xref x using (record_key) "
        "where x.customer_id is not null and x.customer_id not in (select unnest($ids)) "
        "and p.last_name_key in (select unnest($names))",
        params={
            "ids": records["customer_id"].unique().to_list(),
            "names": rows["last_name_key"].unique().to_list(),
        },
    ).pl()
    theirs = _agreement(rows, others)
    best = mine.sort("agree", descending=True, maintain_order=True).unique("row", keep="first")
    best = best.join(
        theirs.group_by("row").agg(pl.col("agree").max().alias("others")), on="row", how="left"
    ).filter(pl.col("agree") > pl.col("others").fill_null(0))
    return rows.join(best.select("row", "customer_id"), on="row").select(empty.columns)


def _naming(landed: pl.DataFrame, surnames: pl.Series) -> pl.DataFrame:
    """The landed rows whose names hold one of ``surnames`` (name keys) as whole words: only
    they can carry a requester's surname once standardised, so only they are standardised (a
    quarantine of 50,000 rows at a million people, not one of which is the requester's)."""
    wanted = set(surnames.drop_nulls().unique())
    if landed.height == 0 or not wanted:
        return landed.clear()
    longest = max(len(s.split()) for s in wanted)
    names = [c for c in ("first_name", "last_name", "full_name") if c in landed.columns]
    text = pl.concat_str([pl.col(c).fill_null("") for c in names], separator=" ")
    holds = text.map_elements(
        lambda t: not wanted.isdisjoint(_word_runs(name_key(t), longest)), return_dtype=pl.Boolean
    )
    return landed.filter(holds)


def _word_runs(text: str | None, longest: int) -> set[str]:
    """Every run of up to ``longest`` consecutive words of ``text``."""
    words = (text or "").split()
    return {
        " ".join(words[i : i + n]) for n in range(1, longest + 1) for i in range(len(words) - n + 1)
    }


def _agreement(rows: pl.DataFrame, candidates: pl.DataFrame) -> pl.DataFrame:
    """``row, customer_id, agree``: each quarantined row against each candidate record of its
    name, with how many kinds of evidence they share (only pairs sharing one)."""
    pairs = rows.join(candidates, on="last_name_key", suffix="_c").filter(
        (pl.col("first_name_key") == pl.col("first_name_key_c"))
        | (pl.col("first_name_group") == pl.col("first_name_group_c"))
    )
    agree = pl.sum_horizontal(
        pl.all_horizontal(pl.col(c).eq(pl.col(f"{c}_c")).fill_null(False) for c in columns).cast(
            pl.Int32
        )
        for columns in QUARANTINE_EVIDENCE
    )
    return pairs.select("row", "customer_id", agree=agree).filter(pl.col("agree") > 0)
