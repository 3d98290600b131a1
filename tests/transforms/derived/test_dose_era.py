"""Dose eras: only where DRUG_STRENGTH gives a daily dose; otherwise None and a reason."""

from __future__ import annotations

from typing import Any

from derived_fixtures import d

from transforms.derived.dose_era import build_dose_era

CETIRIZINE = 1149196
CETIRIZINE_5MG_TABLET = 40228230
MILLIGRAM = 8576  # UCUM "mg"
STRENGTH_SCHEMA = (
    "drug_concept_id long, ingredient_concept_id long, amount_value double,"
    " amount_unit_concept_id long"
)


def exposures(omop_table: Any, *rows: tuple[str, str, float | None, int | None]) -> Any:
    return omop_table(
        "drug_exposure",
        [
            {
                "person_id": 1,
                "drug_concept_id": CETIRIZINE_5MG_TABLET,
                "drug_exposure_start_date": d(start),
                "drug_exposure_end_date": d(end),
                "quantity": quantity,
                "days_supply": days_supply,
            }
            for start, end, quantity, days_supply in rows
        ],
    )


def test_empty_drug_strength_gives_none_and_a_reason(spark: Any, omop_table: Any) -> None:
    table = exposures(omop_table, ("2020-01-01", "2020-01-31", 30.0, 30))
    result, reason = build_dose_era(table, spark.createDataFrame([], STRENGTH_SCHEMA))
    assert result is None
    assert "DRUG_STRENGTH table is empty" in reason


def test_daily_dose_splits_eras_when_it_changes(spark: Any, omop_table: Any) -> None:
    strength = spark.createDataFrame(
        [(CETIRIZINE_5MG_TABLET, CETIRIZINE, 5.0, MILLIGRAM)], STRENGTH_SCHEMA
    )
    table = exposures(
        omop_table,
        ("2020-01-01", "2020-01-30", 30.0, 30),  # 5 mg a day
        ("2020-02-05", "2020-03-05", 30.0, 30),  # 5 mg a day, 6 days later: same era
        ("2020-03-06", "2020-04-04", 60.0, 30),  # 10 mg a day: a new dose era
        ("2020-04-05", "2020-04-06", None, None),  # no quantity: left out
    )
    result, summary = build_dose_era(table, strength)
    assert result is not None
    rows = sorted(
        (r.dose_value, r.unit_concept_id, str(r.dose_era_start_date), str(r.dose_era_end_date))
        for r in result.collect()
    )
    assert rows == [
        (5.0, MILLIGRAM, "2020-01-01", "2020-03-05"),
        (10.0, MILLIGRAM, "2020-03-06", "2020-04-04"),
    ]
    assert summary.startswith("dose_era built from 3 of 4")
    assert {r.drug_concept_id for r in result.collect()} == {CETIRIZINE}


def test_no_computable_dose_gives_none_and_a_reason(spark: Any, omop_table: Any) -> None:
    liquid = spark.createDataFrame(
        [(CETIRIZINE_5MG_TABLET, CETIRIZINE, None, None)], STRENGTH_SCHEMA
    )
    table = exposures(omop_table, ("2020-01-01", "2020-01-31", 30.0, 30))
    result, reason = build_dose_era(table, liquid)
    assert result is None
    assert "none of 1 exposure-ingredient pairs" in reason
