"""Condition eras: OHDSI's 30-day persistence window, per person and condition concept."""

from __future__ import annotations

from itertools import pairwise
from pathlib import Path
from typing import Any

from derived_fixtures import d
from pyspark.sql import functions as F

from transforms.derived.condition_era import build_condition_era, count_condition_era_exclusions

STREP_THROAT = 28060  # SNOMED 43878008 Streptococcal sore throat (standard, Condition)
OTITIS_MEDIA = 372328  # SNOMED 65363002 Otitis media (standard, Condition)


def occurrences(omop_table: Any, *rows: tuple[int, int, str, str | None]) -> Any:
    return omop_table(
        "condition_occurrence",
        [
            {
                "person_id": person,
                "condition_concept_id": concept,
                "condition_start_date": d(start),
                "condition_end_date": d(end) if end else None,
            }
            for person, concept, start, end in rows
        ],
    )


def eras(frame: Any) -> list[tuple[int, int, str, str, int]]:
    rows = frame.orderBy("person_id", "condition_concept_id", "condition_era_start_date")
    return [
        (
            row.person_id,
            row.condition_concept_id,
            row.condition_era_start_date.isoformat(),
            row.condition_era_end_date.isoformat(),
            row.condition_occurrence_count,
        )
        for row in rows.collect()
    ]


def test_overlapping_and_nested_occurrences_make_one_era(omop_table: Any) -> None:
    table = occurrences(
        omop_table,
        (1, STREP_THROAT, "2020-01-01", "2020-01-20"),
        (1, STREP_THROAT, "2020-01-05", "2020-01-10"),  # nested
        (1, STREP_THROAT, "2020-01-15", "2020-02-01"),  # overlapping
    )
    assert eras(build_condition_era(table)) == [(1, STREP_THROAT, "2020-01-01", "2020-02-01", 3)]


def test_gap_of_exactly_30_days_merges(omop_table: Any) -> None:
    table = occurrences(
        omop_table,
        (1, STREP_THROAT, "2020-01-01", "2020-01-10"),
        (1, STREP_THROAT, "2020-02-09", "2020-02-12"),  # 30 days after the end
    )
    assert eras(build_condition_era(table)) == [(1, STREP_THROAT, "2020-01-01", "2020-02-12", 2)]


def test_gap_of_31_days_starts_a_new_era(omop_table: Any) -> None:
    table = occurrences(
        omop_table,
        (1, STREP_THROAT, "2020-01-01", "2020-01-10"),
        (1, STREP_THROAT, "2020-02-10", "2020-02-12"),
    )
    assert eras(build_condition_era(table)) == [
        (1, STREP_THROAT, "2020-01-01", "2020-01-10", 1),
        (1, STREP_THROAT, "2020-02-10", "2020-02-12", 1),
    ]


def test_missing_end_date_lasts_one_day(omop_table: Any) -> None:
    table = occurrences(omop_table, (1, OTITIS_MEDIA, "2020-03-01", None))
    assert eras(build_condition_era(table)) == [(1, OTITIS_MEDIA, "2020-03-01", "2020-03-02", 1)]


def test_end_before_start_is_treated_as_missing(omop_table: Any) -> None:
    table = occurrences(omop_table, (1, OTITIS_MEDIA, "2020-03-01", "2020-02-01"))
    assert eras(build_condition_era(table)) == [(1, OTITIS_MEDIA, "2020-03-01", "2020-03-02", 1)]


def test_same_day_occurrences_count_in_one_era(omop_table: Any) -> None:
    table = occurrences(
        omop_table,
        (1, OTITIS_MEDIA, "2020-03-01", "2020-03-01"),
        (1, OTITIS_MEDIA, "2020-03-01", "2020-03-01"),
    )
    assert eras(build_condition_era(table)) == [(1, OTITIS_MEDIA, "2020-03-01", "2020-03-01", 2)]


