"""The vocabulary report: which records' standard concepts changed between two releases."""

from __future__ import annotations

from pathlib import Path

from omopflow import cdm
from omopflow.orchestration import release_changes

MALE, FEMALE, UNKNOWN_RACE, WHITE = 8507, 8532, 0, 8527


def _write_persons(spark, release: Path, rows: list[tuple[int, int, int]]) -> None:
    df = spark.createDataFrame(rows, "person_id long, gender_concept_id int, race_concept_id int")
    cdm.conform(df, "person").write.parquet(str(release / "person"))


def test_changed_added_and_removed_records_are_counted_per_table(spark, tmp_path: Path) -> None:
    old, new = tmp_path / "old", tmp_path / "new"
    _write_persons(spark, old, [(1, MALE, WHITE), (2, MALE, UNKNOWN_RACE), (3, FEMALE, WHITE)])
    _write_persons(spark, new, [(1, MALE, WHITE), (2, MALE, WHITE), (4, FEMALE, WHITE)])
    person = release_changes(spark, old, new)["person"]
    assert (person["rows_before"], person["rows_after"]) == (3, 3)
    assert (person["added"], person["removed"], person["changed"]) == (1, 1, 1)
    race = person["changed_by_column"]["race_concept_id"]
    assert race == {"rows": 1, "top_changes": [{"old": UNKNOWN_RACE, "new": WHITE, "count": 1}]}
    assert "gender_concept_id" not in person["changed_by_column"]


def test_table_in_only_one_release_is_not_compared(spark, tmp_path: Path) -> None:
    old, new = tmp_path / "old", tmp_path / "new"
    _write_persons(spark, old, [(1, MALE, WHITE)])
    new.mkdir()
    assert release_changes(spark, old, new) == {}
