"""Drug eras: roll-up to ingredients, OHDSI end-date rules, 30-day window, gap days."""

from __future__ import annotations

from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
from derived_fixtures import d

from transforms.derived.drug_era import build_drug_era

# Real ids from the Athena subset (checked by test_fixture_vocabulary_is_real).
CETIRIZINE = 1149196  # RxNorm Ingredient
CETIRIZINE_5MG_TABLET = 40228230  # RxNorm Clinical Drug
ACETAMINOPHEN = 1125315  # RxNorm Ingredient
OXYCODONE = 1124957  # RxNorm Ingredient
ACETAMINOPHEN_OXYCODONE_TABLET = 40231925  # Clinical Drug with both ingredients
IVABRADINE_5MG_TABLET = 46234440  # Clinical Drug with no ancestor in the subset

CONCEPTS = [
    (CETIRIZINE, "Ingredient", "RxNorm"),
    (CETIRIZINE_5MG_TABLET, "Clinical Drug", "RxNorm"),
    (ACETAMINOPHEN, "Ingredient", "RxNorm"),
    (OXYCODONE, "Ingredient", "RxNorm"),
    (ACETAMINOPHEN_OXYCODONE_TABLET, "Clinical Drug", "RxNorm"),
    (IVABRADINE_5MG_TABLET, "Clinical Drug", "RxNorm"),
]
# (ancestor, descendant), as in CONCEPT_ANCESTOR; self rows included.
ANCESTORS = [
    (CETIRIZINE, CETIRIZINE),
    (CETIRIZINE, CETIRIZINE_5MG_TABLET),
    (CETIRIZINE_5MG_TABLET, CETIRIZINE_5MG_TABLET),
    (ACETAMINOPHEN, ACETAMINOPHEN),
    (OXYCODONE, OXYCODONE),
    (ACETAMINOPHEN, ACETAMINOPHEN_OXYCODONE_TABLET),
    (OXYCODONE, ACETAMINOPHEN_OXYCODONE_TABLET),
]


@pytest.fixture
def vocabulary(spark: Any) -> tuple[Any, Any]:
    concept = spark.createDataFrame(
        CONCEPTS, "concept_id long, concept_class_id string, vocabulary_id string"
    )
    # As read from Athena CSVs: ids arrive as strings.
    ancestor = spark.createDataFrame(
        [(str(a), str(b)) for a, b in ANCESTORS],
        "ancestor_concept_id string, descendant_concept_id string",
    )
    return concept, ancestor


def exposures(omop_table: Any, *rows: tuple[int, int, str, str | None, int | None]) -> Any:
    return omop_table(
        "drug_exposure",
        [
            {
                "person_id": person,
                "drug_concept_id": concept,
                "drug_exposure_start_date": d(start),
                "drug_exposure_end_date": d(end) if end else None,
                "days_supply": days_supply,
            }
            for person, concept, start, end, days_supply in rows
        ],
    )


def eras(frame: Any) -> list[tuple[int, int, str, str, int, int]]:
    rows = frame.orderBy("person_id", "drug_concept_id", "drug_era_start_date").collect()
    return [
        (
            row.person_id,
            row.drug_concept_id,
            row.drug_era_start_date.isoformat(),
            row.drug_era_end_date.isoformat(),
            row.drug_exposure_count,
            row.gap_days,
        )
        for row in rows
    ]


def test_overlapping_and_nested_exposures_make_one_era_without_gap(
    omop_table: Any, vocabulary: tuple[Any, Any]
) -> None:
    table = exposures(
        omop_table,
        (1, CETIRIZINE_5MG_TABLET, "2020-01-01", "2020-01-30", None),
        (1, CETIRIZINE_5MG_TABLET, "2020-01-10", "2020-01-20", None),  # nested
        (1, CETIRIZINE, "2020-01-25", "2020-02-10", None),  # overlapping, ingredient level
    )
    result, _ = build_drug_era(table, *vocabulary)
    assert eras(result) == [(1, CETIRIZINE, "2020-01-01", "2020-02-10", 3, 0)]


