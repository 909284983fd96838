"""What the pipeline does: the settings of `data/pipeline.yaml` (thresholds, policies, schedule),
merged over the defaults below. Where it reads and writes is `locations.py`."""

from __future__ import annotations

import copy
import difflib
from pathlib import Path
from typing import Any

import yaml

DEFAULTS: dict[str, Any] = {
    "schedule": {"cron": "0 2 * * *", "timezone": "UTC"},
    "quality": {
        "max_quarantine_rate": 0.20,
        "min_rows_for_rates": 50,
        "min_validity": {"email": 0.90, "phone": 0.80, "birth_date": 0.95},
        "anomaly_history_runs": 14,
        "anomaly_min_history": 5,
        "anomaly_max_z": 4.0,
        "max_days_without_delivery": 3,
        "max_cluster_size": 25,
        "max_probability_drift": 0.15,
    },
    "standardise": {"default_country": "US", "phone_regions": ["US", "GB", "DE", "FR"]},
    "resolve": {
        "match_threshold": 0.70,
        "max_twin_share": 0.25,
        "floor_weight": 0.0,
        "max_block_size": 5000,
        "max_pairs_per_record": 5,
        "yield_gate": {"min_new_pairs": 250_000, "sample_pairs": 50_000, "min_links_per_10k": 1.0},
        "em_iterations": 25,
        "retrain_growth": 0.25,
        "shards": 4,
        "blocking_rules": [
            ["email_norm"],
            ["phone_e164"],
            ["last_name_key", "birth_date"],
            ["first_name_key", "birth_date"],
            ["street_key", "last_name_key"],
            ["street_key", "birth_date"],
            ["street_key", "first_name_key"],
            ["last_name_soundex", "first_initial", "postal_code"],
            ["email_local"],
            ["identifier_key"],
            ["postal_code", "birth_date"],
            ["name_tokens", "birth_date"],
            ["name_tokens", "postal_code"],
            ["city_key", "birth_date"],
            {"keys": ["first_name_key", "city_key"], "max_pairs_per_record": 1},
            {"keys": ["last_name_key", "city_key"], "max_pairs_per_record": 1},
            {"keys": ["name_tokens", "city_key"], "max_pairs_per_record": 1},
            {"keys": ["first_name_key:3", "last_name_key:4"], "max_block_size": 500},
            ["birth_date"],
            ["postal_code"],
            {"keys": ["last_name_key", "first_name_key"], "max_block_size": 50},
        ],
    },
    "survivorship": {
        "name": ["most_frequent", "trust_rank", "most_recent"],
        "email": ["most_recent", "trust_rank"],
        "phone": ["most_recent", "trust_rank"],
        "address": ["most_recent", "most_complete", "trust_rank"],
        "birth_date": ["trust_rank", "most_frequent"],
        "country": ["most_frequent", "trust_rank"],
    },
    "currency_rates_to_usd": {"USD": 1.0, "EUR": 1.08, "GBP": 1.27},
    "retention": {"quarantine_days": 90, "default_source_days": None},
    "privacy": {"deadline_days": {"GDPR": 30, "CCPA": 45}, "min_link_probability": 0.90},
    "ingest": {"max_field_chars": 65_536, "control_characters": "quarantine"},
}
# Sections whose keys the user names (currencies, jurisdictions, fields); all others are fixed,
# and a key they do not have is a mistake ("retention_dayz"), not a setting.
OPEN_SECTIONS = ("currency_rates_to_usd", "deadline_days", "min_validity")


class ConfigError(ValueError):
    """pipeline.yaml names a setting that does not exist; the message says which was meant."""


def load_config(path: Path | None) -> dict[str, Any]:
    config = copy.deepcopy(DEFAULTS)
    if path is not None and Path(path).exists():
        try:
            document = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML: {exc}".replace("\n", " ")) from None
        if not isinstance(document, dict):
            raise ConfigError(f"{path}: expected a mapping of sections")
        _merge(config, document, str(path), ())
        for section, key, allowed in CHOICES:
            if config[section][key] not in allowed:
                raise ConfigError(
                    f"{path}: {section}.{key} is {config[section][key]!r}; one of "
                    + ", ".join(allowed)
                )
    return config


# Settings that take one of a few words.
CHOICES = (("ingest", "control_characters", ("quarantine", "strip")),)


def _merge(base: dict, override: dict, path: str, where: tuple[str, ...]) -> None:
    for key, value in override.items():
        if where[-1:] and where[-1] in OPEN_SECTIONS:
            base[key] = value
            continue
        if key not in base:
            close = difflib.get_close_matches(str(key), sorted(base), n=1, cutoff=0.6)
            hint = (
                f" (did you mean '{close[0]}'?)"
                if close
                else f" (known: {', '.join(sorted(base))})"
            )
            raise ConfigError(f"{path}: unknown setting '{'.'.join([*where, str(key)])}'{hint}")
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value, path, (*where, key))
        else:
            base[key] = value
