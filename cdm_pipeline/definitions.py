"""Entry point for ``dagster dev`` / ``cdm``: the Definitions built from the source registry."""

from cdm_pipeline.defs.build import build_definitions

defs = build_definitions()
