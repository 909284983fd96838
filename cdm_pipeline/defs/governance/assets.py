"""Governance assets: retention before resolution; privacy requests (erasure, access), the
pseudonymised analytics views and the analyst database after the mart."""

from datetime import datetime
from pathlib import Path

import dagster as dg
import duckdb
import polars as pl
from dagster_duckdb import DuckDBResource

from cdm_pipeline.defs.golden.assets import CONSENT_LEDGER, CUSTOMERS, FACTS, LINEAGE
from cdm_pipeline.defs.metadata import table_schema
from cdm_pipeline.defs.resources import DUCKDB_TAGS, OWNER, PipelineResource
from cdm_pipeline.governance.access import subject_documents, write_document
from cdm_pipeline.governance.erasure import (
    REQUEST_LOG_DDL,
    erase_customers,
    forget_request_identifiers,
    identifier_hits,
    log_invalid_requests,
    log_request,
    mart_disagreements,
    match_requests,
    open_requests,
    pending_requests,
    scrub_identifiers,
)
from cdm_pipeline.governance.keys import secret_key
from cdm_pipeline.governance.retention import apply_retention
from cdm_pipeline.governance.suppression import ensure_suppression_list
from cdm_pipeline.registry import SourceSpec
from cdm_pipeline.warehouse import audit, quote_ident, sql_text, transaction

RETENTION = dg.AssetKey(["governance", "retention"])
PRIVACY_LOG = dg.AssetKey(["governance", "privacy_request_log"])
SUPPRESSION = dg.AssetKey(["governance", "suppression_list"])
ANALYTICS = dg.AssetKey(["analytics", "views"])
ANALYST_DB = dg.AssetKey(["analytics", "analyst_database"])

RETENTION_CHECK = "nothing_older_than_retention"
ERASURE_COMPLETE_CHECK = "erasure_complete"
STEWARD_QUEUE_CHECK = "requests_waiting_for_a_steward"
SUPPRESSION_CHECK = "suppression_list_has_no_plain_identifiers"
CUSTOMERS_HAVE_RECORDS_CHECK = "every_customer_has_records"
DEADLINE_CHECK = "privacy_requests_past_deadline"
ANALYTICS_PII_CHECK = "no_pii_columns_in_analytics"
ANALYST_DB_PII_CHECK = "no_pii_in_analyst_database"
ANALYTICS_TABLES = ("customers", "orders", "interactions", "survey_responses", "consent_ledger")
PII_COLUMN_NAMES = {
    "first_name",
    "last_name",
    "email",
    "phone",
    "street",
    "unit",
    "birth_date",
    "full_name",
    "customer_id",
    "latest_survey_comment",
    "comment",
    "postal_code",
}


def retention_asset(sources: dict[str, SourceSpec]) -> dg.AssetsDefinition:
    @dg.asset(
        op_tags=DUCKDB_TAGS,
        key=RETENTION,
        deps=[dg.AssetKey(["staging", name]) for name in sources],
        group_name="governance",
        owners=[OWNER],
        kinds={"duckdb"},
        description="Purges rows older than each source's retention period (sources.yaml retention_days) from raw "
        "and staging, and quarantine rows older than retention.quarantine_days. Counts go to the audit log.",
        check_specs=[
            dg.AssetCheckSpec(
                RETENTION_CHECK,
                asset=RETENTION,
                blocking=True,
                description="No staged row is older than its source's retention period.",
            )
        ],
    )
    def _retention(
        context: dg.AssetExecutionContext, warehouse: DuckDBResource, pipeline: PipelineResource
    ):
        config = pipeline.config()
        now = datetime.now()
        with warehouse.get_connection() as conn, transaction(conn):
            purged = apply_retention(conn, sources, config["retention"], now)
            for table, rows in purged.items():
                audit(conn, context.run.run_id, "purged", table, rows, "retention")
            leftover = sum(apply_retention(conn, sources, config["retention"], now).values())
        return dg.MaterializeResult(
            metadata={
                "rows_purged": sum(purged.values()),
                "by_table": dg.MetadataValue.json(purged),
            },
            check_results=[
                dg.AssetCheckResult(
                    check_name=RETENTION_CHECK,
                    passed=leftover == 0,
                    metadata={"expired_rows_left": leftover},
                )
            ],
        )

    return _retention


def _steward_reason(customers_matched: int) -> str:
    """Why a request cannot be served automatically: it is never guessed."""
    return (
        "matches no customer"
        if customers_matched == 0
        else f"matches {customers_matched} customers"
    )


