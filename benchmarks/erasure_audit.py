"""Erasure against the generator's truth: no record of a person who made no request is deleted
or anonymised, and mart.customers never holds a customer without records, night after night.

    .venv/bin/python benchmarks/erasure_audit.py --people 200000

Generates the demo data at N people and runs two warehouses on it: one whose landing folder has
the privacy requests (two nights), one without them (the baseline). Every raw row of a record
whose person made no request must be in the first exactly as in the baseline, after each night.
Prints the rows that differ by source (0 is the bar), the requesters' records erased and left (by
what the data hold of those left: ``why_left``), and the mart's customers without records;
figures go to benchmarks/out/erasure_<people>.json too.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from datetime import datetime, timedelta
from pathlib import Path

import duckdb
import polars as pl

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench import run_pipeline  # noqa: E402

from cdm_pipeline.demo.generator import generate  # noqa: E402
from cdm_pipeline.locations import PACKAGE_DATA  # noqa: E402
from cdm_pipeline.registry import load_registry  # noqa: E402

VOLATILE = ("_loaded_at", "_run_id")
KEY = {"record_key": pl.String}
ROW = ["source", "source_file", "row_number"]


def owners(records: pl.DataFrame) -> pl.DataFrame:
    """One truth row per record key: the one that landed. The demo plants rows that repeat
    another person's record id; they are quarantined as duplicates, so a record key in the
    warehouse is the other row's (matching by key alone would credit it to the planted one)."""
    return records.sort("planted_bad").unique("record_key", keep="first", maintain_order=True)


def raw_rows(warehouse: Path, rows: pl.DataFrame) -> pl.DataFrame:
    """``source, source_file, row_number, record_key, row_hash`` of the given landed rows, found
    by file and row number (two people's rows may share a record id: the demo plants duplicate
    order ids; a row planted without an id has none)."""
    sources = load_registry(PACKAGE_DATA / "sources.yaml")
    frames = []
    with duckdb.connect(str(warehouse), read_only=True) as conn:
        for source in sources.values():
            if source.role == "privacy_request":
                continue
            conn.register(
                "wanted",
                rows.filter(pl.col("source") == source.name)
                .select("source_file", "row_number", "record_key")
                .to_arrow(),
            )
            frames.append(
                conn.sql(
                    f"select '{source.name}' as source, w.source_file, w.row_number, w.record_key, "
                    f"md5(to_json(r)::varchar) as row_hash from (select * "
                    f"exclude ({', '.join(VOLATILE)}) from raw.{source.name}) r join wanted w "
                    "on r._source_file = w.source_file and r._row_number = w.row_number"
                ).pl()
            )
            conn.unregister("wanted")
    return pl.concat(frames)


def expired_by_retention(warehouse: Path, rows: pl.DataFrame, at: datetime) -> pl.DataFrame:
    """Those of ``rows`` (``source, source_file, row_number``, staged in the baseline) whose
    event is older than their source's ``retention_days`` at ``at``: a night that starts later
    than the baseline's purges them by retention, whatever was erased."""
    sources = load_registry(PACKAGE_DATA / "sources.yaml")
    frames = [rows.clear().select(ROW)]
    with duckdb.connect(str(warehouse), read_only=True) as conn:
        for source in sources.values():
            if not source.retention_days:
                continue
            conn.register("wanted", rows.filter(pl.col("source") == source.name).to_arrow())
            found = conn.execute(
                f"select '{source.name}', w.source_file, w.row_number "
                f"from staging.{source.name} s join wanted w on s._source_file = "
                "w.source_file and s._row_number = w.row_number "
                f"where try_cast(s.{source.event_at} as timestamp) < ?",
                [at - timedelta(days=source.retention_days)],
            ).fetchall()
            frames.append(pl.DataFrame(found, schema=frames[0].schema, orient="row"))
            conn.unregister("wanted")
    return pl.concat(frames)


def customer_of(warehouse: Path) -> pl.DataFrame:
    with duckdb.connect(str(warehouse), read_only=True) as conn:
        return conn.sql("select record_key, customer_id from mart.customer_xref").pl()


def customers_without_records(warehouse: Path) -> int:
    with duckdb.connect(str(warehouse), read_only=True) as conn:
        return conn.execute(
            "select count(*) from mart.customers c where not exists "
            "(select 1 from mart.customer_xref x where x.customer_id = c.customer_id)"
        ).fetchall()[0][0]


def identity_of(warehouse: Path) -> pl.DataFrame:
    """Every resolved record's customer, profile and identity values."""
    with duckdb.connect(str(warehouse), read_only=True) as conn:
        return conn.sql(
            "select p.record_key, x.customer_id, x.profile_id, p.first_name_key, "
            "p.last_name_key, p.birth_date, p.street_key, p.postal_code, p.email_norm, "
            "p.phone_e164 from identity.person_records p "
            "left join mart.customer_xref x using (record_key)"
        ).pl()


