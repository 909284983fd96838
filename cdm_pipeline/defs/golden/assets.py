"""The customer 360: golden records with lineage, the fact tables and the consent ledger, built
in one transaction after pre-commit checks, so readers never see a half-built mart."""

from datetime import timedelta

import dagster as dg
import polars as pl
from dagster_duckdb import DuckDBResource

from cdm_pipeline.defs.metadata import table_metadata, table_schema
from cdm_pipeline.defs.resolve.assets import CUSTOMER_XREF
from cdm_pipeline.defs.resources import DUCKDB_TAGS, OWNER, PipelineResource
from cdm_pipeline.defs.standardise.assets import PERSON_RECORDS
from cdm_pipeline.golden.facts import FACTS, build_facts, fact_sources
from cdm_pipeline.golden.records import PERSON_RECORD_COLUMNS, candidates_from, golden_records
from cdm_pipeline.registry import SourceSpec
from cdm_pipeline.warehouse import (
    StagedTable,
    audit,
    quote_ident,
    sql_text,
    table_exists,
    transaction,
)

CUSTOMERS = dg.AssetKey(["mart", "customers"])
LINEAGE = dg.AssetKey(["mart", "customer_attribute_lineage"])
CONSENT_LEDGER = dg.AssetKey(["governance", "consent_ledger"])
CUSTOMER_KEY_CHECK = "customer_id_unique_not_null"
FACTS_REFERENCE_CHECK = "facts_reference_customers"
RESIDUAL_DUPLICATES_CHECK = "residual_near_duplicates"
LINEAGE_COMPLETE_CHECK = "lineage_for_every_golden_value"
# Each golden column of mart.customers and the attributes whose lineage names its winner (a
# country comes from the country attribute, or else from the winning address).
LINEAGE_OF_COLUMN = {
    "first_name": ("name",),
    "email": ("email",),
    "phone": ("phone",),
    "street": ("address",),
    "birth_date": ("birth_date",),
    "country": ("country", "address"),
}
LEDGER_UNIQUE_CHECK = "one_state_per_customer_and_purpose"

CUSTOMER_COLUMNS = {
    "customer_id": ("varchar", "stable customer id (grain: one row per customer)"),
    "first_name": ("varchar", "identity: survivorship 'name'"),
    "last_name": ("varchar", "identity"),
    "email": ("varchar", "identity: survivorship 'email'"),
    "phone": ("varchar", "identity: E.164"),
    "street": ("varchar", "identity: address"),
    "unit": ("varchar", "identity"),
    "city": ("varchar", "identity"),
    "state": ("varchar", "identity"),
    "postal_code": ("varchar", "identity"),
    "country": ("varchar", "descriptive: ISO 3166-1"),
    "birth_date": ("date", "identity"),
    "age_band": ("varchar", "descriptive"),
    "customer_since": ("timestamp", "descriptive"),
    "sources_seen": ("varchar", "descriptive"),
    "source_count": ("bigint", "descriptive"),
    "record_count": ("bigint", "descriptive"),
    "account_owner": ("varchar", "descriptive"),
    "order_count": ("bigint", "behavioral"),
    "lifetime_value_usd": ("double", "behavioral: delivered/shipped/placed orders in USD"),
    "first_order_at": ("timestamp", "behavioral"),
    "last_order_at": ("timestamp", "behavioral"),
    "interaction_count": ("bigint", "behavioral"),
    "last_contact_at": ("timestamp", "behavioral"),
    "preferred_contact_channel": ("varchar", "behavioral"),
    "open_issues": ("bigint", "behavioral"),
    "average_csat": ("double", "attitudinal"),
    "latest_nps": ("bigint", "attitudinal"),
    "latest_nps_category": ("varchar", "attitudinal"),
    "latest_survey_comment": ("varchar", "attitudinal"),
    "email_marketing_consent": ("varchar", "consent: granted/revoked/unknown"),
    "sms_marketing_consent": ("varchar", "consent"),
    "analytics_consent": ("varchar", "consent"),
    "third_party_sharing_consent": ("varchar", "consent"),
    "is_email_contactable": ("boolean", "consent: email present and email_marketing granted"),
    "is_sms_contactable": ("boolean", "consent: phone present and sms_marketing granted"),
}
CUSTOMER_PII = {
    "first_name",
    "last_name",
    "email",
    "phone",
    "street",
    "unit",
    "birth_date",
    "latest_survey_comment",
}


