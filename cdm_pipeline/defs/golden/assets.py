"""The customer 360: golden records with lineage, the fact tables and the consent ledger, built
in one transaction after pre-commit checks, so readers never see a half-built mart."""

from datetime import timedelta

import dagster as dg
from dagster_duckdb import DuckDBResource

from cdm_pipeline.defs.keys import (
    CONSENT_LEDGER,
    CUSTOMER_XREF,
    CUSTOMERS,
    GOLDEN_GROUP,
    LINEAGE,
    PERSON_RECORDS,
    SCRUBBED,
)
from cdm_pipeline.defs.metadata import table_metadata
from cdm_pipeline.defs.resources import DUCKDB_TAGS, OWNER, PipelineResource
from cdm_pipeline.golden.build import (
    GOLDEN_RECORDS,
    NOT_KEPT,
    build_customer_tables,
    build_golden,
    mart_problems,
    remember_golden_inputs,
    residual_duplicates,
    row_count,
)
from cdm_pipeline.golden.facts import FACTS, fact_sources
from cdm_pipeline.registry import SourceSpec
from cdm_pipeline.warehouse import (
    StagedTable,
    audit,
    transaction,
)

CUSTOMER_KEY_CHECK = "customer_id_unique_not_null"
FACTS_REFERENCE_CHECK = "facts_reference_customers"
RESIDUAL_DUPLICATES_CHECK = "residual_near_duplicates"
LINEAGE_COMPLETE_CHECK = "lineage_for_every_golden_value"
LEDGER_UNIQUE_CHECK = "one_state_per_customer_and_purpose"