def privacy_assets(sources: dict[str, SourceSpec]) -> dg.AssetsDefinition:
    deps = [CUSTOMERS, LINEAGE, CONSENT_LEDGER, *[dg.AssetKey(["mart", f]) for f in FACTS]]

    @dg.multi_asset(
        op_tags=DUCKDB_TAGS,
        specs=[
            dg.AssetSpec(
                PRIVACY_LOG,
                deps=deps,
                group_name="governance",
                owners=[OWNER],
                kinds={"duckdb"},
                description="One row per privacy request processed: erased, exported (access), or waiting "
                "for a steward with the reason (matched no one / several customers).",
            ),
            dg.AssetSpec(
                SUPPRESSION,
                deps=deps,
                group_name="governance",
                owners=[OWNER],
                kinds={"duckdb"},
                description="Salted hashes of erased people's emails, phones and names. Ingest drops rows "
                "that carry them, so old files cannot bring an erased person back.",
            ),
        ],
        check_specs=[
            dg.AssetCheckSpec(
                ERASURE_COMPLETE_CHECK,
                asset=PRIVACY_LOG,
                blocking=True,
                description="No table in raw, staging, quarantine, identity, mart or analytics holds "
                "an erased email or phone (every text column scanned, JSON included).",
            ),
            dg.AssetCheckSpec(
                CUSTOMERS_HAVE_RECORDS_CHECK,
                asset=PRIVACY_LOG,
                blocking=True,
                description="After erasure, every customer in mart.customers still has source records "
                "in mart.customer_xref, and every linked record's customer is in mart.customers: the "
                "published mart agrees with its records.",
            ),
            dg.AssetCheckSpec(
                STEWARD_QUEUE_CHECK,
                asset=PRIVACY_LOG,
                description="Privacy requests waiting for a steward (no match, several customers, "
                "or invalid): warns while any is open.",
            ),
            dg.AssetCheckSpec(
                DEADLINE_CHECK,
                asset=PRIVACY_LOG,
                description="No privacy request is still open past its legal deadline "
                "(privacy.deadline_days by jurisdiction: GDPR 30, CCPA 45 days).",
            ),
            dg.AssetCheckSpec(
                SUPPRESSION_CHECK,
                asset=SUPPRESSION,
                blocking=True,
                description="The suppression list holds only 64-hex fingerprints.",
            ),
        ],
        can_subset=False,
    )
    def _privacy(
        context: dg.AssetExecutionContext, warehouse: DuckDBResource, pipeline: PipelineResource
    ):
        config = pipeline.config()
        regions = tuple(config["standardise"]["phone_regions"])
        deadlines = config["privacy"]["deadline_days"]
        now = datetime.now()
        run_id = context.run.run_id
        erased = exported = steward = records_affected = 0
        reasons: dict[str, int] = {}
        with warehouse.get_connection() as conn:
            conn.execute(REQUEST_LOG_DDL)
            ensure_suppression_list(conn)
            requests = pending_requests(conn, sources, "erasure")
            if requests:
                matches = match_requests(conn, requests, regions)
                counts = matches.group_by("request_id").agg(
                    pl.col("customer_id").drop_nulls().n_unique().alias("n")
                )
                single = set(counts.filter(pl.col("n") == 1)["request_id"])
                erasures = matches.filter(pl.col("request_id").is_in(list(single)))
                with transaction(conn):
                    removed, anonymised = erase_customers(
                        conn, erasures, sources, now, run_id, config["resolve"]
                    )
                    forget_request_identifiers(
                        conn, [r for r in requests if r.request_id in single], sources
                    )
                    stray = scrub_identifiers(conn, sources, config["resolve"])
                    n_of = dict(counts.iter_rows())
                    for request in requests:
                        n = n_of.get(request.request_id, 0)
                        if n == 1:
                            erased += 1
                            log_request(
                                conn, request, "erased", None, 1, None, now, run_id, deadlines
                            )
                        else:
                            reason = _steward_reason(n)
                            reasons[reason] = reasons.get(reason, 0) + 1
                            steward += 1
                            log_request(
                                conn, request, "needs_steward", reason, n, 0, now, run_id, deadlines
                            )
                    records_affected = removed + anonymised
                    audit(
                        conn,
                        run_id,
                        "erased",
                        "all schemas",
                        records_affected,
                        f"{erased} customers; {stray} stray rows scrubbed",
                    )
            access = pending_requests(conn, sources, "access")
            if access:
                matches = match_requests(conn, access, regions, exact=True)
                holders = (
                    matches.filter(pl.col("customer_id").is_not_null())
                    .group_by("request_id")
                    .agg(pl.col("customer_id").unique())
                )
                holder_of = {r: ids for r, ids in holders.iter_rows()}
                single = {r: ids[0] for r, ids in holder_of.items() if len(ids) == 1}
                documents = subject_documents(conn, list(single.values()), sources)
                for request in access:
                    n = len(holder_of.get(request.request_id, []))
                    if n != 1:
                        reason = _steward_reason(n)
                        reasons[reason] = reasons.get(reason, 0) + 1
                        steward += 1
                        log_request(
                            conn, request, "needs_steward", reason, n, 0, now, run_id, deadlines
                        )
                        continue
                    document = documents[single[request.request_id]]
                    write_document(
                        document,
                        Path(pipeline.exports_dir)
                        / "subject_access"
                        / f"{request.request_id}.json",
                    )
                    exported += 1
                    log_request(
                        conn,
                        request,
                        "exported",
                        None,
                        1,
                        len(document["source_records"]),
                        now,
                        run_id,
                        deadlines,
                    )
                audit(conn, run_id, "exported", "subject access", exported, "documents written")
            hits = identifier_hits(conn)
            if hits:  # a copy that got past ingest and standardisation: remove it, then prove it
                with transaction(conn):
                    stray = scrub_identifiers(conn, sources, config["resolve"])
                    audit(
                        conn, run_id, "scrubbed", "all schemas", stray, "stray erased identifiers"
                    )
                hits = identifier_hits(conn)
            malformed = conn.execute(
                "select count(*) from governance.suppression_list where not regexp_full_match(fingerprint, '[0-9a-f]{64}')"
            ).fetchall()[0][0]
            recordless, missing = mart_disagreements(conn)
            invalid = log_invalid_requests(conn, sources, deadlines, now, run_id)
            waiting, overdue = open_requests(conn, now)
            suppressed = conn.execute(
                "select count(*) from governance.suppression_list"
            ).fetchall()[0][0]
        yield dg.MaterializeResult(
            asset_key=PRIVACY_LOG,
            metadata={
                "customers_erased": erased,
                "records_affected": records_affected,
                "access_exports": exported,
                "waiting_for_steward": steward,
                "reasons": dg.MetadataValue.json(reasons),
            },
        )
        yield dg.MaterializeResult(asset_key=SUPPRESSION, metadata={"fingerprints": suppressed})
        yield dg.AssetCheckResult(
            check_name=ERASURE_COMPLETE_CHECK,
            asset_key=PRIVACY_LOG,
            passed=not hits,
            severity=dg.AssetCheckSeverity.ERROR,
            metadata={
                "columns_with_erased_identifiers": len(hits),
                "where": dg.MetadataValue.json(hits[:10]),
            },
        )
        yield dg.AssetCheckResult(
            check_name=CUSTOMERS_HAVE_RECORDS_CHECK,
            asset_key=PRIVACY_LOG,
            passed=recordless == 0 and missing == 0,
            severity=dg.AssetCheckSeverity.ERROR,
            metadata={
                "customers_without_records": recordless,
                "linked_customers_missing_from_mart": missing,
            },
        )
        yield dg.AssetCheckResult(
            check_name=STEWARD_QUEUE_CHECK,
            asset_key=PRIVACY_LOG,
            passed=waiting == 0,
            severity=dg.AssetCheckSeverity.WARN,
            metadata={
                "open_requests": waiting,
                "new_tonight": steward + invalid,
                "invalid_tonight": invalid,
                "reasons": dg.MetadataValue.json(reasons),
            },
        )
        yield dg.AssetCheckResult(
            check_name=DEADLINE_CHECK,
            asset_key=PRIVACY_LOG,
            passed=overdue == 0,
            severity=dg.AssetCheckSeverity.ERROR,
            metadata={"open_requests": waiting, "past_deadline": overdue},
        )
        yield dg.AssetCheckResult(
            check_name=SUPPRESSION_CHECK,
            asset_key=SUPPRESSION,
            passed=malformed == 0,
            metadata={"fingerprints": suppressed, "malformed": malformed},
        )

    return _privacy


