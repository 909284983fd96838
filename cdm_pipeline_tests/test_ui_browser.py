"""The Dagster UI, for real: `dagster dev` on a loopback port, the job launched through the UI's
GraphQL API, then headless Chromium screenshots of the asset graph and of mart/customers' checks.

Chromium is the machine's own (`chromium` or `chromium-browser` on PATH, or $CDM_CHROMIUM); no
Python package can ship one offline and a test never installs system packages, so where there is
none the test skips and says why. Screenshots go to $CDM_SCREENSHOT_DIR (default: pytest's tmp folder).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from cdm_pipeline.demo.generator import generate

REPO = Path(__file__).resolve().parent.parent
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def find_chromium() -> str:
    candidates = [os.environ.get("CDM_CHROMIUM"), "chromium", "chromium-browser", "google-chrome"]
    for name in filter(None, candidates):
        found = shutil.which(name)
        if found:
            return found
    pytest.skip(
        "no Chromium on this machine (chromium, chromium-browser, google-chrome or $CDM_CHROMIUM): "
        "install one (e.g. `apt-get install chromium`) to run the browser test"
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def graphql(url: str, query: str, variables: dict | None = None) -> dict:
    request = urllib.request.Request(
        f"{url}/graphql",
        data=json.dumps({"query": query, "variables": variables or {}}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        body = json.loads(response.read())
    assert "errors" not in body, body.get("errors")
    return body["data"]


def _default_signals() -> None:
    # A background shell may have left SIGINT/SIGTERM ignored; dagster dev must obey them.
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


@pytest.fixture(scope="module")
def dagster_ui(tmp_path_factory):
    chromium = find_chromium()
    root = tmp_path_factory.mktemp("ui")
    generate(people=300, seed=5, out=root, days=1)
    home = root / "dagster_home"
    (home / ".nux").mkdir(parents=True)
    (home / ".nux" / "nux.yaml").write_text("seen: 1\n")
    port = free_port()
    env = os.environ | {
        "DAGSTER_HOME": str(home),
        "CDM_LANDING": str(root / "landing"),
        "CDM_WAREHOUSE": str(root / "warehouse" / "cdm.duckdb"),
        "CDM_EXPORTS": str(root / "exports"),
    }
    log = (root / "dagster_dev.log").open("w")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "dagster",
            "dev",
            "-w",
            "workspace.yaml",
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
        ],
        cwd=REPO,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        preexec_fn=_default_signals,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                with urllib.request.urlopen(f"{url}/server_info", timeout=5):
                    break
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise AssertionError(
                        f"dagster dev did not come up: see {root / 'dagster_dev.log'}"
                    ) from None
                time.sleep(2)
        yield url, chromium, root
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
        log.close()


def browser(chromium: str, root: Path, *args: str) -> subprocess.CompletedProcess:
    profile = root / f"chromium-{time.monotonic_ns()}"
    return subprocess.run(
        [
            chromium,
            *CHROMIUM_FLAGS,
            f"--user-data-dir={profile}",
            "--virtual-time-budget=20000",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def test_ui_runs_the_job_and_shows_assets_checks_and_schedule(dagster_ui):
    url, chromium, root = dagster_ui
    launched = graphql(
        url,
        "mutation($p: ExecutionParams!) { launchRun(executionParams: $p) { __typename "
        "... on LaunchRunSuccess { run { runId } } ... on PythonError { message } } }",
        {
            "p": {
                "selector": {
                    "repositoryLocationName": "cdm_pipeline",
                    "repositoryName": "__repository__",
                    "jobName": "cdm_nightly",
                },
                "runConfigData": {},
            }
        },
    )["launchRun"]
    assert launched["__typename"] == "LaunchRunSuccess", launched
    run_id = launched["run"]["runId"]
    deadline = time.monotonic() + 600
    status = None
    while time.monotonic() < deadline:
        status = graphql(
            url,
            "query($id: ID!) { runOrError(runId: $id) { ... on Run { status } } }",
            {"id": run_id},
        )["runOrError"]["status"]
        if status in ("SUCCESS", "FAILURE", "CANCELED"):
            break
        time.sleep(3)
    assert status == "SUCCESS"

    nodes = graphql(url, "{ assetNodes { assetKey { path } groupName hasAssetChecks } }")[
        "assetNodes"
    ]
    keys = {"/".join(n["assetKey"]["path"]) for n in nodes}
    assert {
        "raw/crm_contacts",
        "staging/orders",
        "identity/person_records",
        "mart/customer_xref",
        "mart/customers",
        "governance/privacy_request_log",
        "analytics/analyst_database",
    } <= keys
    assert {n["groupName"] for n in nodes} >= {
        "1_ingest",
        "2_validate",
        "3_standardise",
        "4_resolve",
        "5_golden",
        "6_governance",
    }
    assert all(n["hasAssetChecks"] for n in nodes)

    repository = graphql(
        url,
        "{ repositoriesOrError { ... on RepositoryConnection { nodes { schedules { name cronSchedule "
        "executionTimezone futureTicks(limit: 1) { results { timestamp } } } sensors { name } } } } }",
    )["repositoriesOrError"]["nodes"][0]
    schedule = next(s for s in repository["schedules"] if s["name"] == "cdm_nightly_schedule")
    assert schedule["cronSchedule"] == "0 2 * * *"
    next_tick = time.gmtime(schedule["futureTicks"]["results"][0]["timestamp"])
    assert (next_tick.tm_hour, next_tick.tm_min) == (2, 0)  # UTC is the configured timezone
    assert {"cdm_new_landing_files", "cdm_dead_runs"} <= {s["name"] for s in repository["sensors"]}

    # What every table asset shows of its data, from its latest materialisation.
    entries = graphql(
        url,
        "{ assetNodes { assetKey { path } assetMaterializations(limit: 1) "
        "{ metadataEntries { label } } } }",
    )["assetNodes"]
    labels = {
        "/".join(n["assetKey"]["path"]): {
            e["label"] for m in n["assetMaterializations"] for e in m["metadataEntries"]
        }
        for n in entries
    }
    # Every asset, the steps that act on tables too (retention, scrubbing, exports): what they
    # hold or did tonight, as rows, columns and a masked preview.
    assert len(labels) >= 30
    for key, shown in labels.items():
        assert {"dagster/row_count", "dagster/column_schema", "preview"} <= shown, key
    assert {"match_weight_histogram", "match_probability_histogram"} <= labels[
        "identity/match_pairs"
    ]
    assert {"cluster_size_distribution", "link_methods"} <= labels["mart/customer_xref"]

    shots = Path(os.environ.get("CDM_SCREENSHOT_DIR", root / "screenshots"))
    shots.mkdir(parents=True, exist_ok=True)
    for name, page, height in (
        ("asset_graph", "asset-groups", 1000),
        ("customers_checks", "assets/mart/customers?view=checks", 1000),
        # Tall pages: row count, columns, then the materialisation's preview and plots.
        ("customers_overview", "assets/mart/customers", 4000),
        ("customer_xref_plots", "assets/mart/customer_xref", 4000),
        ("match_pairs_plots", "assets/identity/match_pairs", 4000),
    ):
        target = shots / f"{name}.png"
        browser(
            chromium,
            root,
            f"--window-size=1600,{height}",
            f"--screenshot={target}",
            f"{url}/{page}",
        )
        assert target.exists() and target.stat().st_size > 20_000, name
    dom = browser(chromium, root, "--dump-dom", f"{url}/assets/mart/customers?view=checks").stdout
    for text in ("customer_id_unique_not_null", "residual_near_duplicates", "Passed"):
        assert text in dom, text
