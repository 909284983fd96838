"""cdm-pipeline: a nightly customer data management pipeline on Dagster and DuckDB.

The stages, in the order data flows through them:

1. ``ingest``      land each source's new files in ``raw.<source>`` exactly once
2. ``validate``    pandera contracts split rows into ``staging.<source>`` and ``quarantine``
3. ``standardise`` canonical identity fields (email, E.164 phone, names, addresses, dates)
4. ``resolve``     blocking, comparisons, Fellegi-Sunter scoring, guarded clustering, stable ids
5. ``golden``      golden records with survivorship + lineage, the customer 360 and facts
6. ``governance``  consent ledger, erasure, subject access, retention, masking, audit

Pure logic lives in the stage modules; Dagster wiring lives in ``cdm_pipeline.defs``.
"""
