"""Benchmark: the full pipeline at N people, ER accuracy against the demo truth, and our resolver
against Splink (DuckDB backend, EM-trained) on the same standardised person records, in one process.

    .venv/bin/pip install -e '.[bench]'
    .venv/bin/python benchmarks/bench.py --people 100000 [--no-splink] [--repeat 1]

Prints per-stage wall time, rows/s and peak RSS; pairwise and B-cubed precision/recall/F1 and
blocking recall; and ours/Splink ratios for time, peak memory and F1. Memory of a phase is the
peak RSS above the RSS at the phase's start (both run in this process). Figures go to
benchmarks/out/<people>.json as well.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
import duckdb
import polars as pl
import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cdm_pipeline.defs.build import build_definitions  # noqa: E402
from cdm_pipeline.defs.jobs import NIGHTLY_JOB  # noqa: E402
from cdm_pipeline.demo.generator import generate  # noqa: E402
from cdm_pipeline.evaluation import (  # noqa: E402
    NAME_EVIDENCE,
    STRONG_EVIDENCE,
    accuracy,
    blocking_recall,
    evidence_ceiling,
)
from cdm_pipeline.locations import PACKAGE_DATA, Settings  # noqa: E402
from cdm_pipeline.pipeline_config import load_config  # noqa: E402
from cdm_pipeline.resolve.engine import resolve  # noqa: E402
from cdm_pipeline.resolve.incremental import (  # noqa: E402
    ResolverState,
    model_fingerprint,
    resolve_incremental,
)

# Truth-aware linkers on exact shared values (``evaluation.evidence_ceiling``): with the truth
# attributing records a family shares an identifier with, then without (what any matcher can
# attribute), then with names alone as evidence too.
CEILINGS = [
    ("ceiling_exact_evidence", STRONG_EVIDENCE, False),
    ("ceiling_exact_attributable", STRONG_EVIDENCE, True),
    ("ceiling_with_names_attributable", STRONG_EVIDENCE + NAME_EVIDENCE, True),
]


class PeakRss:
    """Samples the RSS of this process and its children (worker pools) every 50 ms;
    ``peak_above_start`` in MB, and ``samples`` (wall-clock time, bytes) for peaks per step.

    The list of children is looked up every 0.5 s, not at every sample: finding them reads
    every process's /proc entry, which cost 10 % of a core, taken from the job measured."""

    CHILDREN_EVERY = 10  # samples

    def __init__(self, root: psutil.Process | None = None) -> None:
        """``root``: measure that process and its children instead of this one (a ``cdm run``
        started as a subprocess)."""
        self.process = root or psutil.Process(os.getpid())
        self.children: list[psutil.Process] = []
        self.start = self.peak = self._rss(look_for_children=True)
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _rss(self, look_for_children: bool) -> int:
        try:
            if look_for_children:
                self.children = self.process.children(recursive=True)
            total = self.process.memory_info().rss
        except psutil.Error:  # the measured process has ended
            return 0
        for child in self.children:
            try:
                total += child.memory_info().rss
            except psutil.Error:
                pass
        return total

    def _run(self) -> None:
        sample = 0
        while not self._stop.is_set():
            rss = self._rss(look_for_children=sample % self.CHILDREN_EVERY == 0)
            self.samples.append((time.time(), rss))
            self.peak = max(self.peak, rss)
            sample += 1
            time.sleep(0.05)

    def __enter__(self) -> PeakRss:
        gc.collect()
        self.start = self.peak = self._rss(look_for_children=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._rss(look_for_children=True))

    @property
    def peak_mb(self) -> float:
        return self.peak / 2**20

    @property
    def peak_above_start_mb(self) -> float:
        return (self.peak - self.start) / 2**20

    def peak_between_mb(self, start: float, end: float) -> float:
        inside = [rss for t, rss in self.samples if start <= t <= end]
        return max(inside, default=0) / 2**20


