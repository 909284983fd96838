"""The source registry: what each landing source looks like and how it maps to identity fields.

Loaded from ``data/sources.yaml``. Everything source-specific in the pipeline is derived from here,
so a partner's CSV with its own column names is added by configuration alone.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path, PurePosixPath
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, PositiveInt, ValidationError

IDENTITY_FIELDS = (
    "first_name",
    "last_name",
    "full_name",
    "email",
    "phone",
    "street",
    "city",
    "state",
    "postal_code",
    "country",
    "birth_date",
)
COLUMN_TYPES = (
    "id",
    "string",
    "email",
    "phone",
    "date",
    "timestamp",
    "decimal",
    "integer",
    "enum",
    "boolean",
)
# Identity fields that may be put together from several columns, in order, joined by a space
# (a street number and a street name, a given name in two parts).
COMBINABLE_FIELDS = ("first_name", "last_name", "full_name", "street", "city")
FORMATS = ("csv", "jsonl", "parquet")
ROLES = ("person", "consent", "privacy_request")
_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")


class RegistryError(ValueError):
    """The sources file is not a valid registry; the message names the source and the key."""


@dataclass(frozen=True)
class ColumnSpec:
    name: str
    type: str
    required: bool = False
    min: str | float | None = None
    max: str | float | None = None
    values: tuple[str, ...] = ()
    optional_column: bool = False


@dataclass(frozen=True)
class SourceSpec:
    name: str
    path: str
    format: str
    record_id: str
    event_at: str
    trust_rank: int
    role: str
    columns: tuple[ColumnSpec, ...]
    # canonical field -> column, or for ``COMBINABLE_FIELDS`` a tuple of columns joined by a space
    identity: dict[str, str | tuple[str, ...]] = field(default_factory=dict)
    # identifier kind (national_id, loyalty_number, ...) -> column: ids the customer gave
    identifiers: dict[str, str] = field(default_factory=dict)
    consent: dict[str, str] = field(default_factory=dict)
    attributes: dict[str, str] = field(default_factory=dict)
    encoding: str = "utf-8"
    retention_days: int | None = None
    on_erasure: str = "delete"
    request_type_column: str | None = None
    jurisdiction_column: str | None = None  # privacy requests: GDPR, CCPA, ... (sets the deadline)

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]

    @property
    def identity_columns(self) -> list[str]:
        """Every column that identifies a person (names, contacts, address, identifiers)."""
        columns = [
            c
            for value in self.identity.values()
            for c in (value if isinstance(value, tuple) else (value,))
        ]
        return sorted({*columns, *self.identifiers.values()})

    @property
    def required_columns(self) -> list[str]:
        return [c.name for c in self.columns if not c.optional_column]

    def column(self, name: str) -> ColumnSpec:
        return next(c for c in self.columns if c.name == name)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=False)


class _ColumnModel(_Strict):
    type: str = "string"
    required: bool | None = None
    min: str | float | date | datetime | None = None
    max: str | float | date | datetime | None = None
    values: list[str | int | float | bool] = []
    optional_column: bool = False


class _SourceModel(_Strict):
    """The keys a source may have: any other key is a mistake (``requird``), not ignored."""

    path: str
    format: str
    record_id: str
    columns: dict[str, _ColumnModel | None]
    event_at: str | None = None
    trust_rank: int = 5
    role: str = "person"
    identity: dict[str, str | list[str]] = {}
    identifiers: dict[str, str] = {}
    consent: dict[str, str] = {}
    attributes: dict[str, str] = {}
    encoding: str = "utf-8"
    retention_days: PositiveInt | None = None
    on_erasure: Literal["delete", "anonymise"] = "delete"
    request_type_column: str | None = None
    jurisdiction_column: str | None = None
    description: str | None = None


class _RegistryModel(_Strict):
    sources: dict[str, _SourceModel]


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML whose mappings may not repeat a key: a second ``crm_contacts:`` would silently
    replace the first."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise RegistryError(f"line {key_node.start_mark.line + 1}: '{key}' is given twice")
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def load_registry(path: Path) -> dict[str, SourceSpec]:
    """Read and check the registry; raise ``RegistryError`` naming what is wrong, one line per
    problem (the key, where it is, and for a misspelt key the one that was meant)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise RegistryError(f"cannot read sources file {path}: {exc}") from None
    try:
        document = yaml.load(text, Loader=_UniqueKeyLoader)
    except RegistryError as exc:
        raise RegistryError(f"{path}: {exc}") from None
    except yaml.YAMLError as exc:
        raise RegistryError(f"{path}: not valid YAML: {exc}".replace("\n", " ")) from None
    if not isinstance(document, dict) or not isinstance(document.get("sources"), dict):
        raise RegistryError(f"{path}: expected a top-level 'sources:' mapping")
    try:
        model = _RegistryModel.model_validate(document)
    except ValidationError as exc:
        raise RegistryError(
            "\n".join(f"{path}: {_explain(error)}" for error in exc.errors())
        ) from None
    bodies = {
        name: source.model_dump(exclude_unset=True) | {"columns": _columns_of(document, name)}
        for name, source in model.sources.items()
    }
    try:
        return {name: _parse_source(name, body) for name, body in bodies.items()}
    except RegistryError as exc:
        raise RegistryError(f"{path}: {exc}") from None


