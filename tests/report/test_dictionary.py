"""The data dictionary of a tiny release: exact null shares and distinct counts."""

from __future__ import annotations

import pytest

from omopflow.report import write_data_dictionary
from omopflow.report.dictionary import DICTIONARY_MD, NOT_IN_SPEC, read_data_dictionary
from tests.report.release_fixtures import FEMALE, MALE, concept_rows, person, write_rows


@pytest.fixture(scope="module")
def dictionary(spark, tmp_path_factory):
    release = tmp_path_factory.mktemp("dictionary")
    people = [person(1, MALE, 1950), person(2, FEMALE, 1950), person(3, FEMALE, 1960)]
    people[2]["person_source_value"] = None
    write_rows(spark, release, "person", people)
    write_rows(spark, release, "concept", concept_rows())
    # a column outside the spec (a site may add one); the dictionary says so
    extra = [(1, "x", 0.0), (2, None, -0.0), (3, "x", None), (4, "y", float("nan"))]
    spark.createDataFrame(extra, "person_id long, site_note string, score double").write.parquet(
        str(release / "extra_table")
    )
    (release / "report_assets").mkdir()  # a folder without Parquet is not a table
    path = write_data_dictionary(spark, release)
    rows = read_data_dictionary(path)
    return release, {(r.table, r.column): r for r in rows}


def test_null_share_and_distinct_are_exact(dictionary):
    _, rows = dictionary
    assert rows["person", "person_source_value"].null_share == pytest.approx(0.3333)
    assert rows["person", "year_of_birth"].distinct == 2
    assert rows["person", "birth_datetime"].null_share == 1.0


def test_distinct_values_are_counted_as_spark_groups_them(dictionary):
    """Nulls are no value; 0.0 and -0.0 are one value, as in a GROUP BY; so is NaN."""
    _, rows = dictionary
    assert rows["extra_table", "site_note"].distinct == 2
    assert rows["extra_table", "score"].distinct == 2
    assert rows["extra_table", "score"].null_share == 0.25
    assert rows["extra_table", "person_id"].distinct == 4


def test_columns_carry_the_cdm_type_and_description(dictionary):
    _, rows = dictionary
    gender = rows["person", "gender_concept_id"]
    assert (gender.cdm_datatype, gender.parquet_type, gender.required) == (
        "integer",
        "bigint",
        True,
    )
    assert "gender" in gender.description.lower()


def test_vocabulary_tables_are_listed_but_not_profiled(dictionary):
    _, rows = dictionary
    name = rows["concept", "concept_name"]
    assert (name.rows, name.null_share, name.distinct) == (6, None, None)


def test_only_parquet_folders_are_tables_and_unknown_ones_are_marked(dictionary):
    release, rows = dictionary
    assert {t for t, _ in rows} == {"person", "concept", "extra_table"}
    assert rows["extra_table", "site_note"].description == NOT_IN_SPEC
    assert "## person (3 rows)" in (release / DICTIONARY_MD).read_text()