@contextmanager
def timed(label: str, figures: dict):
    with PeakRss() as rss:
        started = time.perf_counter()
        yield rss
        elapsed = time.perf_counter() - started
    figures[label] = {
        "seconds": round(elapsed, 2),
        "peak_rss_mb": round(rss.peak_mb),
        "peak_above_start_mb": round(rss.peak_above_start_mb),
    }


def run_pipeline(
    workdir: Path,
    landing: Path,
    figures: dict,
    label: str = "pipeline",
    sources: Path = PACKAGE_DATA / "sources.yaml",
    parallel: bool = False,
) -> Settings:
    """The nightly job, in this process; with ``parallel`` as ``cdm run --parallel`` runs it
    (every step its own process, the comparison shards side by side), memory summed over
    the processes alive at once."""
    settings = Settings(
        landing_dir=landing,
        warehouse_path=workdir / "warehouse" / "cdm.duckdb",
        sources_path=sources,
        pipeline_config_path=PACKAGE_DATA / "pipeline.yaml",
        overrides_path=workdir / "none.csv",
        exports_dir=workdir / "exports",
    )
    run_config = {"loggers": {"console": {"config": {"log_level": "ERROR"}}}}
    if parallel:
        from cdm_pipeline.definitions import parallel_job

        os.environ.update(settings.environ())
        (workdir / "dagster_home").mkdir(parents=True, exist_ok=True)
        instance = dg.DagsterInstance.local_temp(str(workdir / "dagster_home"))
        with timed(label, figures) as rss:
            result = dg.execute_job(
                dg.reconstructable(parallel_job),
                instance=instance,
                run_config=run_config,
                raise_on_error=False,
            )
    else:
        instance = dg.DagsterInstance.ephemeral()
        with timed(label, figures) as rss:
            result = (
                build_definitions(settings)
                .resolve_job_def(NIGHTLY_JOB)
                .execute_in_process(instance=instance, raise_on_error=False, run_config=run_config)
            )
    figures[label]["success"] = result.success
    stages, peaks = {}, {}
    for step in instance.get_run_step_stats(result.run_id):
        stages[step.step_key] = round((step.end_time or 0) - (step.start_time or 0), 2)
        peaks[step.step_key] = round(rss.peak_between_mb(step.start_time or 0, step.end_time or 0))
    figures[f"{label}_stages_seconds" if label != "pipeline" else "stages_seconds"] = stages
    figures[f"{label}_stages_peak_rss_mb" if label != "pipeline" else "stages_peak_rss_mb"] = peaks
    return settings


def ours(records: pl.DataFrame, config: dict, figures: dict) -> tuple[pl.DataFrame, object]:
    with timed("ours_resolve", figures):
        result = resolve(records, config["resolve"])
    assigned = result.clusters.select("record_key", cluster=pl.col("cluster_key"))
    return assigned, result


def splink_frame(records: pl.DataFrame) -> pl.DataFrame:
    """The standardised person records in the columns the Splink settings name."""
    return records.select(
        unique_id=pl.col("record_key"),
        first_name=pl.col("first_name_key"),
        surname=pl.col("last_name_key"),
        dob=pl.col("birth_date").cast(pl.String),
        email=pl.col("email_norm"),
        phone=pl.col("phone_e164"),
        street=pl.col("street_key"),
        postcode=pl.col("postal_code"),
        city=pl.col("city_key"),
    )


