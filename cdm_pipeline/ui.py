"""``cdm ui``: the Dagster webserver and daemon on this project, stopped as one process tree."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path


def run_ui(host: str, port: int) -> int:
    """The Dagster webserver and daemon on this project's Definitions, through the shipped
    ``workspace.yaml`` (the same code location name, ``cdm_pipeline``, as ``dagster dev`` in a
    checkout: UI links are the same either way). ``dg dev``, its successor, needs the project
    checkout; both load the same Definitions. Ctrl-C or SIGTERM stops the whole process tree
    (webserver, daemon, code servers) within ten seconds."""
    from cdm_pipeline.instance import dagster_home
    from cdm_pipeline.locations import bundled

    dagster_home()
    # The code server may start in another folder than this one: the data folder goes absolute.
    os.environ.setdefault(
        "CDM_DATA_DIR", str(Path(os.environ.get("CDM_DATA_DIR", "data")).resolve())
    )
    command = [
        sys.executable,
        "-W",
        "ignore::FutureWarning",
        "-m",
        "dagster",
        "dev",
        "-w",
        str(bundled("workspace.yaml")),
        "-h",
        host,
        "-p",
        str(port),
    ]
    print(f"Dagster UI on http://{host}:{port} (Ctrl-C stops it)")
    # Its own process group, with the default handlers (a shell that started cdm in the
    # background ignores SIGINT, and the children would inherit that): stopped as one.
    ui = subprocess.Popen(command, start_new_session=True, preexec_fn=_default_signals)
    stopping = []

    def stop(signum, _frame) -> None:
        stopping.append(signum)
        _stop_group(ui)

    previous = {s: signal.signal(s, stop) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        code = ui.wait()
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    if stopping:
        print("Dagster UI stopped")
        return 0
    return code


def _default_signals() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _stop_group(process: subprocess.Popen, grace: float = 6.0) -> None:
    """SIGTERM to the process group, then SIGKILL to what is left after ``grace`` seconds."""
    try:
        os.killpg(process.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        try:
            os.killpg(process.pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.2)
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
