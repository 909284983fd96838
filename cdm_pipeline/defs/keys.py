"""Every shared asset's key, in the order a night makes them: the stages name each other's assets
from here, so no stage's wiring imports another's."""

import dagster as dg

PERSON_RECORDS = dg.AssetKey(["identity", "person_records"])
PAIR_COMPARISONS = dg.AssetKey(["identity", "pair_comparisons"])
MATCH_PAIRS = dg.AssetKey(["identity", "match_pairs"])
ID_HISTORY = dg.AssetKey(["identity", "customer_id_history"])
CUSTOMER_XREF = dg.AssetKey(["mart", "customer_xref"])
RETENTION = dg.AssetKey(["governance", "retention"])
SUPPRESSION = dg.AssetKey(["governance", "suppression_list"])
SCRUBBED = dg.AssetKey(["governance", "scrubbed_copies"])
CUSTOMERS = dg.AssetKey(["mart", "customers"])
LINEAGE = dg.AssetKey(["mart", "customer_attribute_lineage"])
CONSENT_LEDGER = dg.AssetKey(["governance", "consent_ledger"])
EXPORTS = dg.AssetKey(["governance", "subject_access_exports"])
PRIVACY_LOG = dg.AssetKey(["governance", "privacy_request_log"])
ANALYTICS = dg.AssetKey(["analytics", "views"])
ANALYST_DB = dg.AssetKey(["analytics", "analyst_database"])
PUBLISHED = dg.AssetKey(["serve", "published_warehouse"])

# Stage groups, numbered: the UI lists groups alphabetically, so the numbers put them in the order
# a night finishes them (each group's last asset comes after the previous group's last).
INGEST_GROUP = "1_ingest"
VALIDATE_GROUP = "2_validate"
STANDARDISE_GROUP = "3_standardise"
RESOLVE_GROUP = "4_resolve"
GOLDEN_GROUP = "5_golden"
GOVERNANCE_GROUP = "6_governance"
SERVE_GROUP = "7_serve"
