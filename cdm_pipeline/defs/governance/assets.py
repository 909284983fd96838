"""Governance assets: retention before resolution; privacy requests (erasure, access) after
the mart. Wiring only (~460 lines: five assets and eleven checks, each with the description the
UI shows); what they do lives in ``cdm_pipeline/governance/``."""

import json
from datetime import datetime
from pathlib import Path

import dagster as dg
from dagster_duckdb import DuckDBResource

from cdm_pipeline.defs.keys import (
    CUSTOMER_XREF,
    CUSTOMERS,
    EXPORTS,
    GOVERNANCE_GROUP,
    PRIVACY_LOG,
    RETENTION,
    SCRUBBED,
    SUPPRESSION,
)
from cdm_pipeline.defs.metadata import table_metadata, table_schema, tally_metadata
from cdm_pipeline.defs.resources import DUCKDB_TAGS, OWNER, PipelineResource
from cdm_pipeline.governance.access import foreign_records, process_access_requests
from cdm_pipeline.governance.erasure import erased_in_run, process_erasures
from cdm_pipeline.governance.removal import unbalanced_files
from cdm_pipeline.governance.requests import (
    handled_in_run,
    held_in_run,
    log_invalid_requests,
    open_requests,
)
from cdm_pipeline.governance.retention import apply_retention
from cdm_pipeline.governance.scrub import (
    erased_exports,
    identifier_hits,
    mart_disagreements,
    scrub_identifiers,
)
from cdm_pipeline.governance.suppression import fingerprint_counts
from cdm_pipeline.registry import SourceSpec
from cdm_pipeline.resolve.overrides import read_overrides
from cdm_pipeline.resolve.shards import clear_stale_work
from cdm_pipeline.resolve.store import settle_after_removals
from cdm_pipeline.warehouse import audit, transaction

RETENTION_CHECK = "nothing_older_than_retention"
ERASURE_COMPLETE_CHECK = "erasure_complete"
STEWARD_QUEUE_CHECK = "requests_waiting_for_a_steward"
SUPPRESSION_CHECK = "suppression_list_has_no_plain_identifiers"
CUSTOMERS_HAVE_RECORDS_CHECK = "every_customer_has_records"
DEADLINE_CHECK = "privacy_requests_past_deadline"
ROWS_AT_REST_CHECK = "rows_accounted_at_rest"
NO_STALE_COPIES_CHECK = "no_copies_of_erased_people_left"
EXPORT_HOLDS_ONE_CUSTOMER_CHECK = "exports_hold_only_the_requester"
# One JSON document per request (exports/subject_access/<request_id>.json), as a table of its keys.
EXPORT_DOCUMENT_SCHEMA = table_schema(
    {
        "customer_id": ("varchar", "the requester's customer"),
        "generated_at": ("timestamp", "when the document was written"),
        "customer": ("struct", "the golden record (mart.customers)"),
        "attribute_lineage": ("list", "which record each golden value came from"),
        "source_records": (
            "list",
            "every linked source record: source, id, link method, file, data",
        ),
        "orders / interactions / survey_responses": ("list", "the customer's facts"),
        "consent_state": ("list", "consent per purpose and channel"),
        "quarantined_rows": ("list", "their rows kept in quarantine: source, id, why, data"),
        "records_held_for_steward": (
            "integer",
            "linked records left out: only a household's email or phone links them",
        ),
    },
    pii={"customer", "source_records", "quarantined_rows"},
)