def _columns_of(document: dict, name: str) -> dict:
    return {c: spec or {} for c, spec in document["sources"][name]["columns"].items()}


_ALLOWED_KEYS = {
    "sources": set(_SourceModel.model_fields),
    "columns": set(_ColumnModel.model_fields),
}


def _explain(error: dict) -> str:
    """One line for one pydantic error: where, what, and the key that was probably meant."""
    location = [str(part) for part in error["loc"] if not str(part).startswith("function-")]
    where = ""
    if len(location) >= 2 and location[0] == "sources":
        where = f"source '{location[1]}'"
        if len(location) >= 4 and location[2] == "columns":
            where += f", column '{location[3]}'"
        rest = location[4:] if len(location) >= 4 and location[2] == "columns" else location[2:]
    else:
        rest = location
    key = rest[-1] if rest else ""
    if error["type"] == "extra_forbidden":
        allowed = _ALLOWED_KEYS["columns" if "column" in where else "sources"]
        close = difflib.get_close_matches(key, sorted(allowed), n=1, cutoff=0.6)
        hint = (
            f" (did you mean '{close[0]}'?)"
            if close
            else f" (allowed: {', '.join(sorted(allowed))})"
        )
        return f"{where}: unknown key '{key}'{hint}"
    if error["type"] == "missing":
        return f"{where}: missing key '{key}'"
    return f"{where}: '{'.'.join(rest)}': {error['msg']}"


