"""What each blocking rule costs and what it finds, per dataset: the question a pair budget
answers by cost alone.

    .venv/bin/python benchmarks/blocking_yield.py --datasets clean,demo [--records 1000000]

For every rule of the shipped settings, after our whole night on the dataset (``cdm run``'s job,
as ``accuracy.py`` runs it): the pairs it makes per profile over all profiles (what the budget
``max_pairs_per_record`` is compared with), the pairs no earlier rule proposed (what tonight
compared because of it), and how many of those ended linked; with the night's wall time and
pairwise F1. A rule whose new pairs almost never link costs comparisons and finds nothing; the
same rule may find thousands of links in another profile (the full name alone: 4 links of 2.2M
new pairs in ``clean`` at a million records, 5,631 of 1.52M in ``demo``, 2026-12-03), which is
why no fixed budget can tell the two apart and the yield gate (``resolve.yield_gate``) judges a
rule with many new pairs by a scored sample instead: its verdicts are the last column. Which
datasets to read it on is the caller's choice: tune on the development sets only
(``cdm_pipeline.demo.datasets``).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import duckdb

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench import run_pipeline  # noqa: E402

from cdm_pipeline.demo.datasets import build  # noqa: E402
from cdm_pipeline.evaluation import evaluate_warehouse, read_truth  # noqa: E402

RULE_YIELD = """
select rule, rule_pairs, new_pairs, over_budget, linked_pairs, sampled_pairs, sampled_links,
    low_yield
from identity.blocking_report order by rowid
"""


def measure(name: str, records: int, workdir: Path) -> None:
    dataset = build(name, workdir / "data", records)
    figures: dict = {}
    run_pipeline(workdir / "night", dataset.landing, figures, "ours", dataset.sources)
    warehouse = workdir / "night" / "warehouse" / "cdm.duckdb"
    with duckdb.connect(str(warehouse), read_only=True) as conn:
        found = evaluate_warehouse(conn, read_truth(dataset.truth)).accuracy
        profiles = conn.execute("select count(*) from identity.profiles").fetchall()[0][0]
        rules = conn.execute(RULE_YIELD).fetchall()
    print(
        f"\n{name}: {records:,} records asked, {profiles:,} profiles; night "
        f"{figures['ours']['seconds']} s; pairwise P / R / F1 {found.pairwise_precision:.4f} / "
        f"{found.pairwise_recall:.4f} / {found.pairwise_f1:.4f}\n"
    )
    print(
        "| rule | pairs per profile | new pairs | linked | links per 10k new pairs "
        "| yield gate: sample linked |"
    )
    print("|---|---|---|---|---|---|")
    for rule, rule_pairs, new_pairs, over_budget, linked, sampled, sample_links, low in rules:
        per_profile = f"{rule_pairs / max(profiles, 1):.3f}" + (
            " (over budget)" if over_budget else ""
        )
        rate = f"{linked / new_pairs * 10_000:.1f}" if new_pairs and not low else "-"
        gate = f"{sample_links:,} of {sampled:,}" if sampled else ""
        gate += " (low yield: left out)" if low else ""
        print(
            f"| {rule} | {per_profile} | {new_pairs:,} | {linked:,} | {rate} | {gate} |",
            flush=True,
        )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--datasets", default="clean,demo", help="comma-separated names")
    parser.add_argument("--records", type=int, default=20_000, help="size of generated datasets")
    args = parser.parse_args()
    for name in args.datasets.split(","):
        with tempfile.TemporaryDirectory(prefix=f"cdm-blocking-{name}-") as tmp:
            measure(name, args.records, Path(tmp))
    return 0


if __name__ == "__main__":
    sys.exit(main())