def test_gap_of_exactly_30_days_merges_and_is_counted(
    omop_table: Any, vocabulary: tuple[Any, Any]
) -> None:
    table = exposures(
        omop_table,
        (1, CETIRIZINE_5MG_TABLET, "2020-01-01", "2020-01-11", None),  # 10 days
        (1, CETIRIZINE_5MG_TABLET, "2020-02-10", "2020-02-20", None),  # 30 days later
    )
    result, _ = build_drug_era(table, *vocabulary)
    # Era 2020-01-01..2020-02-20 is 50 days, 20 of them exposed: 30 gap days.
    assert eras(result) == [(1, CETIRIZINE, "2020-01-01", "2020-02-20", 2, 30)]


def test_gap_of_31_days_starts_a_new_era(omop_table: Any, vocabulary: tuple[Any, Any]) -> None:
    table = exposures(
        omop_table,
        (1, CETIRIZINE_5MG_TABLET, "2020-01-01", "2020-01-11", None),
        (1, CETIRIZINE_5MG_TABLET, "2020-02-11", "2020-02-21", None),
    )
    result, _ = build_drug_era(table, *vocabulary)
    assert eras(result) == [
        (1, CETIRIZINE, "2020-01-01", "2020-01-11", 1, 0),
        (1, CETIRIZINE, "2020-02-11", "2020-02-21", 1, 0),
    ]


def test_touching_exposures_have_no_gap_and_a_one_day_break_has_one(
    omop_table: Any, vocabulary: tuple[Any, Any]
) -> None:
    table = exposures(
        omop_table,
        (1, CETIRIZINE, "2020-01-01", "2020-01-05", None),
        (1, CETIRIZINE, "2020-01-05", "2020-01-09", None),  # starts the day the first ends
        (1, CETIRIZINE, "2020-01-10", "2020-01-12", None),  # one day after
    )
    result, _ = build_drug_era(table, *vocabulary)
    # 11 days long; sub-exposures 01-01..01-09 (8) and 01-10..01-12 (2): 1 gap day.
    assert eras(result) == [(1, CETIRIZINE, "2020-01-01", "2020-01-12", 3, 1)]


def test_missing_end_date_uses_days_supply_then_one_day(
    omop_table: Any, vocabulary: tuple[Any, Any]
) -> None:
    table = exposures(
        omop_table,
        (1, CETIRIZINE, "2020-01-01", None, 14),
        (2, CETIRIZINE, "2020-01-01", None, None),
        (3, CETIRIZINE, "2020-01-01", None, 0),
        (4, CETIRIZINE, "2020-01-01", "2019-12-01", 7),  # end before start: as missing
    )
    result, _ = build_drug_era(table, *vocabulary)
    assert [(row[0], row[3]) for row in eras(result)] == [
        (1, "2020-01-15"),
        (2, "2020-01-02"),
        (3, "2020-01-02"),
        (4, "2020-01-08"),
    ]


def test_same_day_exposures_count_twice_in_one_era(
    omop_table: Any, vocabulary: tuple[Any, Any]
) -> None:
    table = exposures(
        omop_table,
        (1, CETIRIZINE, "2020-01-01", "2020-01-01", None),
        (1, CETIRIZINE, "2020-01-01", "2020-01-01", None),
    )
    result, _ = build_drug_era(table, *vocabulary)
    assert eras(result) == [(1, CETIRIZINE, "2020-01-01", "2020-01-01", 2, 0)]


def test_combination_drug_counts_towards_each_ingredient(
    omop_table: Any, vocabulary: tuple[Any, Any]
) -> None:
    table = exposures(
        omop_table, (1, ACETAMINOPHEN_OXYCODONE_TABLET, "2020-01-01", "2020-01-05", None)
    )
    result, counts = build_drug_era(table, *vocabulary)
    assert eras(result) == [
        (1, OXYCODONE, "2020-01-01", "2020-01-05", 1, 0),  # sorted by concept id
        (1, ACETAMINOPHEN, "2020-01-01", "2020-01-05", 1, 0),
    ]
    assert counts["exposures_used"] == 1


