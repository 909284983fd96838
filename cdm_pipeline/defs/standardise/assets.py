"""``identity.person_records``: every current source record's identity, standardised."""

import dagster as dg
import polars as pl
from dagster_duckdb import DuckDBResource

from cdm_pipeline.defs.metadata import table_metadata, table_schema
from cdm_pipeline.defs.resources import DUCKDB_TAGS, OWNER, PipelineResource
from cdm_pipeline.governance.suppression import suppressed_person_records, suppressed_rows
from cdm_pipeline.registry import SourceSpec
from cdm_pipeline.standardise.fields import close_pool
from cdm_pipeline.standardise.load import IDENTITY_ROLES, canonical_records
from cdm_pipeline.standardise.records import (
    CANONICAL_INPUT,
    clean_inputs,
    standardise_fingerprint,
    standardise_records,
    unchanged_record_keys,
)
from cdm_pipeline.warehouse import StagedTable, audit, replace_table, table_exists, transaction

PERSON_RECORDS = dg.AssetKey(["identity", "person_records"])
# Records are standardised in slices of this many (bounded memory at any size) into a table of
# their own, renamed to identity.person_records in one transaction (written once, not copied).
STANDARDISE_SLICE_RECORDS = 1_000_000
VALIDITY_INPUTS = (
    "select source, email_raw, email, phone_raw, phone_e164, birth_date_raw, birth_date "
    "from identity.person_records"
)
VALIDITY_CHECK = "identity_field_validity"

PERSON_RECORD_COLUMNS = {
    "record_key": ("varchar", "source:source_record_id, unique"),
    "source": ("varchar", "source name from the registry"),
    "source_record_id": ("varchar", "the record's id in its source"),
    "trust_rank": ("integer", "1 = most trusted source"),
    "event_at": ("timestamp", "the record's business timestamp"),
    "first_name": ("varchar", "display first name"),
    "last_name": ("varchar", "display last name"),
    "first_name_key": ("varchar", "folded first name for matching"),
    "last_name_key": ("varchar", "folded surname for matching"),
    "name_tokens": (
        "varchar",
        "first and last name key in alphabetical order (blocks swapped names)",
    ),
    "email": ("varchar", "valid, lower-cased email"),
    "email_norm": ("varchar", "provider-aware email match key (no dots/+tags where ignored)"),
    "phone_e164": ("varchar", "E.164 phone"),
    "street_key": ("varchar", "street in USPS abbreviations"),
    "unit": ("varchar", "apartment/unit"),
    "city_key": ("varchar", "folded city"),
    "postal_code": ("varchar", "postal code"),
    "country": ("varchar", "ISO 3166-1 alpha-2"),
    "birth_date": ("date", "birth date"),
    "identifier_key": (
        "varchar",
        "the first declared identifier as kind:VALUE (letters and digits)",
    ),
    "email_valid": ("boolean", "false when an email was given but is not valid"),
    "phone_valid": ("boolean", "false when a phone was given but is not valid"),
}
PII = {
    "first_name",
    "last_name",
    "first_name_key",
    "last_name_key",
    "name_tokens",
    "email",
    "email_norm",
    "phone_e164",
    "street_key",
    "unit",
    "birth_date",
    "identifier_key",
}


def person_records_asset(sources: dict[str, SourceSpec]) -> dg.AssetsDefinition:
    identity_sources = [s for s in sources.values() if s.role in IDENTITY_ROLES]

    @dg.asset(
        op_tags=DUCKDB_TAGS,
        key=PERSON_RECORDS,
        deps=[dg.AssetKey(["staging", s.name]) for s in identity_sources]
        + [dg.AssetKey(["governance", "retention"])],
        group_name="standardise",
        owners=[OWNER],
        kinds={"duckdb", "polars"},
        description=(
            "One row per current source record that carries identity (persons and consent events): "
            "originals kept as `*_raw`, standardised email, E.164 phone, names, USPS street, ISO country, "
            "birth date, and match keys. Records of erased people (suppression list) are left out."
        ),
        metadata={"dagster/column_schema": table_schema(PERSON_RECORD_COLUMNS, PII)},
        check_specs=[
            dg.AssetCheckSpec(
                VALIDITY_CHECK,
                asset=PERSON_RECORDS,
                description="Per source, the share of given emails, phones and birth dates that standardise to a valid value is above the configured minimum.",
            )
        ],
    )
    def _person_records(
        context: dg.AssetExecutionContext, warehouse: DuckDBResource, pipeline: PipelineResource
    ):
        config = pipeline.config()
        fingerprint = standardise_fingerprint(config["standardise"])
        regions = tuple(config["standardise"]["phone_regions"])
        with warehouse.get_connection() as conn:
            canonical = clean_inputs(canonical_records(conn, {s.name: s for s in identity_sources}))
            # Records whose inputs did not change since they were standardised are kept as they
            # are (they passed the suppression check then; erasure removes them since).
            reused = unchanged_record_keys(canonical, _stored_inputs(conn, fingerprint))
            canonical = canonical.join(reused, on="record_key", how="anti")
            blocked = pl.Series([False] * canonical.height, dtype=pl.Boolean)
            for source in identity_sources:
                mask = (canonical["source"] == source.name).to_numpy()
                if mask.any():
                    hits = suppressed_rows(
                        conn, canonical.filter(pl.Series(mask)), _canonical_spec(source), regions
                    )
                    blocked = blocked.scatter(mask.nonzero()[0], hits)
            suppressed = int(blocked.sum() or 0)
            canonical = canonical.filter(~blocked)
            with StagedTable(conn, "identity", "person_records") as staged:
                suppressed, standardised, records = _write_new_records(
                    staged, canonical, reused, config["standardise"], suppressed
                )
                del canonical
                with transaction(conn):
                    staged.swap()
                    replace_table(
                        conn,
                        "identity",
                        "standardise_settings",
                        pl.DataFrame(
                            {"fingerprint": [fingerprint], "run_id": [context.run.run_id]}
                        ),
                    )
                    audit(
                        conn,
                        context.run.run_id,
                        "standardised",
                        "identity.person_records",
                        records,
                        f"{suppressed} suppressed records left out",
                    )
            shown = table_metadata(conn, "identity.person_records")
            rates = validity_rates(conn.sql(VALIDITY_INPUTS).pl())
        minimum = config["quality"]["min_validity"]
        failing = rates.filter(
            pl.any_horizontal(
                pl.col(f"{f}_valid_rate") < minimum[f] for f in ("email", "phone", "birth_date")
            )
        )
        return dg.MaterializeResult(
            metadata={
                "records": records,
                "records_standardised": standardised,
                "records_unchanged_reused": reused.height,
                "suppressed_records_left_out": suppressed,
                "sources": rates.height,
                **shown,
            },
            check_results=[
                dg.AssetCheckResult(
                    check_name=VALIDITY_CHECK,
                    passed=failing.height == 0,
                    severity=dg.AssetCheckSeverity.WARN,
                    metadata={
                        "validity_by_source": dg.MetadataValue.md(_markdown(rates)),
                        "sources_below_minimum": failing.height,
                    },
                )
            ],
        )

    return _person_records


