"""Accuracy side by side: our pipeline and Splink 5 on the same records of several datasets.

    .venv/bin/pip install -e '.[bench]'
    .venv/bin/python benchmarks/accuracy.py [--role report|development|all]
        [--datasets febrl3_no_id,clean_s23_n2,...] [--records 20000]

Datasets have two roles (``cdm_pipeline.demo.datasets``): the resolver is tuned on the
development sets only, and the table the README gives is the report sets', which it was never
tuned on (other seeds and noise rates of every generator profile, Febrl3/4 with and without
their id column). ``--role report`` is the default.

Every dataset reaches us as a user's would: landing files and a sources file (``cdm_pipeline.demo.datasets``),
run through the whole Dagster job (``cdm run``'s job), scored from ``mart.customer_xref`` by
``cdm evaluate``'s code. Splink gets the records we standardised (identity.person_records), so
both sides start from the same cleaned values, and is configured as its own examples do for
person data (febrl3 and deduplicate_50k_synthetic in Splink's docs):

- comparisons from ``splink.comparison_library``: forename+surname with term frequencies,
  date of birth, email, phone, the customer-given id by Damerau-Levenshtein, and the address as
  one comparison (street and postcode together, postcode, city), not three independent ones;
- the prior from deterministic rules (``estimate_probability_two_random_records_match``);
- u by random sampling; m by EM on a name block and a birth-date block (not on email or phone,
  which shared family contacts pollute), without term frequencies;
- blocking rules each of which Splink can afford alone (the first+surname block only below
  200,000 records); clusters at 0.95, as its docs do;
- its DuckDB gets the memory limit ours has (``CDM_DUCKDB_MEMORY_LIMIT``, default 4GB).

Both sides' models and impure clusters (clusters holding records of more than one true person)
are saved under ``benchmarks/out/accuracy/<dataset>/``, so that a claim about why either side
misses can be checked against what it learnt.

Our figures: time and peak RSS of the whole night (ingest to analyst database), and of its resolve
steps; Splink's: train, predict and cluster. Peak RSS is measured above the phase's start in
this process. One table out, and ``benchmarks/out/accuracy.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import duckdb
import polars as pl

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench import run_pipeline, splink_frame, timed  # noqa: E402

from cdm_pipeline.defs.resources import duckdb_memory_limit  # noqa: E402
from cdm_pipeline.demo.datasets import DATASETS, DEVELOPMENT, REPORT, Dataset, build  # noqa: E402
from cdm_pipeline.evaluation import accuracy, evaluate_warehouse, read_truth  # noqa: E402

RESOLVE_STEPS = ("identity__pair_comparisons", "identity__resolution")


def run_ours(dataset: Dataset, workdir: Path, figures: dict, parallel: bool = False) -> Path:
    """The whole nightly job on the dataset's landing folder and sources file."""
    settings = run_pipeline(
        workdir, dataset.landing, figures, "ours_night", dataset.sources, parallel=parallel
    )
    if not figures["ours_night"]["success"]:
        raise RuntimeError(f"{dataset.name}: the pipeline run failed")
    figures["ours_resolve_seconds"] = round(
        sum(
            seconds
            for step, seconds in figures["ours_night_stages_seconds"].items()
            if any(part in step for part in RESOLVE_STEPS)
        ),
        2,
    )
    return settings.warehouse_path


def splink_input(warehouse: Path) -> pl.DataFrame:
    """Our standardised person records in Splink's column names, with the id and the
    forename+surname column its name comparison takes term frequencies on."""
    with duckdb.connect(str(warehouse), read_only=True) as conn:
        records = conn.sql("select * from identity.person_records").pl()
    return splink_frame(records).with_columns(
        identifier=records["identifier_key"],
        first_name_surname=pl.concat_str(["first_name", "surname"], separator=" "),
    )


# Splink's clusters at its docs' 0.95, and at other thresholds: the table gives 0.95 and, in
# Splink's favour, its best threshold on the labels.
SPLINK_THRESHOLDS = (0.2, 0.35, 0.5, 0.8, 0.9, 0.95, 0.99)


def _splink_clusters(linker, predictions, threshold: float) -> pl.DataFrame:
    clusters = linker.clustering.cluster_pairwise_predictions_at_threshold(
        predictions, threshold_match_probability=threshold
    )
    assigned = pl.from_arrow(
        clusters.as_duckdbpyrelation().select("unique_id, cluster_id").to_arrow_table()
    )
    return assigned.select(record_key="unique_id", cluster=pl.col("cluster_id").cast(pl.String))


