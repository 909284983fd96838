from pathlib import Path

import pytest

from cdm_pipeline.locations import PACKAGE_DATA
from cdm_pipeline.registry import RegistryError, load_registry


def test_shipped_registry_declares_the_seven_channels():
    sources = load_registry(PACKAGE_DATA / "sources.yaml")
    assert set(sources) == {
        "crm_contacts",
        "web_signups",
        "orders",
        "support_interactions",
        "consent_events",
        "surveys",
        "privacy_requests",
    }
    assert sources["orders"].identity["email"] == "customer_email"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            "sources: {x: {path: a, format: xml, record_id: id, columns: {id: {type: id}}}}",
            "format",
        ),
        (
            "sources: {x: {path: a, format: csv, record_id: nope, columns: {id: {type: id}}}}",
            "record_id",
        ),
        (
            "sources: {x: {path: a, format: csv, record_id: id, columns: {id: {type: wat}}}}",
            "unknown type",
        ),
        (
            "sources: {x: {path: a, format: csv, record_id: id, identity: {shoe_size: id}, columns: {id: {type: id}}}}",
            "unknown identity field",
        ),
        (
            "sources: {Bad-Name: {path: a, format: csv, record_id: id, columns: {id: {type: id}}}}",
            "snake_case",
        ),
        ("nothing: here", "sources"),
    ],
    ids=["format", "record-id", "column-type", "identity-field", "name", "no-sources"],
)
def test_invalid_registry_is_rejected_with_a_reason(tmp_path: Path, body: str, message: str):
    path = tmp_path / "sources.yaml"
    path.write_text(body)
    with pytest.raises(RegistryError, match=message):
        load_registry(path)
