"""Observation periods: every event inside one, gaps merge up to the window and no further."""

from __future__ import annotations

from typing import Any

import pytest
from derived_fixtures import d

from omopflow import cdm
from transforms.derived.ids import ID_MASK, hashed_ids
from transforms.derived.observation_period import (
    DEFAULT_GAP_DAYS,
    EHR,
    build_observation_period,
)


def periods(frame: Any) -> list[tuple[int, str, str]]:
    rows = frame.orderBy("person_id", "observation_period_start_date").collect()
    return [
        (
            row.person_id,
            row.observation_period_start_date.isoformat(),
            row.observation_period_end_date.isoformat(),
        )
        for row in rows
    ]


def visits(omop_table: Any, *spans: tuple[int, str, str | None]) -> Any:
    return omop_table(
        "visit_occurrence",
        [
            {
                "person_id": person,
                "visit_start_date": d(start),
                "visit_end_date": d(end) if end else None,
            }
            for person, start, end in spans
        ],
    )


def test_single_event_gives_a_one_day_period(omop_table: Any) -> None:
    measurement = omop_table("measurement", [{"person_id": 1, "measurement_date": d("2020-03-01")}])
    result = build_observation_period({"measurement": measurement})
    assert periods(result) == [(1, "2020-03-01", "2020-03-01")]


def test_gap_of_exactly_the_window_merges(omop_table: Any) -> None:
    table = visits(omop_table, (1, "2020-01-01", "2020-01-01"), (1, "2020-01-11", "2020-01-11"))
    assert periods(build_observation_period({"visit_occurrence": table}, gap_days=10)) == [
        (1, "2020-01-01", "2020-01-11")
    ]


def test_gap_one_day_over_the_window_splits(omop_table: Any) -> None:
    table = visits(omop_table, (1, "2020-01-01", "2020-01-01"), (1, "2020-01-12", "2020-01-12"))
    assert periods(build_observation_period({"visit_occurrence": table}, gap_days=10)) == [
        (1, "2020-01-01", "2020-01-01"),
        (1, "2020-01-12", "2020-01-12"),
    ]


def test_default_window_keeps_annual_checkups_in_one_period(omop_table: Any) -> None:
    # 371 days apart, as Synthea's shifted wellness visits are; 549 days is one too many.
    table = visits(
        omop_table,
        (1, "2018-01-01", "2018-01-01"),
        (1, "2019-01-07", "2019-01-07"),
        (1, "2020-07-09", "2020-07-09"),  # 549 days after 2019-01-07
    )
    assert DEFAULT_GAP_DAYS == 548
    assert periods(build_observation_period({"visit_occurrence": table})) == [
        (1, "2018-01-01", "2019-01-07"),
        (1, "2020-07-09", "2020-07-09"),
    ]


def test_gap_is_measured_from_the_latest_end_not_the_previous_start(omop_table: Any) -> None:
    # A long stay covers a short visit inside it; the next visit is 5 days after the stay.
    table = visits(
        omop_table,
        (1, "2020-01-01", "2020-03-01"),
        (1, "2020-01-10", "2020-01-10"),
        (1, "2020-03-06", "2020-03-06"),
    )
    assert periods(build_observation_period({"visit_occurrence": table}, gap_days=5)) == [
        (1, "2020-01-01", "2020-03-06")
    ]


def test_back_to_back_days_merge_with_the_smallest_window(omop_table: Any) -> None:
    table = visits(omop_table, (1, "2020-01-01", "2020-01-05"), (1, "2020-01-06", "2020-01-06"))
    assert periods(build_observation_period({"visit_occurrence": table}, gap_days=1)) == [
        (1, "2020-01-01", "2020-01-06")
    ]


