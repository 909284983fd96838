"""``cdm evaluate``: accuracy against a user's labels, checked on a hand-computed example."""

import duckdb
import polars as pl
import pytest

from cdm_pipeline.cli import main
from cdm_pipeline.evaluation import evaluate_warehouse, read_truth

# Persons A (a1, a2, a3), B (b1, b2), C (c1). The warehouse put a1, a2 (one profile) and b1 into
# customer X, left a3 and b2 alone, and could not link c1.
XREF = [
    ("s:a1", "X", 1, "matched: probabilistic"),
    ("s:a2", "X", 1, "identical identity"),
    ("s:b1", "X", 2, "matched: probabilistic"),
    ("s:a3", "Y", 3, "new customer: no match"),
    ("s:b2", "Z", 4, "new customer: no match"),
    ("s:c1", None, 5, "unlinked: no usable identifier"),
]
PAIRS = [(1, 2, 0.97), (1, 3, 0.60), (2, 4, 0.92)]
TRUTH = "source,source_record_id,person\ns,a1,A\ns,a2,A\ns,a3,A\ns,b1,B\ns,b2,B\ns,c1,C\n"


@pytest.fixture
def labelled_warehouse(tmp_path):
    path = tmp_path / "cdm.duckdb"
    with duckdb.connect(str(path)) as conn:
        conn.execute("create schema mart; create schema identity")
        conn.execute(
            "create table mart.customer_xref (record_key varchar, customer_id varchar, "
            "profile_id bigint, link_method varchar)"
        )
        conn.executemany("insert into mart.customer_xref values (?, ?, ?, ?)", XREF)
        conn.execute(
            "create table identity.match_pairs (profile_id_l bigint, profile_id_r bigint, "
            "match_probability double)"
        )
        conn.executemany("insert into identity.match_pairs values (?, ?, ?)", PAIRS)
    truth = tmp_path / "truth.csv"
    truth.write_text(TRUTH)
    return path, truth


def test_evaluation_matches_hand_computed_figures(labelled_warehouse):
    path, truth = labelled_warehouse
    with duckdb.connect(str(path), read_only=True) as conn:
        report = evaluate_warehouse(conn, read_truth(truth))
    result = report.accuracy
    # X holds 3 record pairs, one of them true; the truth has 3 (A) + 1 (B) pairs.
    assert result.pairwise_precision == pytest.approx(1 / 3)
    assert result.pairwise_recall == pytest.approx(1 / 4)
    assert result.pairwise_f1 == pytest.approx(2 / 7)
    # Per record n(cluster & person) / n(cluster), then / n(person), averaged.
    assert result.bcubed_precision == pytest.approx((2 / 3 + 2 / 3 + 1 / 3 + 1 + 1 + 1) / 6)
    assert result.bcubed_recall == pytest.approx((2 / 3 + 2 / 3 + 1 / 3 + 1 / 2 + 1 / 2 + 1) / 6)
    methods = {m: (n, impure) for m, n, impure in report.link_methods.iter_rows()}
    assert methods["matched: probabilistic"] == (2, 2)
    assert methods["new customer: no match"] == (2, 0)
    assert methods["unlinked: no usable identifier"] == (1, 0)
    # Within profile 1 one true pair; profile pairs weigh size_l * size_r record pairs.
    table = {row[0]: row[1:] for row in report.thresholds.iter_rows()}
    assert table[0.5] == (6, 4, pytest.approx(4 / 6), pytest.approx(1.0))
    assert table[0.9] == (4, 2, pytest.approx(0.5), pytest.approx(0.5))
    assert table[0.95] == (3, 1, pytest.approx(1 / 3), pytest.approx(1 / 4))


def test_cli_prints_the_report_and_refuses_a_malformed_truth_file(
    labelled_warehouse, tmp_path, monkeypatch, capsys
):
    path, truth = labelled_warehouse
    monkeypatch.setenv("CDM_WAREHOUSE", str(path))
    assert main(["evaluate", "--truth", str(truth), "--warehouse", str(path)]) == 0
    out = capsys.readouterr().out
    assert "pairwise precision     0.3333" in out and "unlinked: no usable identifier" in out
    bad = tmp_path / "bad.csv"
    pl.DataFrame({"id": ["a1"], "person": ["A"]}).write_csv(bad)
    assert main(["evaluate", "--truth", str(bad), "--warehouse", str(path)]) == 2
    assert "expected the columns source, source_record_id" in capsys.readouterr().err


def test_the_demos_own_parquet_truth_is_read_as_it_is(labelled_warehouse, tmp_path, capsys):
    """The demo's truth (``records.parquet``: ``record_id``, ``person_id``, ``planted_bad`` and
    more): planted rows and sources the warehouse holds no person records of are left out."""
    path, _ = labelled_warehouse
    demo_truth = tmp_path / "records.parquet"
    pl.DataFrame(
        {
            "source": ["s", "s", "s", "s", "s", "s", "s", "privacy_requests"],
            "source_file": ["f.csv"] * 8,
            "record_id": ["a1", "a2", "a3", "b1", "b2", "c1", "zz", "R1"],
            "person_id": [1, 1, 1, 2, 2, 3, 4, 1],
            "planted_bad": [False] * 6 + [True, False],
        }
    ).write_parquet(demo_truth)
    with duckdb.connect(str(path), read_only=True) as conn:
        report = evaluate_warehouse(conn, read_truth(demo_truth))
    assert report.labelled == 6 and report.left_out_sources == ("privacy_requests",)
    assert report.accuracy.pairwise_recall == pytest.approx(1 / 4)  # as with the CSV labels


def test_a_file_that_is_no_labels_is_one_line_and_exit_2(labelled_warehouse, tmp_path, capsys):
    path, _ = labelled_warehouse
    binary = tmp_path / "image.png"
    binary.write_bytes(bytes(range(256)) * 40)
    assert main(["evaluate", "--truth", str(binary), "--warehouse", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("cdm evaluate:")