def run_splink(
    frame: pl.DataFrame, figures: dict, saved: Path | None = None, recipe: str = "person"
) -> dict[float, pl.DataFrame]:
    """Splink 5 as its documented examples configure it; returns ``record_key, cluster`` at
    each of ``SPLINK_THRESHOLDS`` (the time counts the clustering at 0.95 only).
    ``recipe="febrl"`` is its Febrl3 example (each name, birth date, postcode and id blocking
    alone, names by ``NameComparison``, EM on the birth-date and postcode blocks), for sets of
    names, address and birth date; ``"person"`` its 50k-synthetic one, for contact data. Its
    trained model goes to ``saved/splink_model.json`` when ``saved`` is given."""
    from splink import DuckDBAPI, Linker, SettingsCreator

    present = {c for c in frame.columns if frame[c].null_count() < frame.height}
    if recipe == "febrl":
        comparisons, rules, deterministic, training = _febrl_recipe(present)
    else:
        comparisons, rules, deterministic, training = _person_recipe(present, frame.height)
    limit = duckdb_memory_limit()
    figures["duckdb_memory_limit"] = limit
    with timed("splink_run", figures):
        db_api = DuckDBAPI(duckdb.connect(config={"memory_limit": limit}))
        linker = Linker(
            db_api.register(frame.to_arrow()),
            SettingsCreator(
                link_type="dedupe_only",
                comparisons=comparisons,
                blocking_rules_to_generate_predictions=rules,
                retain_intermediate_calculation_columns=False,
            ),
            log_level=40,
        )
        linker.training.estimate_probability_two_random_records_match(
            deterministic, recall=0.9 if recipe == "febrl" else 0.8
        )
        linker.training.estimate_u_using_random_sampling(
            max_pairs=1e7 if frame.height > 50_000 else 1e6
        )
        for rule in training:
            linker.training.estimate_parameters_using_expectation_maximisation(
                rule, estimate_without_term_frequencies=True
            )
        predictions = linker.inference.predict(threshold_match_probability=0.2)
        clustered = {0.95: _splink_clusters(linker, predictions, 0.95)}
    for threshold in SPLINK_THRESHOLDS:  # outside the timing
        if threshold not in clustered:
            clustered[threshold] = _splink_clusters(linker, predictions, threshold)
    if saved is not None:
        linker.misc.save_model_to_json(str(saved / "splink_model.json"), overwrite=True)
    return clustered


def _person_recipe(present: set[str], records: int) -> tuple[list, list, list, list]:
    """Splink's person-data configuration (its 50k-synthetic example, with contacts)."""
    import splink.comparison_level_library as cll
    import splink.comparison_library as cl
    from splink import block_on

    comparisons = [
        cl.ForenameSurnameComparison(
            "first_name", "surname", forename_surname_concat_col_name="first_name_surname"
        ),
        cl.DateOfBirthComparison("dob", input_is_string=True),
    ]
    if "email" in present:
        comparisons.append(cl.EmailComparison("email"))
    if "phone" in present:
        comparisons.append(cl.ExactMatch("phone").configure(term_frequency_adjustments=True))
    if "identifier" in present:
        comparisons.append(cl.DamerauLevenshteinAtThresholds("identifier", [2]))
    comparisons.append(
        cl.CustomComparison(
            output_column_name="address",
            comparison_levels=[
                cll.And(cll.NullLevel("street"), cll.NullLevel("postcode")).configure(
                    is_null_level=True
                ),
                cll.And(cll.ExactMatchLevel("street"), cll.ExactMatchLevel("postcode")),
                cll.And(cll.LevenshteinLevel("street", 2), cll.ExactMatchLevel("postcode")),
                cll.ExactMatchLevel("postcode"),
                cll.ExactMatchLevel("city"),
                cll.ElseLevel(),
            ],
        )
    )
    rules = [block_on(c) for c in ("email", "phone", "identifier") if c in present] + [
        block_on("surname", "dob"),
        block_on("first_name", "dob"),
        block_on("postcode", "first_name"),
        block_on("postcode", "surname"),
        block_on("postcode", "dob"),
    ]
    if records < 200_000:
        rules.insert(0, block_on("first_name", "surname"))
    deterministic = [block_on("first_name", "surname", "dob")] + [
        block_on(c, "first_name") for c in ("email", "phone") if c in present
    ]
    if "identifier" in present:
        deterministic.append(block_on("identifier"))
    return comparisons, rules, deterministic, [block_on("first_name", "surname"), block_on("dob")]


def _febrl_recipe(present: set[str]) -> tuple[list, list, list, list]:
    """Splink's Febrl3 example, on our standardised columns (its street number and postcode
    exact matches become the standardised street and postcode)."""
    import splink.comparison_library as cl
    from splink import block_on

    rules = [block_on(c) for c in ("identifier", "first_name", "surname", "dob", "postcode")]
    comparisons = [
        cl.NameComparison("first_name"),
        cl.NameComparison("surname"),
        cl.DateOfBirthComparison("dob", input_is_string=True),
        cl.ExactMatch("street").configure(term_frequency_adjustments=True),
        cl.ExactMatch("postcode").configure(term_frequency_adjustments=True),
    ]
    deterministic = [
        block_on("first_name", "surname", "dob"),
        "l.first_name = r.surname and l.surname = r.first_name and l.dob = r.dob",
    ]
    if "identifier" in present:
        comparisons.insert(3, cl.DamerauLevenshteinAtThresholds("identifier", [2]))
        deterministic.insert(0, block_on("identifier"))
    else:
        rules = rules[1:]
    return comparisons, rules, deterministic, [block_on("dob"), block_on("postcode")]