def analytics_assets() -> dg.AssetsDefinition:
    @dg.asset(
        op_tags=DUCKDB_TAGS,
        key=ANALYTICS,
        deps=[PRIVACY_LOG],
        group_name="serve",
        owners=[OWNER],
        kinds={"duckdb", "sql"},
        description="The analytics schema: views over the mart with PII removed and customers pseudonymised "
        "(customer_key = keyed hash of customer_id, stable across runs so joins work).",
        check_specs=[
            dg.AssetCheckSpec(
                ANALYTICS_PII_CHECK,
                asset=ANALYTICS,
                blocking=True,
                description="No analytics view exposes a PII column name.",
            )
        ],
    )
    def _analytics(context: dg.AssetExecutionContext, warehouse: DuckDBResource):
        with warehouse.get_connection() as conn, transaction(conn):
            secret_key(conn)
            conn.execute(sql_text("analytics/views"))
            columns = conn.execute(
                "select table_name, column_name from information_schema.columns where table_schema = 'analytics'"
            ).fetchall()
        exposed = sorted({f"{t}.{c}" for t, c in columns if c in PII_COLUMN_NAMES})
        return dg.MaterializeResult(
            metadata={"views": len({t for t, _ in columns})},
            check_results=[
                dg.AssetCheckResult(
                    check_name=ANALYTICS_PII_CHECK,
                    passed=not exposed,
                    metadata={"pii_columns": dg.MetadataValue.json(exposed)},
                )
            ],
        )

    return _analytics


