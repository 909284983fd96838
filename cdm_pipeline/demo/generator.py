"""Generate realistic, messy, seeded demo landing files for the seven channels, with ground truth.

People are drawn once (names weighted by real US frequency, some German/French/Spanish names with
accents) and then appear across channels with the mess real exports have: typos, nicknames, swapped
names, missing fields, many phone formats, email case/dots/plus-tags, people who moved or changed
email. Hard negatives are planted on purpose: household members who share a surname and address
and often a phone or an email, twins who also share a birth date, and common names.

Columns are built with numpy over whole arrays; per-value Python runs only on the small share of
cells that get a typo or a defect. The truth (``truth/records.parquet``: which person each landed
row belongs to, which rows are planted bad) is written apart from the landing files and is read only
by tests and benchmarks.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import numpy as np
import polars as pl

from cdm_pipeline.demo.channels import consent, crm, orders, privacy, support, surveys, web
from cdm_pipeline.demo.people import TODAY, draw_people, strings

SOURCES = (
    "crm_contacts",
    "web_signups",
    "orders",
    "support_interactions",
    "consent_events",
    "surveys",
    "privacy_requests",
)


@dataclass(frozen=True)
class DemoPaths:
    landing: Path
    truth: Path


def generate(
    people: int = 3000, seed: int = 7, out: Path = Path("data"), days: int = 2
) -> DemoPaths:
    """Write the demo landing files under ``out/landing`` and the truth under ``out/demo/truth``."""
    rng = np.random.default_rng(seed)
    persons = draw_people(people, rng, seed)
    landing, truth_dir = out / "landing", out / "demo" / "truth"
    truth_dir.mkdir(parents=True, exist_ok=True)
    builders = {
        "crm_contacts": crm,
        "web_signups": web,
        "orders": orders,
        "support_interactions": support,
        "consent_events": consent,
        "surveys": surveys,
        "privacy_requests": privacy,
    }
    truth_frames = []
    for source, build in builders.items():
        records, person_ids = build(persons, rng)
        records, defects = _plant_defects(source, records, rng)
        truth_frames.append(_write_source(source, records, person_ids, defects, landing, days, rng))
    pl.concat(truth_frames).write_parquet(truth_dir / "records.parquet")
    persons.drop("first_names_pool").write_parquet(truth_dir / "persons.parquet")
    return DemoPaths(landing=landing, truth=truth_dir)


DEFECTS = {
    "crm_contacts": [
        ("email", "not-an-email@"),
        ("birth_date", "1987-02-30"),
        ("birth_date", "2091-04-01"),
        ("contact_id", None),
        ("contact_id", "DUPLICATE"),
        ("created_at", "yesterday"),
    ],
    "web_signups": [
        ("email", "jane at example dot com"),
        ("email", None),
        ("signed_up_at", "not a date"),
        ("marketing_opt_in", "maybe"),
        ("signup_id", "DUPLICATE"),
    ],
    "orders": [
        ("amount", -42.5),
        ("order_id", None),
        ("order_id", "DUPLICATE"),
        ("currency", "XYZ"),
        ("customer_email", "broken@@example.com"),
    ],
    "support_interactions": [
        ("csat", "7"),
        ("channel", "fax"),
        ("duration_seconds", "-5"),
        ("interaction_id", "DUPLICATE"),
        ("started_at", "31/31/2024"),
    ],
    "consent_events": [
        ("purpose", "spam_me"),
        ("action", "maybe"),
        ("event_id", None),
        ("email", "no-at-sign.example.com"),
    ],
    "surveys": [("nps", 11), ("nps", "ten"), ("email", "@example.com"), ("response_id", None)],
    "privacy_requests": [("request_type", "delete_everything"), ("jurisdiction", None)],
}


def _plant_defects(
    source: str, records: pl.DataFrame, rng: np.random.Generator
) -> tuple[pl.DataFrame, np.ndarray]:
    """Break ~1.5% of rows (at least one per kind) and return the defect label per row."""
    n = records.height
    defects = np.full(n, None, dtype=object)
    options = DEFECTS[source]
    rate = 0.015 if source != "privacy_requests" else 0.0
    chosen = np.flatnonzero(rng.random(n) < rate)
    chosen = np.union1d(
        chosen, rng.choice(np.arange(1, n), size=min(len(options), n - 1), replace=False)
    )
    columns = {c: records[c].to_list() for c in records.columns}
    id_column = records.columns[0]
    for k, i in enumerate(chosen):
        column, value = (
            options[k % len(options)]
            if k < len(options)
            else options[int(rng.integers(0, len(options)))]
        )
        if value == "DUPLICATE":
            value = columns[id_column][i - 1]
            if i == 0 or value is None or defects[i - 1] is not None:
                continue
        columns[column][i] = value
        defects[i] = (
            f"{column}={value!r}" if column != id_column or value is None else f"duplicate {column}"
        )
    schema = {
        c: (
            pl.Object
            if c in ("nps", "marketing_opt_in", "amount") and source in ("surveys", "web_signups")
            else records.schema[c]
        )
        for c in records.columns
    }
    if source == "orders":
        schema = dict(records.schema)
    return pl.DataFrame(columns, schema=schema, strict=False), defects


def _write_source(
    source: str,
    records: pl.DataFrame,
    person_ids: np.ndarray,
    defects: np.ndarray,
    landing: Path,
    days: int,
    rng: np.random.Generator,
) -> pl.DataFrame:
    folder = landing / source
    folder.mkdir(parents=True, exist_ok=True)
    n = records.height
    # Rows are split across daily files in their order, so a duplicate id lands after its original.
    bounds = np.linspace(0, n, days + 1).astype(int)
    truth = []
    for day in range(days):
        stamp = (TODAY.date() - timedelta(days=days - 1 - day)).isoformat()
        part = records.slice(bounds[day], bounds[day + 1] - bounds[day])
        ext = {
            "crm_contacts": "csv",
            "support_interactions": "csv",
            "consent_events": "csv",
            "privacy_requests": "csv",
            "orders": "parquet",
        }.get(source, "jsonl")
        path = folder / f"{source}_{stamp}.{ext}"
        if ext == "csv":
            part.write_csv(path)
        elif ext == "parquet":
            part.write_parquet(path)
        else:
            with path.open("w", encoding="utf-8") as handle:
                for row in part.rows(named=True):
                    handle.write(json.dumps(row, default=str, ensure_ascii=False) + "\n")
        truth.append(
            pl.DataFrame(
                {
                    "source": pl.Series([source] * part.height, dtype=pl.String),
                    "source_file": pl.Series([path.name] * part.height, dtype=pl.String),
                    "row_number": np.arange(1, part.height + 1),
                    "record_id": part[records.columns[0]].cast(pl.String),
                    "person_id": pl.Series(
                        person_ids[bounds[day] : bounds[day + 1]], dtype=pl.Int64
                    ),
                    "defect": strings(defects[bounds[day] : bounds[day + 1]]),
                }
            )
        )
    return pl.concat(truth).with_columns(planted_bad=pl.col("defect").is_not_null())
