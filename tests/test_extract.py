"""Per-study extracts on a tiny fake release: approval, cohorts, re-keying, audit."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import duckdb
import pyarrow.parquet as pq
import pytest

from omopflow.extract import (
    AUDIT_LOG,
    StudyError,
    extract,
    load_study,
    parse_study,
    read_audit,
)
from tests.report.release_fixtures import (
    T2_DIABETES,
    build_release,
    write_crosswalk,
    write_rows,
)

KEY = b"extract-test-key-0123456789abcdef"
DIABETES_MELLITUS = 201820  # ancestor of type 2 diabetes


@pytest.fixture(scope="module")
def warehouse(spark, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("warehouse")
    release = root / "releases" / "r1"
    build_release(spark, release)
    write_rows(
        spark,
        release,
        "concept_ancestor",
        [
            {
                "ancestor_concept_id": DIABETES_MELLITUS,
                "descendant_concept_id": T2_DIABETES,
                "min_levels_of_separation": 1,
                "max_levels_of_separation": 1,
            }
        ],
    )
    write_crosswalk(spark, root / "restricted" / "crosswalk")
    return root


def _run(spark, warehouse: Path, spec: dict, out: str, **kwargs):
    return extract(
        spark,
        parse_study(spec),
        warehouse / "releases" / "r1",
        warehouse / "extracts" / out,
        KEY,
        audit_log=warehouse / "restricted" / AUDIT_LOG,
        crosswalk=warehouse / "restricted" / "crosswalk",
        **kwargs,
    )


def _column(folder: Path, table: str, column: str) -> list:
    return pq.read_table(folder / table).column(column).to_pylist()


PERSONS = {"person": ["person_id", "year_of_birth", "person_source_value"]}


@pytest.fixture(scope="module")
def two_studies(spark, warehouse):
    first = _run(spark, warehouse, {"study": "alpha", "tables": PERSONS}, "alpha")
    second = _run(spark, warehouse, {"study": "beta", "tables": PERSONS}, "beta")
    return first, second


def test_two_studies_share_no_person_id(two_studies):
    first, second = two_studies
    alpha = _column(first.out_dir, "person", "person_id")
    beta = _column(second.out_dir, "person", "person_id")
    assert len(alpha) == len(set(alpha)) == 7 == len(beta)
    assert not set(alpha) & set(beta)
    assert not set(alpha) & set(range(1, 8))  # nor any warehouse person id
    assert max(alpha + beta) < 2**53


def test_warehouse_pseudonyms_are_rehashed_per_study(two_studies):
    first, second = two_studies
    alpha = set(_column(first.out_dir, "person", "person_source_value"))
    beta = set(_column(second.out_dir, "person", "person_source_value"))
    assert len(alpha) == 7 and None not in alpha
    assert not alpha & beta
    assert not alpha & {f"warehouse-pseudonym-{i}" for i in range(1, 8)}


def test_extract_holds_only_approved_tables_and_columns(spark, warehouse):
    approved = {"condition_occurrence": ["person_id", "condition_concept_id"]}
    result = _run(spark, warehouse, {"study": "narrow", "tables": approved}, "narrow")
    tables = sorted(p.name for p in result.out_dir.iterdir() if p.is_dir())
    assert tables == ["condition_occurrence"]
    assert (
        pq.read_table(result.out_dir / "condition_occurrence").column_names
        == approved["condition_occurrence"]
    )
    with duckdb.connect(str(result.catalog), read_only=True) as con:
        views = [
            r[0]
            for r in con.sql("SELECT view_name FROM duckdb_views() WHERE NOT internal").fetchall()
        ]
        assert views == ["condition_occurrence"]
        assert con.sql("SELECT count(*) FROM condition_occurrence").fetchone() == (9,)


def test_a_column_the_release_lacks_is_refused_and_audited(spark, warehouse):
    spec = {"study": "typo", "tables": {"person": ["person_id", "name"]}}
    with pytest.raises(StudyError, match=r"\['name'\] are not in table 'person'"):
        _run(spark, warehouse, spec, "typo", requested_by="dr-who")
    last = read_audit(warehouse / "restricted" / AUDIT_LOG)[-1]
    assert (last["study"], last["status"], last["requested_by"]) == ("typo", "refused", "dr-who")
    assert not (warehouse / "extracts" / "typo").exists()


def test_vocabulary_tables_are_not_extracted(spark, warehouse):
    spec = {"study": "vocab", "tables": {"concept": ["concept_id"]}}
    with pytest.raises(StudyError, match="vocabulary table"):
        _run(spark, warehouse, spec, "vocab")


def test_cohort_concept_set_reaches_descendants_within_dates(spark, warehouse):
    spec = {
        "study": "diabetes",
        "tables": {"person": ["person_id"]},
        "cohort": {"concepts": [DIABETES_MELLITUS], "from": "2020-01-02", "to": "2020-01-31"},
    }
    result = _run(spark, warehouse, spec, "diabetes")
    # persons 1..6 have type 2 diabetes on 2020-01-0<i>; person 1's falls before `from`
    assert len(_column(result.out_dir, "person", "person_id")) == 5
    assert result.summary["persons"] == "5"


def test_cohort_by_site_uses_the_crosswalk_and_suppresses_small_counts(spark, warehouse):
    spec = {
        "study": "site-b-only",
        "tables": {"person": ["person_id"]},
        "cohort": {"sites": ["site-b"]},
    }
    result = _run(spark, warehouse, spec, "site-b")
    assert len(_column(result.out_dir, "person", "person_id")) == 1
    assert result.summary["persons"] == "<5"
    assert '"persons": "<5"' in (result.out_dir / "extract.json").read_text()


def test_shifted_dates_move_but_keep_intervals(spark, warehouse):
    tables = {
        "observation_period": [
            "person_id",
            "observation_period_start_date",
            "observation_period_end_date",
        ]
    }
    result = _run(
        spark, warehouse, {"study": "shift", "tables": tables, "shift_dates": True}, "shift"
    )
    rows = pq.read_table(result.out_dir / "observation_period").to_pylist()
    starts = {r["observation_period_start_date"] for r in rows}
    assert starts != {date(2015, 1, 1), date(2020, 1, 1)}  # moved
    lengths = sorted(
        (r["observation_period_end_date"] - r["observation_period_start_date"]).days for r in rows
    )
    assert lengths == [60] + [2007] * 6  # the same intervals as in the release


def test_birth_month_is_refused_when_dates_are_shifted(spark, warehouse):
    spec = {"study": "births", "tables": {"person": ["month_of_birth"]}, "shift_dates": True}
    with pytest.raises(StudyError, match="undo the date shift"):
        _run(spark, warehouse, spec, "births")


def test_an_existing_extract_folder_is_not_overwritten(spark, warehouse, two_studies):
    with pytest.raises(StudyError, match="already exists"):
        _run(spark, warehouse, {"study": "alpha", "tables": PERSONS}, "alpha")


def test_audit_log_records_who_ran_which_release(two_studies, warehouse):
    entries = [e for e in read_audit(warehouse / "restricted" / AUDIT_LOG) if e["study"] == "beta"]
    assert len(entries) == 1
    assert entries[0]["release"] == "r1" and entries[0]["status"] == "written"
    assert entries[0]["requested_by"]  # the OS user when not given
    assert entries[0]["at"].endswith("+00:00")


def test_example_study_file_is_valid():
    study = load_study(Path(__file__).parent.parent / "studies" / "example.yaml")
    assert study.cohort is not None and study.cohort.include
    assert len(study.source) == 64


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"tables": PERSONS}, "`study`"),
        ({"study": "s", "tables": {"person": []}}, "list of approved columns"),
        ({"study": "s", "tables": PERSONS, "cohort": {"from": "soon"}}, "must be a date"),
        ({"study": "s", "tables": PERSONS, "cohort": {"tables": ["note"]}}, "not event tables"),
        ({"study": "s", "tables": PERSONS, "min_cell": 0}, "min_cell"),
        ({"study": "s", "tables": PERSONS, "extra": 1}, "unknown fields"),
    ],
)
def test_bad_study_files_are_refused_with_the_field_named(spec, message):
    with pytest.raises(StudyError, match=message):
        parse_study(spec)