def why_merged(warehouse: Path, changed: pl.DataFrame, records: pl.DataFrame) -> dict[str, int]:
    """Each changed bystander record, by what the data holds against its merge (computed from the
    baseline warehouse and the truth):

    - ``identical_to_a_requester_record``: the record is one resolver profile with a record of
      the requester it was merged with (equal in every identity field the data gives): whatever
      a rule decides from the data, it decides for both, and erasure must take the requester's;
    - ``nothing_separates``: the record has no name or the name of the person it was merged
      with, each email or phone it carries is one that person's records hold, and no record of
      its own person elsewhere shares one: every value it carries points to the requester;
    - ``other``: the data held evidence of another person (a name or contact of its own);
    - ``unlinked``: the record is in no customer (scrubbing removed a copy of an erased value)."""
    person = owners(records).select("record_key", "person_id", "requester")
    identity = identity_of(warehouse).join(person, on="record_key", how="left")
    classes = ("identical_to_a_requester_record", "nothing_separates", "other", "unlinked")
    counts = dict.fromkeys(classes, 0)
    wanted = changed.select("record_key").unique().drop_nulls()
    for row in identity.join(wanted, on="record_key").iter_rows(named=True):
        if row["customer_id"] is None:  # in no customer: touched by scrubbing, not by a merge
            counts["unlinked"] += 1
            continue
        merged_with = identity.filter(
            (pl.col("customer_id") == row["customer_id"])
            & (pl.col("person_id") != row["person_id"])
        )
        twins = merged_with.filter(
            pl.col("requester") & (pl.col("profile_id") == row["profile_id"])
        )
        if twins.height:
            counts["identical_to_a_requester_record"] += 1
            continue
        own_elsewhere = identity.filter(
            (pl.col("person_id") == row["person_id"])
            & (pl.col("customer_id").ne_missing(row["customer_id"]))
        )
        contacts = [(c, row[c]) for c in ("email_norm", "phone_e164") if row[c] is not None]
        points_to_them = all(
            merged_with.filter(pl.col(c) == value).height > 0 for c, value in contacts
        )
        shared_elsewhere = any(
            own_elsewhere.filter(pl.col(c) == value).height > 0 for c, value in contacts
        )
        nameless = row["first_name_key"] is None and row["last_name_key"] is None
        namesake = (
            merged_with.filter(
                pl.col("first_name_key").eq_missing(row["first_name_key"])
                & pl.col("last_name_key").eq_missing(row["last_name_key"])
            ).height
            > 0
        )
        separable = not (nameless or namesake) or not points_to_them or shared_elsewhere
        counts["other" if separable else "nothing_separates"] += 1
    return counts


def why_left(warehouse: Path, left: pl.DataFrame, erased: pl.DataFrame, held: set[str]) -> dict:
    """Each requester's record left as it landed, by what the baseline warehouse holds of it
    (``left``, ``erased``: ``record_key, person_id`` of the served requesters' rows left and
    gone):

    - ``held_for_steward``: listed in ``governance.erasure_held_records``;
    - ``quarantined``: rejected at validation and not found by the erasure's quarantine match;
    - ``in_no_customer``: the resolver left it unlinked (a nameless record on a shared value);
    - ``shares_no_value``: no email, phone or name in common with the requester's erased records;
    - ``shares_name_only``: their first and last name, nothing else they hold;
    - ``shares_more``: an email or phone, or the name with a birth date, street or postcode of
      theirs: evidence the resolver had and did not link on."""
    identity = identity_of(warehouse)
    strong = [("email_norm",), ("phone_e164",)] + [
        ("first_name_key", "last_name_key", c) for c in ("birth_date", "street_key", "postal_code")
    ]
    classes = ("held_for_steward", "quarantined", "in_no_customer", "shares_no_value")
    counts = dict.fromkeys((*classes, "shares_name_only", "shares_more"), 0)
    gone = erased.join(identity, on="record_key")
    resolved = set(identity["record_key"])
    for row in left.join(identity, on="record_key", how="left").iter_rows(named=True):
        theirs = gone.filter(pl.col("person_id") == row["person_id"])

        if row["record_key"] in held:
            counts["held_for_steward"] += 1
        elif row["record_key"] not in resolved:
            counts["quarantined"] += 1
        elif row["customer_id"] is None:
            counts["in_no_customer"] += 1
        elif any(_shares(row, theirs, keys) for keys in strong):
            counts["shares_more"] += 1
        elif _shares(row, theirs, ("first_name_key", "last_name_key")):
            counts["shares_name_only"] += 1
        else:
            counts["shares_no_value"] += 1
    return counts