def _parse_source(name: str, body: dict) -> SourceSpec:
    where = f"source '{name}'"
    if not _NAME.match(name):
        raise RegistryError(f"{where}: name must be lower snake_case (it becomes a table name)")
    for key in ("path", "format", "record_id", "columns"):
        if key not in body:
            raise RegistryError(f"{where}: missing key '{key}'")
    path = PurePosixPath(str(body["path"]).replace("\\", "/"))
    if path.is_absolute() or str(body["path"]).startswith("~") or ".." in path.parts:
        raise RegistryError(
            f"{where}: path '{body['path']}' must stay inside the landing folder "
            "(relative, no '..')"
        )
    if body["format"] not in FORMATS:
        raise RegistryError(f"{where}: format must be one of {FORMATS}")
    role = body.get("role", "person")
    if role not in ROLES:
        raise RegistryError(f"{where}: role must be one of {ROLES}")
    columns = tuple(_parse_column(where, col, spec or {}) for col, spec in body["columns"].items())
    names = {c.name for c in columns}
    record_id = body["record_id"]
    event_at = body.get("event_at", record_id)
    for key, column in (("record_id", record_id), ("event_at", event_at)):
        if column not in names:
            raise RegistryError(f"{where}: {key} column '{column}' is not declared in columns")
    identity = {}
    for canonical, column in (body.get("identity") or {}).items():
        if canonical not in IDENTITY_FIELDS:
            raise RegistryError(f"{where}: unknown identity field '{canonical}'")
        if isinstance(column, list):
            if canonical not in COMBINABLE_FIELDS:
                raise RegistryError(
                    f"{where}: identity field '{canonical}' takes one column; only "
                    f"{', '.join(COMBINABLE_FIELDS)} may combine several"
                )
            column = tuple(column)
        for part in column if isinstance(column, tuple) else (column,):
            if part not in names:
                raise RegistryError(f"{where}: identity column '{part}' is not declared in columns")
        identity[canonical] = column
    identifiers = dict(body.get("identifiers") or {})
    for kind, column in identifiers.items():
        if not isinstance(kind, str) or not _NAME.match(kind):
            raise RegistryError(f"{where}: identifier kind '{kind}' must be lower snake_case")
        if column not in names:
            raise RegistryError(f"{where}: identifier column '{column}' is not declared in columns")
    attributes = dict(body.get("attributes") or {})
    for attribute, column in attributes.items():
        if column not in names:
            raise RegistryError(f"{where}: attribute column '{column}' is not declared in columns")
        if not _NAME.match(attribute):
            raise RegistryError(f"{where}: attribute name '{attribute}' must be lower snake_case")
    on_erasure = body.get("on_erasure", "delete")
    if on_erasure not in ("delete", "anonymise"):
        raise RegistryError(f"{where}: on_erasure must be 'delete' or 'anonymise'")
    request_type_column = body.get(
        "request_type_column", "request_type" if role == "privacy_request" else None
    )
    if role == "privacy_request" and request_type_column not in names:
        raise RegistryError(
            f"{where}: a privacy_request source needs a request type column ('{request_type_column}')"
        )
    jurisdiction_column = body.get(
        "jurisdiction_column",
        "jurisdiction" if role == "privacy_request" and "jurisdiction" in names else None,
    )
    if jurisdiction_column is not None and jurisdiction_column not in names:
        raise RegistryError(
            f"{where}: jurisdiction column '{jurisdiction_column}' is not declared in columns"
        )
    if role == "person" and not (identity or identifiers):
        raise RegistryError(f"{where}: a person source needs an identity mapping")
    return SourceSpec(
        name=name,
        path=body["path"],
        format=body["format"],
        record_id=record_id,
        event_at=event_at,
        trust_rank=int(body.get("trust_rank", 5)),
        role=role,
        columns=columns,
        identity=identity,
        identifiers=identifiers,
        consent=dict(body.get("consent") or {}),
        attributes=attributes,
        encoding=body.get("encoding", "utf-8"),
        retention_days=body.get("retention_days"),
        on_erasure=on_erasure,
        request_type_column=request_type_column,
        jurisdiction_column=jurisdiction_column,
    )


def _parse_column(where: str, name: str, spec: dict) -> ColumnSpec:
    if not isinstance(name, str) or not name or name.startswith("_"):
        raise RegistryError(
            f"{where}: column name {name!r} must be a non-empty string without a leading '_'"
        )
    kind = spec.get("type", "string")
    if kind not in COLUMN_TYPES:
        raise RegistryError(f"{where}: column '{name}' has unknown type '{kind}'")
    if kind == "enum" and not spec.get("values"):
        raise RegistryError(f"{where}: enum column '{name}' needs 'values'")
    return ColumnSpec(
        name=name,
        type=kind,
        required=bool(spec.get("required", kind == "id")),
        min=spec.get("min"),
        max=spec.get("max"),
        values=tuple(str(v) for v in spec.get("values", ())),
        optional_column=bool(spec.get("optional_column", False)),
    )