def customer_360_assets(sources: dict[str, SourceSpec]) -> dg.AssetsDefinition:
    """One step builds the whole customer 360 in one transaction; each table declares only
    what it is made from, so the graph reads left to right."""
    common = {"group_name": "golden", "owners": [OWNER]}

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
                metadata={"dagster/column_schema": table_schema(CUSTOMER_COLUMNS, CUSTOMER_PII)},
                freshness_policy=dg.FreshnessPolicy.time_window(fail_window=timedelta(hours=26)),
            ),
            dg.AssetSpec(
                LINEAGE,
                kinds={"duckdb"},
                **common,
                deps=[PERSON_RECORDS, CUSTOMER_XREF],
                description="One row per customer and golden attribute: the winning value, its source "
                "record and the rule that chose it.",
            ),
            *[
                dg.AssetSpec(
                    dg.AssetKey(["mart", fact]),
                    kinds={"duckdb", "sql"},
                    **common,
                    deps=[CUSTOMER_XREF, *staged(*fact_sources(fact))],
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
    )
    def _customer_360(
        context: dg.AssetExecutionContext, warehouse: DuckDBResource, pipeline: PipelineResource
    ):
        config = pipeline.config()
        with (
            warehouse.get_connection() as conn,
            StagedTable(conn, "mart", "customer_attribute_lineage") as lineage,
            StagedTable(conn, "mart", "golden") as golden,
        ):
            # The golden records and their lineage (tens of millions of rows at 10M records) are
            # built outside the transaction, which would hold them in memory until it commits.
            lineage_rows = _build_golden(conn, sources, config["survivorship"], lineage, golden)
            conn.execute(f"create or replace temp view golden as select * from {golden.name}")
            try:
                with transaction(conn):
                    lineage.swap()
                    fact_rows = build_facts(conn, sources, config["currency_rates_to_usd"])
                    conn.execute(
                        f"create or replace table governance.consent_ledger as {sql_text('governance/consent_ledger')}"
                    )
                    conn.execute(
                        f"create or replace table mart.customers as {sql_text('mart/customers')}"
                    )
                    problems = _precommit_problems(conn)
                    if any(problems.values()):
                        raise _MartRejected(problems)  # rolls back: the previous mart stays
                    ledger_rows = conn.execute(
                        "select count(*) from governance.consent_ledger"
                    ).fetchall()[0][0]
                    customers = conn.execute("select count(*) from mart.customers").fetchall()[0][0]
                    residual = _residual_duplicates(conn)
                    audit(
                        conn,
                        context.run.run_id,
                        "built",
                        "mart.customers",
                        customers,
                        "golden records with lineage",
                    )
                    conn.execute("drop view golden")
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


# Customers are chosen for in slices of about this many records (by a hash of the customer
# id): memory stays bounded however many records the night holds.
GOLDEN_SLICE_RECORDS = 1_000_000
CANDIDATE_QUERY = f"""
select {", ".join(f"p.{c}" for c in PERSON_RECORD_COLUMNS)}, x.customer_id
from identity.person_records p join mart.customer_xref x using (record_key)
where x.customer_id is not null and hash(x.customer_id) % ? = ?
"""


def _build_golden(
    conn,
    sources: dict[str, SourceSpec],
    rules: dict[str, list[str]],
    lineage: StagedTable,
    golden: StagedTable,
) -> int:
    """Survivorship for every customer, slice by slice, staged into ``golden`` (read by
    ``sql/mart/customers.sql`` as the view ``golden``) and ``lineage``; returns the lineage rows
    written."""
    linked = conn.execute(
        "select count(*) from mart.customer_xref where customer_id is not null"
    ).fetchall()[0][0]
    slices = max(1, -(-linked // GOLDEN_SLICE_RECORDS))
    declared = {"account_owner"} | {a for s in sources.values() for a in (s.attributes or {})}
    lineage_rows = 0
    for number in range(slices):
        part = conn.sql(CANDIDATE_QUERY, params=[slices, number]).pl()
        xref = part.select("record_key", "customer_id")
        values, chosen = golden_records(candidates_from(part), rules)
        values = values.join(_attributes(conn, sources, xref), on="customer_id", how="left")
        values = values.with_columns(
            pl.lit(None, dtype=pl.String).alias(a) for a in sorted(declared - set(values.columns))
        )
        lineage.append(chosen)
        golden.append(values)
        lineage_rows += chosen.height
    return lineage_rows


def _attributes(conn, sources: dict[str, SourceSpec], xref: pl.DataFrame) -> pl.DataFrame:
    """Descriptive attributes declared in the registry: the most recent non-null value wins."""
    frames = []
    conn.register("_slice_xref", xref.select("record_key", "customer_id").to_arrow())
    for source in sources.values():
        if not source.attributes or not table_exists(conn, "staging", source.name):
            continue
        for attribute, column in source.attributes.items():
            frames.append(
                conn.sql(
                    f"select x.customer_id, v.* from (select ? || ':' || {quote_ident(source.record_id)} as record_key, ? as attribute, "
                    f"cast({quote_ident(column)} as varchar) as value, try_cast({quote_ident(source.event_at)} as timestamp) as event_at "
                    f"from staging.{quote_ident(source.name + '_current')} where {quote_ident(column)} is not null) v "
                    "join _slice_xref x using (record_key) where x.customer_id is not null",
                    params=[source.name, attribute],
                ).pl()
            )
    conn.unregister("_slice_xref")
    if not frames:
        return pl.DataFrame(schema={"customer_id": pl.String})
    values = pl.concat(frames)
    latest = (
        values.sort("event_at", "record_key", descending=[True, False])
        .group_by("customer_id", "attribute")
        .first()
    )
    return latest.pivot(on="attribute", index="customer_id", values="value")


def _precommit_problems(conn) -> dict[tuple[str, str], int]:
    """What each blocking check of the mart measures, keyed by (asset, check): counted inside
    the build's transaction, so a mart that fails one is never committed."""
    ids = conn.execute(
        "select count(*) - count(distinct customer_id) + count(*) filter (where customer_id is null) from mart.customers"
    ).fetchall()[0][0]
    problems = {("mart/customers", CUSTOMER_KEY_CHECK): ids}
    for fact in FACTS:
        problems[(f"mart/{fact}", FACTS_REFERENCE_CHECK)] = conn.execute(
            f"select count(*) from mart.{quote_ident(fact)} f where f.customer_id is not null "
            "and not exists (select 1 from mart.customers c where c.customer_id = f.customer_id)"
        ).fetchall()[0][0]
    problems[("mart/customer_attribute_lineage", LINEAGE_COMPLETE_CHECK)] = sum(
        conn.execute(
            f"select count(*) from mart.customers c where c.{quote_ident(column)} is not null "
            "and not exists (select 1 from mart.customer_attribute_lineage l "
            "where l.customer_id = c.customer_id and list_contains(?, l.attribute))",
            [list(attributes)],
        ).fetchall()[0][0]
        for column, attributes in LINEAGE_OF_COLUMN.items()
    )
    problems[("governance/consent_ledger", LEDGER_UNIQUE_CHECK)] = conn.execute(
        "select count(*) - count(distinct (customer_id, purpose)) from governance.consent_ledger"
    ).fetchall()[0][0]
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


def _residual_duplicates(conn) -> int:
    return conn.execute(sql_text("mart/residual_duplicates")).fetchall()[0][0]