def _shares(row: dict, records: pl.DataFrame, keys: tuple[str, ...]) -> bool:
    """Whether one of ``records`` holds the row's values of all ``keys``."""
    if any(row[k] is None for k in keys):
        return False
    return records.filter(pl.all_horizontal(pl.col(k) == row[k] for k in keys)).height > 0


def served_erasures(warehouse: Path, request_of: pl.DataFrame) -> pl.Series:
    """The people (truth ids) whose erasure request the log says was carried out."""
    with duckdb.connect(str(warehouse), read_only=True) as conn:
        done = conn.sql(
            "select request_id from governance.privacy_request_log "
            "where request_type = 'erasure' and status = 'erased'"
        ).pl()
    return request_of.join(done, on="request_id")["person_id"].unique()


def held_records(warehouse: Path, table: str) -> pl.DataFrame:
    """``request_id, record_key`` of a governance table of held records (none before one exists)."""
    with duckdb.connect(str(warehouse), read_only=True) as conn:
        exists = conn.execute(
            "select count(*) from information_schema.tables "
            "where table_schema = 'governance' and table_name = ?",
            [table],
        ).fetchall()[0][0]
        if not exists:
            return pl.DataFrame(schema={"request_id": pl.String, "record_key": pl.String})
        return conn.sql(
            "select request_id, source || ':' || source_record_id as record_key "
            f"from governance.{table}"
        ).pl()


def access_documents(settings, request_of: pl.DataFrame, records: pl.DataFrame) -> dict:
    """Tonight's subject-access documents against the truth: documents listing a record of
    anyone but the requester, and the records held back for a steward, by whose they are."""
    folder = settings.exports_dir / "subject_access"
    row_owner = {
        (source, file, row): person
        for source, file, row, person in records.select(
            "source", "source_file", "row_number", "person_id"
        ).iter_rows()
    }
    owner = dict(owners(records).select("record_key", "person_id").iter_rows())
    requester = dict(request_of.iter_rows())
    foreign_documents = listed = 0
    foreign: list[str] = []
    for path in sorted(folder.glob("*.json")) if folder.exists() else []:
        document = json.loads(path.read_text(encoding="utf-8"))
        person = requester.get(path.stem)
        keys = [f"{r['source']}:{r['record_id']}" for r in document["source_records"]]
        rows = [
            (r["source"], r["came_from"]["file"], r["came_from"]["row_number"])
            for r in document["source_records"]
        ]
        theirs = [k for k, row in zip(keys, rows, strict=True) if row_owner.get(row) != person]
        listed += len(keys)
        foreign += theirs
        foreign_documents += bool(theirs)
    held = held_records(settings.warehouse_path, "access_held_records")
    held = held.join(request_of, on="request_id").with_columns(
        own=pl.col("record_key").replace_strict(owner, default=None) == pl.col("person_id")
    )
    return {
        "documents": len(list(folder.glob("*.json"))) if folder.exists() else 0,
        "records_listed": listed,
        "documents_with_another_persons_record": foreign_documents,
        "another_persons_records_listed": len(foreign),
        # The same classes as erasure's bystanders: what the data hold against the merge.
        "another_persons_records_by_evidence": why_merged(
            settings.warehouse_path, pl.DataFrame({"record_key": foreign}, schema=KEY), records
        ),
        "held_for_steward_requesters_own": int(held["own"].sum()),
        "held_for_steward_another_persons": int((~held["own"]).sum()),
    }