def splink(frame: pl.DataFrame, figures: dict) -> pl.DataFrame:
    """Splink 5 (DuckDB) with a documented, reasonable configuration: name, date-of-birth and email
    comparisons from its library, exact phone/postcode/city with term frequencies, Levenshtein
    street; u by random sampling (1e7 pairs), m by EM on three training blocks; the same
    blocking rules as ours; clusters at Splink's 0.5 match probability."""
    import splink.comparison_library as cl
    from splink import DuckDBAPI, Linker, SettingsCreator, block_on

    with timed("splink_resolve", figures):
        db_api = DuckDBAPI()
        data = db_api.register(frame.to_arrow())
        settings = SettingsCreator(
            link_type="dedupe_only",
            comparisons=[
                cl.NameComparison("first_name").configure(term_frequency_adjustments=True),
                cl.NameComparison("surname").configure(term_frequency_adjustments=True),
                cl.DateOfBirthComparison("dob", input_is_string=True),
                cl.EmailComparison("email"),
                cl.ExactMatch("phone").configure(term_frequency_adjustments=True),
                cl.LevenshteinAtThresholds("street", [2]),
                cl.ExactMatch("postcode").configure(term_frequency_adjustments=True),
                cl.ExactMatch("city").configure(term_frequency_adjustments=True),
            ],
            blocking_rules_to_generate_predictions=[
                block_on("email"),
                block_on("phone"),
                block_on("surname", "first_name"),
                block_on("surname", "dob"),
                block_on("first_name", "dob"),
                block_on("postcode", "first_name"),
            ],
            retain_intermediate_calculation_columns=False,
        )
        linker = Linker(data, settings, log_level=40)
        linker.training.estimate_probability_two_random_records_match(
            [block_on("email"), block_on("first_name", "surname", "dob")], recall=0.8
        )
        linker.training.estimate_u_using_random_sampling(max_pairs=1e7)
        for rule in (block_on("first_name", "surname"), block_on("dob"), block_on("email")):
            linker.training.estimate_parameters_using_expectation_maximisation(rule)
        predictions = linker.inference.predict(threshold_match_probability=0.5)
        clusters = linker.clustering.cluster_pairwise_predictions_at_threshold(predictions, 0.5)
        assigned = pl.from_arrow(
            clusters.as_duckdbpyrelation().select("unique_id, cluster_id").arrow()
        )
    return assigned.select(record_key="unique_id", cluster=pl.col("cluster_id").cast(pl.String))


def incremental(
    records: pl.DataFrame, config: dict, truth: pl.DataFrame, figures: dict, repeat: int = 1
) -> None:
    """A night that brings 1 % new people: the model and clusters of the other 99 % are stored
    (resolved untimed), then the incremental run is timed against the full run above, and its
    customers compared with a full rebuild by the same model."""
    settings = config["resolve"]
    people = truth["person"].unique().sort()
    newcomers = people.sample(fraction=0.01, seed=1)
    known = truth.filter(~pl.col("person").is_in(newcomers.implode()))
    earlier = records.join(known, on="record_key", how="semi")
    before = resolve(earlier, settings)
    state = ResolverState(
        before.params, before.profiles, model_fingerprint(settings), earlier.height
    )
    del before
    gc.collect()
    times = []
    for _ in range(repeat):  # the same night again from the same stored state
        with timed("ours_incremental", figures):
            tonight = resolve_incremental(records, settings, state)
        times.append(figures["ours_incremental"]["seconds"])
    figures["ours_incremental"]["median_seconds"] = statistics.median(times)
    rebuilt = resolve(records, settings, model=state.model)
    same = (
        tonight.clusters.select("record_key", "cluster_key")
        .sort("record_key")
        .equals(rebuilt.clusters.select("record_key", "cluster_key").sort("record_key"))
    )
    figures["ours_incremental"].update(
        {
            "new_people": newcomers.len(),
            "new_records": records.height - earlier.height,
            "profiles_reclustered": tonight.refreshed.len(),
            "profiles": tonight.profiles.height,
            "same_customers_as_full_rebuild": same,
            "share_of_full_resolve_time": round(
                figures["ours_incremental"]["median_seconds"]
                / figures["ours_resolve"]["median_seconds"],
                4,
            ),
        }
    )


def truth_frame(truth_dir: Path) -> pl.DataFrame:
    truth = pl.read_parquet(truth_dir / "records.parquet").filter(~pl.col("planted_bad"))
    return truth.select(
        record_key=pl.col("source") + ":" + pl.col("record_id"),
        person=pl.col("person_id").cast(pl.String),
    )