def export_analyst_database(conn: duckdb.DuckDBPyConnection, target: Path) -> dict[str, int]:
    """Write the analytics views as plain tables into a separate DuckDB file (replaced whole)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    staging_file = target.with_suffix(".tmp.duckdb")
    staging_file.unlink(missing_ok=True)
    conn.execute("attach ? as analyst_export", [str(staging_file)])
    try:
        counts = {}
        for table in ANALYTICS_TABLES:
            conn.execute(
                f"create table analyst_export.{quote_ident(table)} as select * from analytics.{quote_ident(table)}"
            )
            counts[table] = conn.execute(
                f"select count(*) from analyst_export.{quote_ident(table)}"
            ).fetchall()[0][0]
    finally:
        conn.execute("detach analyst_export")
    staging_file.replace(target)
    return counts


def pii_values_in(conn: duckdb.DuckDBPyConnection, analyst_file: Path) -> int:
    """How many text values in the analyst database equal an email, phone, full name or street held
    in the warehouse."""
    conn.execute("attach ? as analyst_check (read_only)", [str(analyst_file)])
    try:
        # Identifying values only: emails, phones, full names and street addresses. A single first
        # or last name is no identifier on its own (and collides with place names: "Chester").
        conn.execute(
            "create or replace temp table pii_values as "
            "select distinct lower(trim(v)) as v from ("
            "select unnest([email, phone, street, first_name || ' ' || last_name]) as v from mart.customers "
            "union all select unnest([email_raw, phone_raw, full_name_raw, email, phone_e164, street_raw, "
            "first_name || ' ' || last_name]) from identity.person_records"
            ") where v is not null and length(v) > 3 "
            # Cities are allowed in the analyst database; Faker-like "West Michael" is a city too.
            "and lower(trim(v)) not in (select lower(trim(city_raw)) from identity.person_records where city_raw is not null)"
        )
        total = 0
        for table, column in conn.execute(
            "select table_name, column_name from information_schema.columns where table_catalog = 'analyst_check' "
            "and data_type = 'VARCHAR'"
        ).fetchall():
            total += conn.execute(
                f"select count(*) from analyst_check.{quote_ident(table)} where lower({quote_ident(column)}) in "
                "(select v from pii_values)"
            ).fetchall()[0][0]
        return total
    finally:
        conn.execute("detach analyst_check")


def analyst_database_asset() -> dg.AssetsDefinition:
    @dg.asset(
        op_tags=DUCKDB_TAGS,
        key=ANALYST_DB,
        deps=[ANALYTICS],
        group_name="serve",
        owners=[OWNER],
        kinds={"duckdb"},
        description="A separate DuckDB file (exports/analyst.duckdb) holding only the pseudonymised analytics "
        "tables, for analysts who must not see PII. DuckDB has no users: the boundary is the file.",
        metadata={
            "dagster/column_schema": table_schema(
                {"customer_key": ("varchar", "pseudonymous customer key")}
            )
        },
        check_specs=[
            dg.AssetCheckSpec(
                ANALYST_DB_PII_CHECK,
                asset=ANALYST_DB,
                blocking=True,
                description="No text value in the analyst database is a name, email, phone or "
                "street held in the warehouse.",
            )
        ],
    )
    def _analyst_db(
        context: dg.AssetExecutionContext, warehouse: DuckDBResource, pipeline: PipelineResource
    ):
        target = Path(pipeline.exports_dir) / "analyst.duckdb"
        with warehouse.get_connection() as conn:
            counts = export_analyst_database(conn, target)
            leaked = pii_values_in(conn, target)
            audit(
                conn,
                context.run.run_id,
                "exported",
                "analyst database",
                sum(counts.values()),
                str(target.name),
            )
        return dg.MaterializeResult(
            metadata={"path": str(target), **{f"rows_{t}": n for t, n in counts.items()}},
            check_results=[
                dg.AssetCheckResult(
                    check_name=ANALYST_DB_PII_CHECK,
                    passed=leaked == 0,
                    metadata={"pii_values_found": leaked},
                )
            ],
        )

    return _analyst_db