def erasure_held(warehouse: Path, request_of: pl.DataFrame, records: pl.DataFrame) -> dict:
    """Records erasures held back for a steward (weaker links), by whose they are."""
    held = held_records(warehouse, "erasure_held_records")
    owner = owners(records).select("record_key", owner="person_id")
    held = held.join(request_of, on="request_id").join(owner, on="record_key", how="left")
    own = held.filter(pl.col("owner") == pl.col("person_id")).height
    return {"requesters_own": own, "another_persons": held.height - own}


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--people", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--keep", action="store_true", help="keep the warehouses to look into")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="cdm-erasure-audit-"))
    paths = generate(people=args.people, seed=args.seed, out=work / "with", days=2)
    baseline_landing = work / "without" / "landing"
    shutil.copytree(paths.landing, baseline_landing)
    for request_file in (baseline_landing / "privacy_requests").glob("*"):
        request_file.unlink()
    truth = pl.read_parquet(paths.truth / "records.parquet")
    requesters = set(truth.filter(pl.col("source") == "privacy_requests")["person_id"])
    records = truth.filter(pl.col("source") != "privacy_requests").with_columns(
        record_key=pl.col("source") + ":" + pl.col("record_id"),
        requester=pl.col("person_id").is_in(list(requesters)),
    )
    row_keys = ("source", "source_file", "row_number", "record_key")
    bystanders = records.filter(~pl.col("requester")).select(row_keys)
    asked = records.filter(pl.col("requester")).select(row_keys)

    figures: dict = {"people": args.people, "requesters": len(requesters)}
    baseline = run_pipeline(work / "without", baseline_landing, figures, label="baseline")
    expected = raw_rows(baseline.warehouse_path, bystanders)
    asked_before = raw_rows(baseline.warehouse_path, asked)
    request_of = truth.filter(pl.col("source") == "privacy_requests").select(
        request_id="record_id", person_id="person_id"
    )
    # Whom the resolver put together with a requester (a wrong merge erases a bystander too).
    linked = customer_of(baseline.warehouse_path).join(
        owners(records).select("record_key", "requester"), on="record_key"
    )
    with_requester = set(
        linked.filter(
            pl.col("requester").any().over("customer_id") & pl.col("customer_id").is_not_null()
        )["record_key"]
    )
    for night in (1, 2):
        label = f"night_{night}"
        settings = run_pipeline(work / "with", paths.landing, figures, label=label)
        ended = datetime.now()  # the night's retention ran before this
        got = raw_rows(settings.warehouse_path, bystanders)
        changed = expected.join(
            got, on=["source", "source_file", "row_number", "row_hash"], how="anti"
        )
        # The baseline ran earlier: a row whose retention ran out in between is not erasure's.
        expired = expired_by_retention(baseline.warehouse_path, changed.select(ROW), ended)
        changed = changed.join(expired, on=ROW, how="anti")
        asked_now = raw_rows(settings.warehouse_path, asked)
        # Rows of people whose erasure was carried out that are still there as they landed:
        # records the resolver did not link to the customer their request matched.
        served = served_erasures(settings.warehouse_path, request_of)
        left_intact = asked_now.join(
            asked_before, on=["source", "source_file", "row_number", "row_hash"], how="semi"
        ).join(records.select(*ROW, "person_id"), on=ROW)
        left_intact = left_intact.filter(pl.col("person_id").is_in(served.implode()))
        erased_rows = (
            asked_before.join(
                asked_now, on=["source", "source_file", "row_number", "row_hash"], how="anti"
            )
            .join(records.select(*ROW, "person_id"), on=ROW)
            .filter(pl.col("person_id").is_in(served.implode()))
        )
        figures[label].update(
            {
                "bystander_rows_deleted_or_changed": changed.height,
                "bystander_rows_expired_by_retention_since_the_baseline": expired.height,
                "by_source": dict(changed.group_by("source").len().iter_rows()),
                "of_which_merged_with_a_requester": changed.filter(
                    pl.col("record_key").is_in(list(with_requester))
                )["record_key"].n_unique(),
                "changed_records": changed["record_key"].n_unique(),
                "changed_records_by_evidence": why_merged(
                    baseline.warehouse_path, changed, records
                ),
                "requester_raw_rows_left": asked_now.height,
                "served_erasure_requesters": served.len(),
                "their_rows_landed": asked_before.join(records.select(*ROW, "person_id"), on=ROW)
                .filter(pl.col("person_id").is_in(served.implode()))
                .height,
                "their_rows_left_intact": left_intact.height,
                "their_rows_left_intact_by_source": dict(
                    left_intact.group_by("source").len().iter_rows()
                ),
                "their_rows_left_intact_by_evidence": why_left(
                    baseline.warehouse_path,
                    left_intact.select("record_key", "person_id"),
                    erased_rows.select("record_key", "person_id"),
                    set(
                        held_records(settings.warehouse_path, "erasure_held_records")["record_key"]
                    ),
                ),
                "customers_without_records": customers_without_records(settings.warehouse_path),
                "erasure_held_for_steward": erasure_held(
                    settings.warehouse_path, request_of, records
                ),
                "access": access_documents(settings, request_of, records),
            }
        )
    with duckdb.connect(str(settings.warehouse_path), read_only=True) as conn:
        figures["privacy_request_log"] = dict(
            conn.execute(
                "select status, count(*) from governance.privacy_request_log group by 1"
            ).fetchall()
        )
    out = ROOT / "benchmarks" / "out" / f"erasure_{args.people}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(figures, indent=2, default=str))
    print(json.dumps(figures, indent=2, default=str))
    if args.keep:
        print(f"kept {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)
    bad = sum(figures[f"night_{n}"]["bystander_rows_deleted_or_changed"] for n in (1, 2))
    bad += sum(figures[f"night_{n}"]["customers_without_records"] for n in (1, 2))
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
