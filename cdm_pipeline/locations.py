"""Where the pipeline reads and writes (landing, warehouse, registry, exports), resolved once from
the environment. What it does there is `pipeline_config.py`.

``cdm run --landing --warehouse --sources`` sets these variables so that the CLI, the Dagster UI and
the tests all build the same Definitions from the same place.
"""

import os
from dataclasses import dataclass
from pathlib import Path


class UsageError(Exception):
    """A mistake in how cdm was called or configured: one line, exit code 2, no traceback. Kept
    here, not in ``cli``: ``python -m cdm_pipeline.cli`` runs that module as ``__main__``, and a
    class defined there would not be the one other modules raise."""


def bundled(name: str) -> Path:
    """A shipped folder (``sql``, ``data``): inside the package when installed from a wheel,
    at the top of the repository in a checkout or an editable install."""
    package = Path(__file__).resolve().parent
    inside = package / "_bundled" / name
    return inside if inside.exists() else package.parent / name


PACKAGE_DATA = bundled("data")


@dataclass(frozen=True)
class Settings:
    landing_dir: Path
    warehouse_path: Path
    sources_path: Path
    pipeline_config_path: Path
    overrides_path: Path
    exports_dir: Path
    # Scratch files of a run (the resolver's comparison shards); on a cluster, a shared volume.
    work_dir: Path | None = None

    @property
    def work_path(self) -> Path:
        return self.work_dir or self.warehouse_path.parent / "work"

    def environ(self) -> dict[str, str]:
        """The environment ``load_settings`` reads these settings back from: what a process
        that rebuilds the job (a step of the multiprocess executor) needs to be given."""
        env = {
            "CDM_LANDING": str(self.landing_dir),
            "CDM_WAREHOUSE": str(self.warehouse_path),
            "CDM_SOURCES": str(self.sources_path),
            "CDM_CONFIG": str(self.pipeline_config_path),
            "CDM_OVERRIDES": str(self.overrides_path),
            "CDM_EXPORTS": str(self.exports_dir),
        }
        return env | ({"CDM_WORK_DIR": str(self.work_dir)} if self.work_dir else {})


def exports_beside(warehouse: Path) -> Path:
    """A warehouse's own export folder (analyst file, subject-access documents), next to it:
    two warehouses never share one."""
    return warehouse.with_name(f"{warehouse.stem}_exports")


def load_settings() -> Settings:
    data = Path(os.environ.get("CDM_DATA_DIR", "data"))
    warehouse = Path(os.environ.get("CDM_WAREHOUSE", data / "warehouse" / "cdm.duckdb"))
    return Settings(
        landing_dir=Path(os.environ.get("CDM_LANDING", data / "landing")),
        warehouse_path=warehouse,
        sources_path=Path(os.environ.get("CDM_SOURCES", _default_file(data, "sources.yaml"))),
        pipeline_config_path=Path(
            os.environ.get("CDM_CONFIG", _default_file(data, "pipeline.yaml"))
        ),
        overrides_path=Path(
            os.environ.get("CDM_OVERRIDES", _default_file(data, "steward_overrides.csv"))
        ),
        exports_dir=Path(os.environ.get("CDM_EXPORTS", exports_beside(warehouse))),
        work_dir=Path(os.environ["CDM_WORK_DIR"]) if os.environ.get("CDM_WORK_DIR") else None,
    )


def _default_file(data: Path, name: str) -> Path:
    """Prefer the file in the working data folder, fall back to the one shipped with the repo."""
    local = data / name
    return local if local.exists() else PACKAGE_DATA / name
