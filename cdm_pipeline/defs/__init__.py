"""Dagster wiring: assets, checks, jobs, schedules and resources, one folder per stage.

Pure logic stays in the stage packages (``cdm_pipeline.ingest`` ...); the modules here read from
the warehouse, call that logic, write, and report counts as metadata (never personal data).
"""
