"""Entry point for ``dagster dev`` / ``cdm``: the Definitions built from the source registry."""

import dagster as dg

from cdm_pipeline.defs.build import build_definitions
from cdm_pipeline.defs.jobs import DASK_JOB, PARALLEL_JOB

defs = build_definitions()


def parallel_job() -> dg.JobDefinition:
    """The multiprocess job, rebuilt from the environment in each step's process
    (``dg.reconstructable(parallel_job)``)."""
    return build_definitions().resolve_job_def(PARALLEL_JOB)


def dask_job() -> dg.JobDefinition:
    """The Dask job, rebuilt from the environment on each worker."""
    return build_definitions().resolve_job_def(DASK_JOB)