def measure(name: str, records: int, splink: bool, workdir: Path, parallel: bool = False) -> dict:
    dataset = build(name, workdir / "data", records)
    role = "development" if name in DEVELOPMENT else "report" if name in REPORT else "other"
    figures: dict = {"dataset": dataset.name, "role": role}
    saved = ROOT / "benchmarks" / "out" / "accuracy" / dataset.name
    saved.mkdir(parents=True, exist_ok=True)
    warehouse = run_ours(dataset, workdir, figures, parallel)
    figures["executor"] = "multiprocess" if parallel else "in-process"
    truth = read_truth(dataset.truth)
    with duckdb.connect(str(warehouse), read_only=True) as conn:
        report = evaluate_warehouse(conn, truth)
        ours = conn.sql("select record_key, customer_id as cluster from mart.customer_xref").pl()
        (saved / "ours_model.json").write_text(
            conn.sql("select model_json from identity.resolver_model").fetchall()[0][0]
        )
    impure_clusters(ours, truth).write_csv(saved / "ours_impure_clusters.csv")
    figures["records"] = report.labelled
    figures["records_in_warehouse"] = report.found
    figures["ours"] = report.accuracy.__dict__
    figures["ours_link_methods"] = dict(
        report.link_methods.select("link_method", "records").iter_rows()
    )
    if splink:
        frame = splink_input(warehouse)
        recipe = "febrl" if name.startswith("febrl") else "person"
        figures["splink_recipe"] = recipe
        clustered = run_splink(frame, figures, saved, recipe)
        impure_clusters(clustered[0.95], truth).write_csv(saved / "splink_impure_clusters.csv")
        figures["splink"] = accuracy(clustered[0.95], truth).__dict__
        at = {t: accuracy(c, truth).__dict__ for t, c in clustered.items()}
        best = max(at, key=lambda t: at[t]["pairwise_f1"])
        figures["splink_best"] = {"threshold": best, **at[best]}
    return figures


def impure_clusters(assigned: pl.DataFrame, truth: pl.DataFrame) -> pl.DataFrame:
    """``cluster, record_key, person``: every record of each cluster holding more than one true
    person (its false links, to be read)."""
    joined = assigned.join(truth, on="record_key").select("cluster", "record_key", "person")
    impure = joined.group_by("cluster").agg(pl.col("person").n_unique().alias("people"))
    return (
        joined.join(impure.filter(pl.col("people") > 1), on="cluster")
        .drop("people")
        .sort("cluster", "person", "record_key")
    )


def _prf(a: dict) -> str:
    return f"{a['pairwise_precision']:.4f} / {a['pairwise_recall']:.4f} / {a['pairwise_f1']:.4f}"


def table(rows: list[dict]) -> str:
    head = (
        "| dataset | role | records | ours P / R / F1 | ours B-cubed F1 | Splink P / R / F1 "
        "| Splink B-cubed F1 | Splink at its best threshold: F1 (threshold) "
        "| ours night s (resolve s) / peak MB | Splink s / peak MB |\n"
        "|---|---|---|---|---|---|---|---|---|---|"
    )
    lines = [head]
    for f in rows:
        o, s = f["ours"], f.get("splink")
        lines.append(
            f"| {f['dataset']} | {f['role']} | {f['records']:,} | {_prf(o)} | {o['bcubed_f1']:.4f} | "
            + (f"{_prf(s)} | {s['bcubed_f1']:.4f} | " if s else "- | - | ")
            + (
                f"{f['splink_best']['pairwise_f1']:.4f} ({f['splink_best']['threshold']}) | "
                if s
                else "- | "
            )
            + f"{f['ours_night']['seconds']} ({f['ours_resolve_seconds']}) / {f['ours_night']['peak_above_start_mb']} | "
            + (
                f"{f['splink_run']['seconds']} / {f['splink_run']['peak_above_start_mb']} |"
                if s
                else "- |"
            )
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--role", choices=["report", "development", "all"], default="report")
    parser.add_argument("--datasets", help="comma-separated names (instead of --role)")
    parser.add_argument("--records", type=int, default=20_000, help="size of generated datasets")
    parser.add_argument("--no-splink", action="store_true")
    parser.add_argument(
        "--parallel",
        action="store_true",
        help="run the night as `cdm run --parallel` does: each step its own process",
    )
    args = parser.parse_args()
    names = (
        args.datasets.split(",")
        if args.datasets
        else {"report": REPORT, "development": DEVELOPMENT, "all": DATASETS}[args.role]
    )
    rows = []
    for name in names:
        with tempfile.TemporaryDirectory(prefix=f"cdm-accuracy-{name}-") as tmp:
            figures = measure(name, args.records, not args.no_splink, Path(tmp), args.parallel)
        rows.append(figures)
        print(table([figures]).splitlines()[-1], flush=True)
    print()
    print(table(rows))
    out = ROOT / "benchmarks" / "out"
    out.mkdir(exist_ok=True)
    (out / f"accuracy_{args.records}.json").write_text(json.dumps(rows, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
