"""``identity.person_records``: every current source record's identity, standardised."""

from datetime import datetime

import dagster as dg
import polars as pl
from dagster_duckdb import DuckDBResource

from cdm_pipeline.defs.keys import PERSON_RECORDS, STANDARDISE_GROUP
from cdm_pipeline.defs.metadata import table_metadata
from cdm_pipeline.defs.resources import DUCKDB_TAGS, OWNER, PipelineResource
from cdm_pipeline.registry import SourceSpec
from cdm_pipeline.standardise.load import IDENTITY_ROLES
from cdm_pipeline.standardise.person_records import (
    erase_held_out,
    publish_person_records,
    remember_settings,
    tonights_inputs,
    validity_rates,
    write_person_records,
)
from cdm_pipeline.standardise.records import standardise_fingerprint
from cdm_pipeline.warehouse import StagedTable, audit, transaction

VALIDITY_CHECK = "identity_field_validity"


def person_records_asset(sources: dict[str, SourceSpec]) -> dg.AssetsDefinition:
    identity_sources = [s for s in sources.values() if s.role in IDENTITY_ROLES]

    @dg.asset(
        op_tags=DUCKDB_TAGS,
        key=PERSON_RECORDS,
        deps=[dg.AssetKey(["staging", s.name]) for s in identity_sources]
        + [dg.AssetKey(["governance", "retention"])],
        group_name=STANDARDISE_GROUP,
        owners=[OWNER],
        kinds={"duckdb", "polars"},
        description=(
            "One row per current source record that carries identity (persons and consent events): "
            "originals kept as `*_raw`, standardised email, E.164 phone, names, USPS street, ISO country, "
            "birth date, and match keys. Records of erased people (suppression list) are left out."
        ),
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
            canonical, reused, suppressed = tonights_inputs(
                conn, identity_sources, fingerprint, regions
            )
            with StagedTable(conn, "identity", "person_records") as staged:
                suppressed, standardised, records, held_out, in_place = write_person_records(
                    staged,
                    canonical,
                    reused,
                    config["standardise"],
                    suppressed,
                    # Keeping a record out is an erasure: as sure as erasure asks.
                    max(
                        config["resolve"]["match_threshold"],
                        config["privacy"]["min_link_probability"],
                    ),
                )
                del canonical
                with transaction(conn):
                    publish_person_records(staged, in_place)
                    erased = erase_held_out(conn, sources, held_out, datetime.now())
                    if erased:
                        audit(
                            conn,
                            context.run.run_id,
                            "erased",
                            "raw and staging",
                            erased,
                            "records of an erased person landed again under new identifiers",
                        )
                    remember_settings(conn, fingerprint, context.run.run_id)
                    audit(
                        conn,
                        context.run.run_id,
                        "standardised",
                        "identity.person_records",
                        records,
                        f"{suppressed} suppressed records left out",
                    )
            shown = table_metadata(conn, "identity.person_records")
            rates = validity_rates(conn)
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
                "records_unchanged_reused": reused,
                "suppressed_records_left_out": suppressed,
                "erased_person_landed_again": held_out.height,
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


def _markdown(frame: pl.DataFrame) -> str:
    header = "| " + " | ".join(frame.columns) + " |\n|" + "---|" * len(frame.columns)
    rows = [
        "| " + " | ".join(f"{v:.3f}" if isinstance(v, float) else str(v) for v in r) + " |"
        for r in frame.rows()
    ]
    return "\n".join([header, *rows])