def _xref(warehouse: Path) -> pl.DataFrame:
    with duckdb.connect(str(warehouse), read_only=True) as conn:
        return conn.sql("select record_key, customer_id from mart.customer_xref").pl()


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--people", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--no-splink", action="store_true")
    parser.add_argument(
        "--rerun", action="store_true", help="run the job a second time with no new landing file"
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="full and incremental resolver runs to take medians of",
    )
    args = parser.parse_args()
    figures: dict = {"people": args.people}
    workdir = Path(tempfile.mkdtemp(prefix="cdm-bench-"))
    with timed("generate", figures):
        paths = generate(people=args.people, seed=args.seed, out=workdir, days=2)
    figures["generate"]["people_per_second"] = round(args.people / figures["generate"]["seconds"])
    settings = run_pipeline(workdir, paths.landing, figures)
    if args.rerun:  # the next night with no new file: what an unchanged night costs
        before = _xref(settings.warehouse_path)
        run_pipeline(workdir, paths.landing, figures, label="rerun")
        after = _xref(settings.warehouse_path)
        both = before.join(after, on="record_key", suffix="_after")
        figures["rerun_records_moved"] = both.filter(
            pl.col("customer_id").ne_missing(pl.col("customer_id_after"))
        ).height
        figures["rerun_records_gone"] = before.height - both.height  # retention, by age
    with duckdb.connect(str(settings.warehouse_path), read_only=True) as conn:
        counts = {
            t: conn.execute(f"select count(*) from {t}").fetchall()[0][0]
            for t in (
                "raw.file_ledger",
                "identity.person_records",
                "mart.customers",
                "quarantine.rejected_rows",
            )
        }
        raw_rows = conn.execute("select sum(row_count) from raw.file_ledger").fetchall()[0][0]
        pipeline_xref = conn.sql(
            "select record_key, customer_id as cluster from mart.customer_xref"
        ).pl()
        records = conn.sql("select * from identity.person_records").pl()
    figures["rows"] = {"landed": raw_rows, **counts}
    truth = truth_frame(paths.truth)
    in_scope = truth.join(records.select("record_key"), on="record_key", how="semi")
    figures["pipeline_accuracy"] = vars(accuracy(pipeline_xref, in_scope))
    persons = pl.read_parquet(paths.truth / "persons.parquet").height
    figures["customers_vs_true_people"] = {
        "customers": counts["mart.customers"],
        "true_people_with_records": in_scope["person"].n_unique(),
        "people_generated": persons,
    }

    config = load_config(PACKAGE_DATA / "pipeline.yaml")
    times = []
    for _ in range(args.repeat):
        assigned, result = ours(records, config, figures)
        times.append(figures["ours_resolve"]["seconds"])
    figures["ours_resolve"]["median_seconds"] = statistics.median(times)
    figures["ours_accuracy"] = vars(accuracy(assigned, in_scope))
    # What exact shared evidence allows a linker that knows the truth: the recall ceilings.
    for name, evidence, attributable in CEILINGS:
        figures[name] = vars(evidence_ceiling(records, in_scope, evidence, attributable))
    figures["blocking"] = {
        "candidate_pairs": result.stats["candidate_pairs"],
        "blocking_recall": round(blocking_recall(result.pairs, result.membership, in_scope), 4),
        "rules": [vars(r) for r in result.blocking],
    }
    del result
    gc.collect()
    incremental(records, config, truth, figures, args.repeat)
    del pipeline_xref, truth
    gc.collect()
    if not args.no_splink:
        splink_input = splink_frame(records)
        del records  # Splink's phase is measured from here: hold no more than its input
        gc.collect()
        splink_assigned = splink(splink_input, figures)
        figures["splink_accuracy"] = vars(accuracy(splink_assigned, in_scope))
        figures["ratios_ours_over_splink"] = {
            "time": round(
                figures["ours_resolve"]["median_seconds"] / figures["splink_resolve"]["seconds"], 3
            ),
            "peak_memory": round(
                figures["ours_resolve"]["peak_above_start_mb"]
                / max(figures["splink_resolve"]["peak_above_start_mb"], 1),
                3,
            ),
            "pairwise_f1": round(
                figures["ours_accuracy"]["pairwise_f1"] / figures["splink_accuracy"]["pairwise_f1"],
                4,
            ),
        }
    report(figures)
    out = ROOT / "benchmarks" / "out"
    out.mkdir(exist_ok=True)
    (out / f"{args.people}.json").write_text(json.dumps(figures, indent=2, default=str))
    return 0


