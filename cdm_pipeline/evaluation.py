"""Accuracy of a clustering against ground truth: pairwise and B-cubed precision/recall/F1.

Used by the tests and the benchmark only; the pipeline never reads truth.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl


@dataclass(frozen=True)
class Accuracy:
    records: int
    pairwise_precision: float
    pairwise_recall: float
    pairwise_f1: float
    bcubed_precision: float
    bcubed_recall: float
    bcubed_f1: float

    def lines(self) -> list[str]:
        return [
            f"records evaluated      {self.records:,}",
            f"pairwise precision     {self.pairwise_precision:.4f}",
            f"pairwise recall        {self.pairwise_recall:.4f}",
            f"pairwise F1            {self.pairwise_f1:.4f}",
            f"B-cubed precision      {self.bcubed_precision:.4f}",
            f"B-cubed recall         {self.bcubed_recall:.4f}",
            f"B-cubed F1             {self.bcubed_f1:.4f}",
        ]


def _f1(p: float, r: float) -> float:
    return 2 * p * r / (p + r) if p + r else 0.0


def _pairs(frame: pl.DataFrame, keys: list[str]) -> int:
    sizes = frame.group_by(keys).len()["len"].cast(pl.Int64)
    return int((sizes * (sizes - 1) // 2).sum())


def accuracy(assigned: pl.DataFrame, truth: pl.DataFrame) -> Accuracy:
    """Compare ``record_key, cluster`` with ``record_key, person``. Records without a cluster
    (left unlinked) count as singletons: they miss every true pair and make no false one."""
    joined = truth.join(assigned, on="record_key", how="left").with_columns(
        cluster=pl.coalesce(pl.col("cluster"), pl.lit("unlinked:") + pl.col("record_key"))
    )
    true_positive = _pairs(joined, ["cluster", "person"])
    predicted = _pairs(joined, ["cluster"])
    actual = _pairs(joined, ["person"])
    p = true_positive / predicted if predicted else 1.0
    r = true_positive / actual if actual else 1.0
    sized = joined.with_columns(
        n_cluster=pl.len().over("cluster"),
        n_person=pl.len().over("person"),
        n_both=pl.len().over(["cluster", "person"]),
    )
    bp = float((sized["n_both"] / sized["n_cluster"]).mean())
    br = float((sized["n_both"] / sized["n_person"]).mean())
    return Accuracy(joined.height, p, r, _f1(p, r), bp, br, _f1(bp, br))


def blocking_recall(
    candidate_pairs: pl.DataFrame, membership: pl.DataFrame, truth: pl.DataFrame
) -> float:
    """Share of true matching profile pairs (profiles holding records of one person) that the
    blocking rules proposed. Pairs inside one profile are matched without blocking."""
    person_profiles = (
        membership.join(truth, on="record_key").select("profile_id", "person").unique()
    )
    true_pairs = (
        person_profiles.join(person_profiles, on="person", suffix="_r")
        .filter(pl.col("profile_id") < pl.col("profile_id_r"))
        .select(id_l="profile_id", id_r="profile_id_r")
        .unique()
    )
    if true_pairs.height == 0:
        return 1.0
    found = true_pairs.join(
        candidate_pairs.select("id_l", "id_r"), on=["id_l", "id_r"], how="semi"
    ).height
    return found / true_pairs.height


# What a linker that knows the truth could link on exact shared evidence: records of one person
# joined through a chain of records that agree exactly on one of these (a typo'd or missing value
# breaks the chain). Linking on names alone is the weak set: same full name, or surname and birth
# date, which many different people share.
STRONG_EVIDENCE = (
    ("email_norm",),
    ("phone_e164",),
    ("first_name_key", "last_name_key", "birth_date"),
    ("first_name_key", "last_name_key", "street_key"),
    ("first_name_key", "last_name_key", "postal_code"),
)
NAME_EVIDENCE = (
    ("first_name_key", "last_name_key"),
    ("first_name_group", "last_name_key"),
    ("last_name_key", "birth_date"),
)


def evidence_ceiling(
    records: pl.DataFrame,
    truth: pl.DataFrame,
    evidence=STRONG_EVIDENCE,
    attributable_only: bool = False,
) -> Accuracy:
    """Accuracy of the truth-aware linker above: the recall no matcher can pass without linking
    on weaker evidence (or guessing), since nothing else in the records ties the rest together.
    ``attributable_only`` leaves out what only the truth can attribute: a record with no name
    whose email or phone several people share (a family inbox) could be any of them."""
    import numpy as np
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    known = records.join(truth, on="record_key").with_row_index("ix")
    nameless = pl.col("first_name_key").is_null() & pl.col("last_name_key").is_null()
    edges = []
    for keys in evidence:
        usable = known.drop_nulls(list(keys))
        if attributable_only and len(keys) == 1:
            shared = pl.col("person").n_unique().over(keys[0]) > 1
            usable = usable.filter(~(nameless & shared))
        first = pl.col("ix").min().over(["person", *keys])
        edges.append(usable.select("ix", root=first))
    pairs = pl.concat(edges)
    n = known.height
    graph = coo_matrix(
        (np.ones(pairs.height), (pairs["ix"].to_numpy(), pairs["root"].to_numpy())), shape=(n, n)
    )
    _, label = connected_components(graph, directed=False)
    linked = known.select("record_key", cluster=pl.Series(label).cast(pl.String))
    return accuracy(linked, truth)


# --------------------------------------------------------------------------- a user's labels

THRESHOLDS = (0.5, 0.8, 0.9, 0.95, 0.99, 0.999)


@dataclass(frozen=True)
class Evaluation:
    """How the warehouse's customers compare with a user's labelled sample."""

    labelled: int
    found: int  # labelled records present in mart.customer_xref
    accuracy: Accuracy
    link_methods: pl.DataFrame  # link_method, records, in_impure_customers
    thresholds: pl.DataFrame  # threshold, predicted_pairs, true_pairs, precision, recall
    left_out_sources: tuple[str, ...] = ()  # labelled, but no person source of the warehouse

    def lines(self) -> list[str]:
        out = [
            f"labelled records       {self.labelled:,} ({self.found:,} found in mart.customer_xref)",
            *(
                [f"left out (not person sources here): {', '.join(self.left_out_sources)}"]
                if self.left_out_sources
                else []
            ),
            *self.accuracy.lines()[1:],
            "",
            "records by link method (impure: the customer also holds another entity's records)",
        ]
        out += [
            f"  {method:<52} {n:>9,}  impure {impure:>7,}"
            for method, n, impure in self.link_methods.iter_rows()
        ]
        out += ["", "scored pairs at a threshold (match_probability >= t), record pairs:"]
        out += ["  threshold   predicted        true   precision   recall"]
        out += [
            f"  {t:>9}  {p:>10,}  {tp:>10,}   {pr:>9.4f}   {r:>6.4f}"
            for t, p, tp, pr, r in self.thresholds.iter_rows()
        ]
        return out


ID_COLUMNS = ("source_record_id", "record_id")
ENTITY_COLUMNS = ("entity_id", "person_id", "cluster", "customer")


def read_truth(path) -> pl.DataFrame:
    """Labels, CSV or Parquet: ``source``, the record's id (``source_record_id``, or
    ``record_id`` as the demo's truth names it) and a column naming the entity (the only other
    column, or one of ``ENTITY_COLUMNS``). Rows a generator planted bad (``planted_bad``) are
    left out: they are quarantined by design. Returns ``record_key, person``."""
    with open(path, "rb") as handle:
        parquet = handle.read(4) == b"PAR1"
    try:
        frame = pl.read_parquet(path) if parquet else pl.read_csv(path, infer_schema=False)
    except pl.exceptions.PolarsError as exc:
        raise ValueError(
            f"{path}: not a labels CSV or Parquet file ({type(exc).__name__})"
        ) from None
    if "planted_bad" in frame.columns:
        frame = frame.filter(~pl.col("planted_bad").cast(pl.Boolean).fill_null(False))
    id_column = next((c for c in ID_COLUMNS if c in frame.columns), None)
    others = [c for c in frame.columns if c not in ("source", id_column)]
    entity = (
        others[0] if len(others) == 1 else next((c for c in ENTITY_COLUMNS if c in others), None)
    )
    if "source" not in frame.columns or id_column is None or entity is None:
        raise ValueError(
            f"{path}: expected the columns source, source_record_id (or record_id) and one "
            f"entity id column, got {', '.join(frame.columns)}"
        )
    return frame.select(
        record_key=pl.col("source").cast(pl.String) + ":" + pl.col(id_column).cast(pl.String),
        person=pl.col(entity).cast(pl.String),
    ).drop_nulls()


def evaluate_warehouse(conn, truth: pl.DataFrame) -> Evaluation:
    """Score ``mart.customer_xref`` and ``identity.match_pairs`` against ``record_key, person``.

    Records of the sample missing from the warehouse (quarantined, erased) count as unlinked.
    The threshold table counts record pairs: two records of one profile are always a pair; two
    profiles form a pair when their scored pair reaches the threshold (before clustering)."""
    xref = conn.sql(
        "select record_key, customer_id, profile_id, link_method from mart.customer_xref"
    ).pl()
    source = pl.col("record_key").str.split(":").list.first()
    sources = set(xref.select(source.unique()).to_series().to_list())
    labelled_sources = set(truth.select(source.unique()).to_series().to_list())
    truth = truth.filter(source.is_in(sorted(sources)))
    labelled = xref.join(truth, on="record_key", how="inner")
    result = accuracy(labelled.select("record_key", cluster="customer_id"), truth)
    impure = labelled.filter(pl.col("customer_id").is_not_null()).with_columns(
        impure=pl.col("person").n_unique().over("customer_id") > 1
    )
    methods = (
        labelled.join(impure.select("record_key", "impure"), on="record_key", how="left")
        .group_by("link_method")
        .agg(records=pl.len(), in_impure_customers=pl.col("impure").fill_null(False).sum())
        .sort("records", descending=True)
    )
    return Evaluation(
        truth.height,
        labelled.height,
        result,
        methods,
        _threshold_table(conn, labelled, truth),
        tuple(sorted(labelled_sources - sources)),
    )


def _threshold_table(conn, labelled: pl.DataFrame, truth: pl.DataFrame) -> pl.DataFrame:
    counts = labelled.drop_nulls("profile_id").group_by("profile_id", "person").len("n")
    sizes = counts.group_by("profile_id").agg(pl.col("n").sum().alias("size"))
    within_predicted = int((sizes["size"] * (sizes["size"] - 1) // 2).sum())
    within_true = int((counts["n"] * (counts["n"] - 1) // 2).sum())
    actual = _pairs(truth, ["person"])
    pairs = conn.sql(
        "select profile_id_l as id_l, profile_id_r as id_r, match_probability "
        "from identity.match_pairs"
    ).pl()
    pairs = pairs.join(sizes.rename({"profile_id": "id_l", "size": "size_l"}), on="id_l").join(
        sizes.rename({"profile_id": "id_r", "size": "size_r"}), on="id_r"
    )
    shared = (
        pairs.select("id_l", "id_r")
        .join(counts.rename({"profile_id": "id_l", "n": "n_l"}), on="id_l")
        .join(counts.rename({"profile_id": "id_r", "n": "n_r"}), on=["id_r", "person"])
        .group_by("id_l", "id_r")
        .agg(true_pairs=(pl.col("n_l") * pl.col("n_r")).sum())
    )
    pairs = pairs.join(shared, on=["id_l", "id_r"], how="left").with_columns(
        predicted=pl.col("size_l") * pl.col("size_r"), true_pairs=pl.col("true_pairs").fill_null(0)
    )
    rows = []
    for t in THRESHOLDS:
        above = pairs.filter(pl.col("match_probability") >= t)
        predicted = within_predicted + int(above["predicted"].sum())
        true = within_true + int(above["true_pairs"].sum())
        rows.append(
            (
                t,
                predicted,
                true,
                true / predicted if predicted else 1.0,
                true / actual if actual else 1.0,
            )
        )
    return pl.DataFrame(
        rows,
        schema=["threshold", "predicted_pairs", "true_pairs", "precision", "recall"],
        orient="row",
    )