def retention_asset(sources: dict[str, SourceSpec]) -> dg.AssetsDefinition:
    @dg.asset(
        op_tags=DUCKDB_TAGS,
        key=RETENTION,
        deps=[dg.AssetKey(["staging", name]) for name in sources],
        group_name=GOVERNANCE_GROUP,
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
                **tally_metadata(purged, "table", "rows_purged"),
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


def privacy_assets(sources: dict[str, SourceSpec]) -> list[dg.AssetsDefinition]:
    """The privacy step as four steps a reader can follow: erase, scrub copies, export, verify."""
    return [
        _erasure_asset(sources),
        _scrub_asset(sources),
        _export_asset(sources),
        _verify_asset(sources),
    ]


def _erasure_asset(sources: dict[str, SourceSpec]) -> dg.AssetsDefinition:
    @dg.asset(
        op_tags=DUCKDB_TAGS,
        key=SUPPRESSION,
        deps=[CUSTOMER_XREF],
        group_name=GOVERNANCE_GROUP,
        owners=[OWNER],
        kinds={"duckdb"},
        description="Erase: every pending erasure request that matches exactly one customer removes "
        "that customer's records everywhere (raw, staging, quarantine, identity; anonymised "
        "where the source says so) and adds the salted hashes of their identifiers to "
        "`governance.suppression_list`, so re-landed files cannot bring them back. Other requests "
        "wait for a steward. Runs before the customer 360, which is built from what is left.",
        check_specs=[
            dg.AssetCheckSpec(
                SUPPRESSION_CHECK,
                asset=SUPPRESSION,
                blocking=True,
                description="The suppression list holds only 64-hex fingerprints.",
            )
        ],
    )
    def _erase(
        context: dg.AssetExecutionContext, warehouse: DuckDBResource, pipeline: PipelineResource
    ):
        run_id = context.run.run_id
        with warehouse.get_connection() as conn:
            outcome = process_erasures(conn, sources, pipeline.config(), datetime.now(), run_id)
            affected = outcome.records_removed + outcome.records_anonymised
            if outcome.erased_customers:
                audit(
                    conn,
                    run_id,
                    "erased",
                    "all schemas",
                    affected,
                    f"{outcome.erased_customers} customers",
                )
            fingerprints, malformed = fingerprint_counts(conn)
            shown = table_metadata(conn, "governance.suppression_list")
        return dg.MaterializeResult(
            metadata={
                "customers_erased": outcome.erased_customers,
                "records_removed": outcome.records_removed,
                "records_anonymised": outcome.records_anonymised,
                "records_held_for_steward": outcome.records_held,
                "waiting_for_steward": outcome.needs_steward,
                "reasons": dg.MetadataValue.json(outcome.reasons),
                "fingerprints": fingerprints,
                **shown,
            },
            check_results=[
                dg.AssetCheckResult(
                    check_name=SUPPRESSION_CHECK,
                    passed=malformed == 0,
                    metadata={"fingerprints": fingerprints, "malformed": malformed},
                )
            ],
        )

    return _erase


def _scrub_asset(sources: dict[str, SourceSpec]) -> dg.AssetsDefinition:
    @dg.asset(
        op_tags=DUCKDB_TAGS,
        key=SCRUBBED,
        deps=[SUPPRESSION],
        group_name=GOVERNANCE_GROUP,
        owners=[OWNER],
        kinds={"duckdb"},
        description="Scrub copies: every other copy of an erased person's email or phone (an "
        "unlinked record, an old version, a quarantined row), subject-access documents written "
        "for erased customers, and resolver work folders that earlier runs left behind (they hold "
        "identities). Values another customer also holds stay where they hold them. Then the "
        "customers around what was removed are resolved again (incrementally), so tonight "
        "publishes what the remaining records make and a rerun moves no one.",
        check_specs=[
            dg.AssetCheckSpec(
                NO_STALE_COPIES_CHECK,
                asset=SCRUBBED,
                blocking=True,
                description="Counted again after scrubbing: no subject-access document of an erased "
                "customer and no work folder of another run is left.",
            )
        ],
    )
    def _scrub(
        context: dg.AssetExecutionContext, warehouse: DuckDBResource, pipeline: PipelineResource
    ):
        config = pipeline.config()
        run_id = context.run.run_id
        with warehouse.get_connection() as conn:
            with transaction(conn):
                scrubbed = scrub_identifiers(conn, sources, config["resolve"])
                if scrubbed:
                    audit(conn, run_id, "scrubbed", "all schemas", scrubbed, "erased identifiers")
            reclustered = (
                settle_after_removals(
                    conn,
                    config["resolve"],
                    read_overrides(pipeline.overrides_path),
                    pipeline.run_work_dir(run_id),
                    run_id,
                    datetime.now(),
                )
                if scrubbed or erased_in_run(conn, run_id)
                else 0
            )
            exports = erased_exports(conn, Path(pipeline.exports_dir) / "subject_access")
            for path in exports:
                path.unlink(missing_ok=True)
            if exports:
                audit(
                    conn, run_id, "erased", "subject access exports", len(exports), "files deleted"
                )
            exports_left = len(erased_exports(conn, Path(pipeline.exports_dir) / "subject_access"))
        workdir = pipeline.run_work_dir(run_id)
        folders = clear_stale_work(workdir.parent, keep=workdir)
        folders_left = clear_stale_work(workdir.parent, keep=workdir)
        return dg.MaterializeResult(
            metadata={
                "rows_scrubbed": scrubbed,
                "profiles_resolved_again": reclustered,
                "exports_deleted": len(exports),
                "work_folders_removed": folders,
                **tally_metadata(
                    {
                        "warehouse rows with an erased identifier": scrubbed,
                        "subject-access documents of erased customers": len(exports),
                        "work folders of earlier runs": folders,
                    },
                    "copy",
                    "removed",
                ),
            },
            check_results=[
                dg.AssetCheckResult(
                    check_name=NO_STALE_COPIES_CHECK,
                    passed=exports_left == 0 and folders_left == 0,
                    metadata={
                        "erased_exports_left": exports_left,
                        "work_folders_left": folders_left,
                    },
                )
            ],
        )

    return _scrub


def _documents_preview(paths: list[Path], shown: int = 5) -> str:
    """Tonight's first documents: file, customer and how many records each holds (no values)."""
    lines = ["| document | customer_id | source_records |", "|---|---|---|"]
    for path in paths[:shown]:
        document = json.loads(path.read_text(encoding="utf-8"))
        lines.append(
            f"| {path.name} | {document['customer_id']} | {len(document['source_records'])} |"
        )
    return "\n".join(lines) if paths else "no document written tonight"


def _export_asset(sources: dict[str, SourceSpec]) -> dg.AssetsDefinition:
    @dg.asset(
        op_tags=DUCKDB_TAGS,
        key=EXPORTS,
        deps=[CUSTOMERS],
        group_name=GOVERNANCE_GROUP,
        owners=[OWNER],
        kinds={"json"},
        description="Export: every pending access request that matches exactly one customer, by "
        "its identifiers as given, gets `exports/subject_access/<request_id>.json` (golden record, "
        "lineage, source records, facts, consent). Other requests wait for a steward.",
        check_specs=[
            dg.AssetCheckSpec(
                EXPORT_HOLDS_ONE_CUSTOMER_CHECK,
                asset=EXPORTS,
                blocking=True,
                description="Every document written tonight lists only source records that "
                "mart.customer_xref links to its customer: an export hands out no one else's data.",
            )
        ],
    )
    def _export(
        context: dg.AssetExecutionContext, warehouse: DuckDBResource, pipeline: PipelineResource
    ):
        run_id = context.run.run_id
        folder = Path(pipeline.exports_dir) / "subject_access"
        with warehouse.get_connection() as conn:
            outcome = process_access_requests(
                conn, sources, pipeline.config(), folder, datetime.now(), run_id
            )
            if outcome.exported:
                audit(
                    conn,
                    run_id,
                    "exported",
                    "subject access",
                    outcome.exported,
                    "documents written",
                )
            foreign = foreign_records(conn, outcome.paths)
        return dg.MaterializeResult(
            metadata={
                "documents_written": outcome.exported,
                "dagster/row_count": len(list(folder.glob("*.json"))) if folder.exists() else 0,
                "waiting_for_steward": outcome.needs_steward,
                "reasons": dg.MetadataValue.json(outcome.reasons),
                "folder": dg.MetadataValue.path(str(folder)),
                "dagster/column_schema": EXPORT_DOCUMENT_SCHEMA,
                "preview": dg.MetadataValue.md(_documents_preview(outcome.paths)),
            },
            check_results=[
                dg.AssetCheckResult(
                    check_name=EXPORT_HOLDS_ONE_CUSTOMER_CHECK,
                    passed=foreign == 0,
                    metadata={"documents": len(outcome.paths), "records_of_others": foreign},
                )
            ],
        )

    return _export


def _verify_asset(sources: dict[str, SourceSpec]) -> dg.AssetsDefinition:
    @dg.asset(
        op_tags=DUCKDB_TAGS,
        key=PRIVACY_LOG,
        deps=[EXPORTS],
        group_name=GOVERNANCE_GROUP,
        owners=[OWNER],
        kinds={"duckdb"},
        description="Verify: `governance.privacy_request_log` has one row per request handled "
        "(erased, exported, or waiting for a steward with the reason; requests that failed "
        "validation too), and the checks prove erasure complete, the mart consistent with its "
        "records and every landed row accounted for.",
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
                ROWS_AT_REST_CHECK,
                asset=PRIVACY_LOG,
                blocking=True,
                description="For every loaded file of every source, after retention and erasure: "
                "landed rows = raw + purged + erased, and raw = staged + quarantined.",
            ),
            dg.AssetCheckSpec(
                STEWARD_QUEUE_CHECK,
                asset=PRIVACY_LOG,
                description="Privacy requests waiting for a steward (no match, several customers, "
                "or invalid): warns while any is open. Its metadata also counts the records "
                "tonight's erasures and exports left to a steward (governance.*_held_records).",
            ),
            dg.AssetCheckSpec(
                DEADLINE_CHECK,
                asset=PRIVACY_LOG,
                description="No privacy request is still open past its legal deadline "
                "(privacy.deadline_days by jurisdiction: GDPR 30, CCPA 45 days).",
            ),
        ],
    )
    def _verify(
        context: dg.AssetExecutionContext, warehouse: DuckDBResource, pipeline: PipelineResource
    ):
        deadlines = pipeline.config()["privacy"]["deadline_days"]
        now = datetime.now()
        run_id = context.run.run_id
        with warehouse.get_connection() as conn:
            invalid = log_invalid_requests(conn, sources, deadlines, now, run_id)
            hits = identifier_hits(conn)
            recordless, missing = mart_disagreements(conn)
            unbalanced = [f for s in sources.values() for f in unbalanced_files(conn, s)]
            waiting, overdue = open_requests(conn, now)
            tonight = handled_in_run(conn, run_id)
            held = held_in_run(conn, run_id)
            shown = table_metadata(conn, "governance.privacy_request_log")
        return dg.MaterializeResult(
            metadata={
                "handled_tonight": dg.MetadataValue.json(tonight),
                **shown,
            },
            check_results=[
                dg.AssetCheckResult(
                    check_name=ERASURE_COMPLETE_CHECK,
                    passed=not hits,
                    metadata={
                        "columns_with_erased_identifiers": len(hits),
                        "where": dg.MetadataValue.json(hits[:10]),
                    },
                ),
                dg.AssetCheckResult(
                    check_name=CUSTOMERS_HAVE_RECORDS_CHECK,
                    passed=recordless == 0 and missing == 0,
                    metadata={
                        "customers_without_records": recordless,
                        "linked_customers_missing_from_mart": missing,
                    },
                ),
                dg.AssetCheckResult(
                    check_name=ROWS_AT_REST_CHECK,
                    passed=not unbalanced,
                    metadata={
                        "unbalanced_files": len(unbalanced),
                        "examples": dg.MetadataValue.json(unbalanced[:5]),
                    },
                ),
                dg.AssetCheckResult(
                    check_name=STEWARD_QUEUE_CHECK,
                    passed=waiting == 0,
                    severity=dg.AssetCheckSeverity.WARN,
                    metadata={
                        "open_requests": waiting,
                        "new_tonight": tonight.get("needs_steward", 0),
                        "invalid_tonight": invalid,
                        **{f"{table}_tonight": n for table, n in held.items()},
                    },
                ),
                dg.AssetCheckResult(
                    check_name=DEADLINE_CHECK,
                    passed=overdue == 0,
                    severity=dg.AssetCheckSeverity.ERROR,
                    metadata={"open_requests": waiting, "past_deadline": overdue},
                ),
            ],
        )

    return _verify