def test_unknown_ingredient_is_left_out_and_counted(
    omop_table: Any, vocabulary: tuple[Any, Any]
) -> None:
    table = exposures(
        omop_table,
        (1, 0, "2020-01-01", "2020-01-05", None),
        (1, IVABRADINE_5MG_TABLET, "2020-01-01", "2020-01-05", None),
        (1, 999_999_999, "2020-01-01", "2020-01-05", None),  # not in the vocabulary at all
        (1, CETIRIZINE, "2020-01-01", "2020-01-05", None),
    )
    result, counts = build_drug_era(table, *vocabulary)
    assert eras(result) == [(1, CETIRIZINE, "2020-01-01", "2020-01-05", 1, 0)]
    assert counts == {
        "drug_exposures": 4,
        "exposures_without_ingredient": 3,
        "exposures_with_negative_days_supply": 0,
        "exposures_without_person_or_start_date": 0,
        "exposures_used": 1,
    }


def test_negative_days_supply_is_left_out_and_counted(
    omop_table: Any, vocabulary: tuple[Any, Any]
) -> None:
    table = exposures(omop_table, (1, CETIRIZINE, "2020-01-01", None, -5))
    undated = omop_table("drug_exposure", [{"person_id": 1, "drug_concept_id": CETIRIZINE}])
    result, counts = build_drug_era(table.unionByName(undated), *vocabulary)
    assert result.count() == 0
    assert counts["exposures_with_negative_days_supply"] == 1
    assert counts["exposures_without_person_or_start_date"] == 1
    assert counts["exposures_used"] == 0


def test_eras_never_overlap_per_person_and_ingredient(
    omop_table: Any, vocabulary: tuple[Any, Any]
) -> None:
    starts = ["2020-01-01", "2020-01-20", "2020-03-15", "2020-03-16", "2020-06-01", "2020-07-02"]
    table = exposures(
        omop_table, *[(1, CETIRIZINE_5MG_TABLET, start, None, 10) for start in starts]
    )
    rows = eras(build_drug_era(table, *vocabulary)[0])
    assert sum(row[4] for row in rows) == len(starts)
    for earlier, later in pairwise(rows):
        assert (d(later[2]) - d(earlier[3])).days > 30, (earlier, later)


def test_missing_column_is_refused(spark: Any, vocabulary: tuple[Any, Any]) -> None:
    frame = spark.createDataFrame([(1, 2)], "person_id long, drug_concept_id long")
    with pytest.raises(ValueError, match="drug_exposure lacks the column"):
        build_drug_era(frame, *vocabulary)


def test_fixture_vocabulary_is_real(spark: Any, shared_data: Path) -> None:
    folder = shared_data / "vocab" / "athena-subset"
    options = {"sep": "\t", "header": "true"}
    concept = spark.read.options(**options).csv(str(folder / "CONCEPT.csv"))
    ancestor = spark.read.options(**options).csv(str(folder / "CONCEPT_ANCESTOR.csv"))
    found_concepts = {
        (int(row.concept_id), row.concept_class_id, row.vocabulary_id)
        for row in concept.where(concept.concept_id.isin([str(c[0]) for c in CONCEPTS]))
        .select("concept_id", "concept_class_id", "vocabulary_id")
        .collect()
    }
    assert found_concepts == set(CONCEPTS)
    pairs = ancestor.where(
        ancestor.descendant_concept_id.isin([str(c[0]) for c in CONCEPTS])
    ).select("ancestor_concept_id", "descendant_concept_id")
    real = {(int(row[0]), int(row[1])) for row in pairs.collect()}
    assert set(ANCESTORS) <= real
    fixture_ids = {c[0] for c in CONCEPTS}
    assert not any(a in fixture_ids for a, b in real if b == IVABRADINE_5MG_TABLET)