def test_concepts_and_persons_never_share_an_era(omop_table: Any) -> None:
    table = occurrences(
        omop_table,
        (1, STREP_THROAT, "2020-01-01", "2020-01-10"),
        (1, OTITIS_MEDIA, "2020-01-05", "2020-01-06"),
        (2, STREP_THROAT, "2020-01-02", "2020-01-03"),
    )
    assert eras(build_condition_era(table)) == [
        (1, STREP_THROAT, "2020-01-01", "2020-01-10", 1),
        (1, OTITIS_MEDIA, "2020-01-05", "2020-01-06", 1),
        (2, STREP_THROAT, "2020-01-02", "2020-01-03", 1),
    ]


def test_eras_never_overlap_per_person_and_concept(omop_table: Any) -> None:
    table = occurrences(
        omop_table,
        *[
            (1, STREP_THROAT, f"2020-{month:02d}-{day:02d}", None)
            for month, day in [
                (1, 1),
                (1, 20),
                (3, 1),
                (3, 31),
                (5, 2),
                (5, 3),
                (9, 9),
                (10, 10),
                (10, 11),
            ]
        ],
    )
    rows = eras(build_condition_era(table))
    assert sum(row[4] for row in rows) == 9
    for earlier, later in pairwise(rows):
        gap = (d(later[2]) - d(earlier[3])).days
        assert gap > 30, (earlier, later)


def test_unmapped_conditions_are_left_out_and_counted(omop_table: Any) -> None:
    table = occurrences(
        omop_table,
        (1, 0, "2020-01-01", None),
        (1, 0, "2020-01-02", None),
        (1, STREP_THROAT, "2020-01-01", None),
    )
    table = table.unionByName(omop_table("condition_occurrence", [{"person_id": 1}]))
    assert eras(build_condition_era(table)) == [(1, STREP_THROAT, "2020-01-01", "2020-01-02", 1)]
    assert count_condition_era_exclusions(table) == {
        "condition_occurrences": 4,
        "without_standard_concept": 3,
        "without_person_or_start_date": 0,
    }


def test_undated_conditions_are_counted(omop_table: Any) -> None:
    table = omop_table("condition_occurrence", [{"person_id": 1, "condition_concept_id": 28060}])
    assert build_condition_era(table).count() == 0
    assert count_condition_era_exclusions(table)["without_person_or_start_date"] == 1


def test_era_ids_are_stable_and_distinct(omop_table: Any) -> None:
    table = occurrences(
        omop_table,
        (1, STREP_THROAT, "2020-01-01", None),
        (1, STREP_THROAT, "2021-01-01", None),
    )
    first = sorted(row.condition_era_id for row in build_condition_era(table).collect())
    again = sorted(row.condition_era_id for row in build_condition_era(table).collect())
    assert first == again and len(set(first)) == 2


def test_same_eras_as_etl_synthea_on_its_27_person_sample(spark: Any, shared_data: Path) -> None:
    folder = shared_data / "omop-reference" / "synthea27nj-etl-synthea"

    def read(name: str) -> Any:
        return spark.read.csv(str(folder / f"{name}.csv"), header=True, inferSchema=True)

    columns = ["person_id", "condition_concept_id", "start", "end", "count"]
    mine = build_condition_era(read("CONDITION_OCCURRENCE")).select(
        "person_id",
        "condition_concept_id",
        "condition_era_start_date",
        "condition_era_end_date",
        "condition_occurrence_count",
    )
    theirs = read("CONDITION_ERA").select(
        F.col("person_id").cast("long"),
        F.col("condition_concept_id").cast("long"),
        F.to_date("condition_era_start_date"),
        F.to_date("condition_era_end_date"),
        F.col("condition_occurrence_count").cast("int"),
    )
    mine, theirs = mine.toDF(*columns), theirs.toDF(*columns)
    assert theirs.count() == 469
    assert mine.exceptAll(theirs).count() == 0
    assert theirs.exceptAll(mine).count() == 0