def test_end_dates_extend_the_period_and_every_event_lies_inside(omop_table: Any) -> None:
    events = {
        "visit_occurrence": visits(omop_table, (1, "2020-01-01", "2020-01-03")),
        "drug_exposure": omop_table(
            "drug_exposure",
            [
                {
                    "person_id": 1,
                    "drug_exposure_start_date": d("2020-01-02"),
                    "drug_exposure_end_date": d("2020-04-01"),
                }
            ],
        ),
        "condition_occurrence": omop_table(
            "condition_occurrence",
            [{"person_id": 2, "condition_start_date": d("2021-05-05")}],
        ),
        "death": omop_table("death", [{"person_id": 2, "death_date": d("2023-05-05")}]),
    }
    result = build_observation_period(events, gap_days=30)
    assert periods(result) == [
        (1, "2020-01-01", "2020-04-01"),
        (2, "2021-05-05", "2021-05-05"),
        (2, "2023-05-05", "2023-05-05"),
    ]
    from pyspark.sql import functions as F

    drugs = events["drug_exposure"]
    inside = drugs.join(
        result,
        (drugs.person_id == result.person_id)
        & (F.col("drug_exposure_start_date") >= F.col("observation_period_start_date"))
        & (F.col("drug_exposure_end_date") <= F.col("observation_period_end_date")),
    )
    assert inside.count() == drugs.count()


def test_missing_or_backward_end_date_counts_as_the_start(omop_table: Any) -> None:
    table = visits(
        omop_table,
        (1, "2020-06-01", None),
        (2, "2020-06-01", "2020-05-01"),
    )
    assert periods(build_observation_period({"visit_occurrence": table})) == [
        (1, "2020-06-01", "2020-06-01"),
        (2, "2020-06-01", "2020-06-01"),
    ]


def test_events_without_start_date_or_person_are_left_out(omop_table: Any) -> None:
    table = visits(omop_table, (1, "2020-06-01", None))
    undated = omop_table("observation", [{"person_id": 3}, {"observation_date": d("2020-01-01")}])
    result = build_observation_period({"visit_occurrence": table, "observation": undated})
    assert periods(result) == [(1, "2020-06-01", "2020-06-01")]


def test_output_is_cdm_typed_with_ehr_type_and_stable_ids(omop_table: Any) -> None:
    table = visits(
        omop_table, (2, "2020-01-01", None), (1, "2022-01-01", None), (1, "2020-01-01", None)
    )
    result = build_observation_period({"visit_occurrence": table}, gap_days=30)
    assert result.schema == cdm.conform(result, "observation_period").schema
    rows = result.collect()
    assert {row.period_type_concept_id for row in rows} == {EHR}
    # The person id in the high bits, the rank by start date in the low 22: every run alike.
    ids = {
        (r.person_id, r.observation_period_start_date.isoformat()): r.observation_period_id
        for r in rows
    }
    assert ids == {
        (1, "2020-01-01"): (1 << 22) + 1,
        (1, "2022-01-01"): (1 << 22) + 2,
        (2, "2020-01-01"): (2 << 22) + 1,
    }
    shuffled = table.orderBy("visit_start_date", ascending=False).repartition(2)
    again = build_observation_period({"visit_occurrence": shuffled}, gap_days=30)
    assert sorted(again.collect()) == sorted(rows)


def test_hashed_ids_are_an_option(omop_table: Any) -> None:
    table = visits(omop_table, (1, "2020-01-01", None), (1, "2022-01-01", None))
    result = build_observation_period({"visit_occurrence": table}, gap_days=30, ids=hashed_ids)
    ids = [row.observation_period_id for row in result.collect()]
    assert len(set(ids)) == 2 and all(0 <= i <= ID_MASK for i in ids)


@pytest.mark.parametrize("gap_days", [0, -1])
def test_window_below_one_day_is_refused(omop_table: Any, gap_days: int) -> None:
    with pytest.raises(ValueError, match="at least 1"):
        build_observation_period({"visit_occurrence": visits(omop_table)}, gap_days=gap_days)


def test_unknown_table_is_refused(omop_table: Any) -> None:
    with pytest.raises(ValueError, match="no event dates known for table 'cost'"):
        build_observation_period({"cost": visits(omop_table)})


def test_table_without_its_date_column_is_refused(spark: Any) -> None:
    frame = spark.createDataFrame([(1,)], "person_id long")
    with pytest.raises(ValueError, match="visit_occurrence lacks the column"):
        build_observation_period({"visit_occurrence": frame})


def test_no_tables_is_refused() -> None:
    with pytest.raises(ValueError, match="no event tables"):
        build_observation_period({})