def _write_new_records(
    staged: StagedTable,
    canonical: pl.DataFrame,
    reused: pl.DataFrame,
    settings: dict,
    suppressed: int,
) -> tuple[int, int, int]:
    """Stage the reused records and tonight's, standardised slice by slice (memory stays
    bounded); returns (suppressed, standardised, records) counts."""
    conn = staged.conn
    if reused.height > 0:
        conn.register("_reused", reused.to_arrow())
        staged.create_as(
            "select * from identity.person_records "
            "where record_key in (select record_key from _reused)"
        )
        conn.unregister("_reused")
    standardised = 0
    try:
        for start in range(0, max(canonical.height, 1), STANDARDISE_SLICE_RECORDS):
            fresh = standardise_records(
                canonical.slice(start, STANDARDISE_SLICE_RECORDS),
                settings["default_country"],
                tuple(settings["phone_regions"]),
                keep_workers=True,
            )
            late = suppressed_person_records(conn, fresh)
            suppressed += int(late.sum() or 0)
            fresh = fresh.filter(~late)
            standardised += fresh.height
            staged.append(fresh)
    finally:
        close_pool()
    records = conn.execute(f"select count(*) from {staged.name}").fetchall()[0][0]
    return suppressed, standardised, records


def _stored_inputs(conn, fingerprint: str) -> pl.DataFrame:
    """What last run's person records were made from, if made under the same settings."""
    columns = ["record_key", "source", "source_record_id", "trust_rank", "event_at"] + [
        f"{c}_raw" for c in CANONICAL_INPUT
    ]
    if table_exists(conn, "identity", "standardise_settings") and table_exists(
        conn, "identity", "person_records"
    ):
        rows = conn.execute("select fingerprint from identity.standardise_settings").fetchall()
        if rows == [(fingerprint,)]:
            return conn.sql(f"select {', '.join(columns)} from identity.person_records").pl()
    return pl.DataFrame(
        schema={"record_key": pl.String, "source": pl.String, "source_record_id": pl.String}
        | {"trust_rank": pl.Int32, "event_at": pl.Datetime("us")}
        | {f"{c}_raw": pl.String for c in CANONICAL_INPUT}
    )


def _canonical_spec(source: SourceSpec) -> SourceSpec:
    """The source as seen in canonical records: identity columns carry canonical names."""
    from dataclasses import replace

    return replace(source, identity={f: f for f in source.identity})


def validity_rates(records: pl.DataFrame) -> pl.DataFrame:
    """Per source: of the values given, the share that standardised to a valid value."""
    return (
        records.group_by("source")
        .agg(
            email_valid_rate=_rate(
                pl.col("email_raw").is_not_null(), pl.col("email").is_not_null()
            ),
            phone_valid_rate=_rate(
                pl.col("phone_raw").is_not_null(), pl.col("phone_e164").is_not_null()
            ),
            birth_date_valid_rate=_rate(
                pl.col("birth_date_raw").is_not_null(), pl.col("birth_date").is_not_null()
            ),
        )
        .sort("source")
    )


def _rate(given: pl.Expr, valid: pl.Expr) -> pl.Expr:
    n = given.sum()
    return pl.when(n > 0).then((given & valid).sum() / n).otherwise(1.0)


def _markdown(frame: pl.DataFrame) -> str:
    header = "| " + " | ".join(frame.columns) + " |\n|" + "---|" * len(frame.columns)
    rows = [
        "| " + " | ".join(f"{v:.3f}" if isinstance(v, float) else str(v) for v in r) + " |"
        for r in frame.rows()
    ]
    return "\n".join([header, *rows])