def report(f: dict) -> None:
    print(f"\n== cdm-pipeline benchmark: {f['people']:,} people")
    print(
        f"generate           {f['generate']['seconds']:>8.1f} s  {f['generate']['people_per_second']:>10,} people/s"
    )
    p = f["pipeline"]
    print(
        f"pipeline (all)     {p['seconds']:>8.1f} s  peak RSS {p['peak_rss_mb']:,} MB  success={p['success']}  "
        f"{f['rows']['landed'] / p['seconds']:,.0f} landed rows/s"
    )
    for step, seconds in sorted(f["stages_seconds"].items(), key=lambda kv: -kv[1]):
        print(f"  {step:<36} {seconds:>7.2f} s")
    if "rerun" in f:
        print(
            f"rerun, no new files {f['rerun']['seconds']:>8.1f} s  peak RSS {f['rerun']['peak_rss_mb']:,} MB"
            f"  records moved to another customer {f['rerun_records_moved']:,}"
            f" (records gone since: {f['rerun_records_gone']:,})"
        )
        for step, seconds in sorted(f["rerun_stages_seconds"].items(), key=lambda kv: -kv[1])[:8]:
            print(f"  {step:<36} {seconds:>7.2f} s")
    print(f"rows: {f['rows']}")
    print(f"customers vs truth: {f['customers_vs_true_people']}")
    for name in (
        "pipeline_accuracy",
        "ours_accuracy",
        "splink_accuracy",
        *(name for name, _, _ in CEILINGS),
    ):
        if name in f:
            a = f[name]
            print(
                f"{name:<36} pairwise P {a['pairwise_precision']:.4f} R {a['pairwise_recall']:.4f} F1 {a['pairwise_f1']:.4f}"
                f" | B-cubed P {a['bcubed_precision']:.4f} R {a['bcubed_recall']:.4f} F1 {a['bcubed_f1']:.4f}"
            )
    print(
        f"blocking: {f['blocking']['candidate_pairs']:,} candidate pairs, recall {f['blocking']['blocking_recall']}"
    )
    print(
        f"ours resolve       {f['ours_resolve']['median_seconds']:>8.2f} s (median)  peak +{f['ours_resolve']['peak_above_start_mb']:,} MB"
    )
    if "ours_incremental" in f:
        i = f["ours_incremental"]
        print(
            f"ours incremental   {i['median_seconds']:>8.2f} s (median)  peak +{i['peak_above_start_mb']:,} MB  "
            f"({i['share_of_full_resolve_time']:.1%} of the full resolve; {i['new_people']:,} new people, "
            f"{i['profiles_reclustered']:,} of {i['profiles']:,} profiles re-clustered; "
            f"same customers as a full rebuild: {i['same_customers_as_full_rebuild']})"
        )
    if "splink_resolve" in f:
        print(
            f"splink resolve     {f['splink_resolve']['seconds']:>8.2f} s  peak +{f['splink_resolve']['peak_above_start_mb']:,} MB"
        )
        print(f"ours / splink      {f['ratios_ours_over_splink']}")


if __name__ == "__main__":
    sys.exit(main())