def customer_360_assets(sources: dict[str, SourceSpec]) -> dg.AssetsDefinition:
    """One step builds the whole customer 360 in one transaction; each table declares only
    what it is made from, so the graph reads left to right."""
    common = {"group_name": GOLDEN_GROUP, "owners": [OWNER]}

    def staged(*names: str) -> list[dg.AssetKey]:
        return [dg.AssetKey(["staging", n]) for n in names if n in sources]

    fact_keys = [dg.AssetKey(["mart", fact]) for fact in FACTS]
    with_attributes = [s.name for s in sources.values() if s.attributes]

    @dg.multi_asset(
        op_tags=DUCKDB_TAGS,
        specs=[
            dg.AssetSpec(
                CUSTOMERS,
                kinds={"duckdb", "sql"},
                **common,
                deps=[
                    PERSON_RECORDS,
                    CUSTOMER_XREF,
                    LINEAGE,
                    *fact_keys,
                    CONSENT_LEDGER,
                    *staged(*with_attributes),
                ],
                description="One row per customer: golden identity chosen by configurable survivorship, "
                "descriptive, behavioral, attitudinal and consent columns. Grain: customer_id.",
                freshness_policy=dg.FreshnessPolicy.time_window(fail_window=timedelta(hours=26)),
            ),
            dg.AssetSpec(
                LINEAGE,
                kinds={"duckdb"},
                **common,
                deps=[PERSON_RECORDS, CUSTOMER_XREF, SCRUBBED],
                description="One row per customer and golden attribute: the winning value, its source "
                "record and the rule that chose it.",
            ),
            *[
                dg.AssetSpec(
                    dg.AssetKey(["mart", fact]),
                    kinds={"duckdb", "sql"},
                    **common,
                    deps=[CUSTOMER_XREF, SCRUBBED, *staged(*fact_sources(fact))],
                    description=f"Fact table mart.{fact}, one row per event, keyed by customer_id.",
                )
                for fact in FACTS
            ],
            dg.AssetSpec(
                CONSENT_LEDGER,
                kinds={"duckdb", "sql"},
                **common,
                deps=[dg.AssetKey(["mart", "consent_events"])],
                description="One row per customer and purpose: current consent; the latest event "
                "by event time wins, so a late older grant never undoes a revocation.",
            ),
        ],
        check_specs=[
            dg.AssetCheckSpec(
                CUSTOMER_KEY_CHECK,
                asset=CUSTOMERS,
                blocking=True,
                description="customer_id is unique and not null.",
            ),
            *[
                dg.AssetCheckSpec(
                    FACTS_REFERENCE_CHECK,
                    asset=dg.AssetKey(["mart", fact]),
                    blocking=True,
                    description="Every row's customer_id is a customer in mart.customers (or null: unlinked/erased).",
                )
                for fact in FACTS
            ],
            dg.AssetCheckSpec(
                LEDGER_UNIQUE_CHECK,
                asset=CONSENT_LEDGER,
                blocking=True,
                description="One consent state per customer and purpose.",
            ),
            dg.AssetCheckSpec(
                LINEAGE_COMPLETE_CHECK,
                asset=LINEAGE,
                blocking=True,
                description="Every golden identity value has a lineage row naming its source record.",
            ),
            dg.AssetCheckSpec(
                RESIDUAL_DUPLICATES_CHECK,
                asset=CUSTOMERS,
                description="Few customers share name and birth date or name and email (possible missed merges).",
            ),
        ],
        can_subset=False,
        name="mart__customer_360",
    )
    def _customer_360(
        context: dg.AssetExecutionContext, warehouse: DuckDBResource, pipeline: PipelineResource
    ):
        config = pipeline.config()
        with (
            warehouse.get_connection() as conn,
            StagedTable(conn, "mart", "customer_attribute_lineage") as lineage,
            StagedTable(conn, "identity", "golden_records") as golden,
        ):
            # The golden records and their lineage (tens of millions of rows at 10M records) are
            # built outside the transaction, which would hold them in memory until it commits.
            chosen, in_place = build_golden(conn, sources, config["survivorship"], lineage, golden)
            try:
                with transaction(conn):
                    lineage.swap(NOT_KEPT if in_place else None)
                    golden.swap(NOT_KEPT if in_place else None)
                    remember_golden_inputs(conn)
                    rates = config["currency_rates_to_usd"]
                    fact_rows, built = build_customer_tables(conn, sources, rates, GOLDEN_RECORDS)
                    lineage_rows = row_count(conn, "mart.customer_attribute_lineage")
                    problems = _precommit_problems(conn)
                    if any(problems.values()):
                        raise _MartRejected(problems)  # rolls back: the previous mart stays
                    ledger_rows = row_count(conn, "governance.consent_ledger")
                    customers = row_count(conn, "mart.customers")
                    residual = residual_duplicates(conn)
                    audit(
                        conn,
                        context.run.run_id,
                        "built",
                        "mart.customers",
                        customers,
                        "golden records with lineage",
                    )
            except _MartRejected as rejected:
                # The failed checks are recorded with what they measured, then the step fails.
                yield from _check_results(rejected.problems)
                raise
            shown = {
                key: table_metadata(conn, key.to_user_string().replace("/", "."))
                for key in (
                    CUSTOMERS,
                    LINEAGE,
                    CONSENT_LEDGER,
                    *[dg.AssetKey(["mart", f]) for f in FACTS],
                )
            }
        yield dg.MaterializeResult(
            asset_key=LINEAGE,
            metadata={"rows": lineage_rows, **shown[LINEAGE]},
        )
        for fact in FACTS:
            yield dg.MaterializeResult(
                asset_key=dg.AssetKey(["mart", fact]),
                metadata={"rows": fact_rows[fact], **shown[dg.AssetKey(["mart", fact])]},
            )
        yield dg.MaterializeResult(
            asset_key=CONSENT_LEDGER, metadata={"states": ledger_rows, **shown[CONSENT_LEDGER]}
        )
        # In the order the tables depend on each other: the customers last.
        yield dg.MaterializeResult(
            asset_key=CUSTOMERS,
            metadata={
                "customers": customers,
                "customers_chosen_for_tonight": chosen,
                "customer_rows_built": built,
                "rules": dg.MetadataValue.json(config["survivorship"]),
                **shown[CUSTOMERS],
            },
        )
        yield from _check_results(problems)
        yield dg.AssetCheckResult(
            check_name=RESIDUAL_DUPLICATES_CHECK,
            asset_key=CUSTOMERS,
            passed=residual <= max(1, customers // 100),
            severity=dg.AssetCheckSeverity.WARN,
            metadata={
                "customer_pairs_sharing_name_and_birth_date_or_email": residual,
                "limit": max(1, customers // 100),
            },
        )

    return _customer_360


class _MartRejected(Exception):
    """The new mart broke a key property; the transaction was rolled back (previous mart kept)."""

    def __init__(self, problems: dict[tuple[str, str], int]):
        self.problems = problems
        failed = {f"{a} {c}": n for (a, c), n in problems.items() if n}
        super().__init__(f"mart.customers not replaced, pre-commit checks failed: {failed}")


def _precommit_problems(conn) -> dict[tuple[str, str], int]:
    """``mart_problems`` keyed by the (asset, check) that reports each."""
    measured = mart_problems(conn)
    problems = {("mart/customers", CUSTOMER_KEY_CHECK): measured["duplicate_or_null_ids"]}
    for fact in FACTS:
        problems[(f"mart/{fact}", FACTS_REFERENCE_CHECK)] = measured[f"dangling:{fact}"]
    problems[("mart/customer_attribute_lineage", LINEAGE_COMPLETE_CHECK)] = measured[
        "missing_lineage"
    ]
    problems[("governance/consent_ledger", LEDGER_UNIQUE_CHECK)] = measured["duplicate_states"]
    return problems


def _check_results(problems: dict[tuple[str, str], int]) -> list[dg.AssetCheckResult]:
    measured = {
        CUSTOMER_KEY_CHECK: "duplicate_or_null_ids",
        FACTS_REFERENCE_CHECK: "dangling_rows",
        LINEAGE_COMPLETE_CHECK: "missing_lineage",
        LEDGER_UNIQUE_CHECK: "duplicate_states",
    }
    return [
        dg.AssetCheckResult(
            check_name=check,
            asset_key=dg.AssetKey.from_user_string(asset),
            passed=count == 0,
            metadata={measured[check]: count},
        )
        for (asset, check), count in problems.items()
    ]
