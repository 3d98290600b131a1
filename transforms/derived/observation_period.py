"""OBSERVATION_PERIOD: the spans in which a person's events are assumed to be recorded.

An EHR has no enrollment file, so periods are inferred from the events themselves (CDM
v5.4 convention for EHR data): every dated event of a person is a span from its start date
to its end date (or start date when it has none), and spans whose gap is at most
`gap_days` join into one period.

Choices, and how they differ from the references (see docs/derived.md):
- Default gap 548 days (18 months), where ETL-Synthea makes one period from the first to
  the last encounter. Adults in EHR data often see a provider once a year: in the shipped
  Synthea export 140 of 1,150 gaps between a person's encounter days are 366-371 days, so a
  365-day gap would cut healthy people's histories at every annual check-up, while gaps of
  more than 18 months (49 of them) are mostly several-year absences.
- period_type_concept_id is 32817 "EHR" (Type Concept vocabulary, standard since the 2020
  type consolidation). ETL-Synthea's published output uses 44814724 "Period covering
  healthcare encounters", which the current vocabulary marks non-standard.
- Both start and end dates of events are used, so every event lies inside a period, as
  DQD and cohort tools expect; an end date before the start date counts as no end date.
- Events with no person or no start date cannot be placed and are left out (the event
  tables' own gates reject them first: both columns are required by the CDM).
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import reduce
from typing import TYPE_CHECKING

from omopflow import cdm
from transforms.derived.ids import IdAssigner, person_scoped_ids
from transforms.derived.intervals import collapse_spans

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

TABLE = "observation_period"
EHR = 32817  # Type Concept "EHR": the period is inferred from EHR records
DEFAULT_GAP_DAYS = 548

# Per event table: (start date column, end date column or None when it has none).
EVENT_DATES: dict[str, tuple[str, str | None]] = {
    "visit_occurrence": ("visit_start_date", "visit_end_date"),
    "visit_detail": ("visit_detail_start_date", "visit_detail_end_date"),
    "condition_occurrence": ("condition_start_date", "condition_end_date"),
    "drug_exposure": ("drug_exposure_start_date", "drug_exposure_end_date"),
    "procedure_occurrence": ("procedure_date", "procedure_end_date"),
    "device_exposure": ("device_exposure_start_date", "device_exposure_end_date"),
    "measurement": ("measurement_date", None),
    "observation": ("observation_date", None),
    "specimen": ("specimen_date", None),
    "note": ("note_date", None),
    "death": ("death_date", None),
}


def event_spans(table: str, events: DataFrame) -> DataFrame:
    """(person_id, start_date, end_date) for each placeable event of one table."""
    from pyspark.sql import functions as F

    if table not in EVENT_DATES:
        known = ", ".join(sorted(EVENT_DATES))
        raise ValueError(f"no event dates known for table {table!r}; known tables: {known}")
    start_column, end_column = EVENT_DATES[table]
    needed = ["person_id", start_column] + ([end_column] if end_column else [])
    missing = [column for column in needed if column not in events.columns]
    if missing:
        raise ValueError(f"{table} lacks the column(s) {', '.join(missing)}")
    start = F.col(start_column).cast("date")
    # greatest() skips nulls: a missing end, or one before the start, becomes the start.
    end = F.greatest(F.col(end_column).cast("date"), start) if end_column else start
    return events.select(
        F.col("person_id").cast("long").alias("person_id"),
        start.alias("start_date"),
        end.alias("end_date"),
    ).where(F.col("person_id").isNotNull() & F.col("start_date").isNotNull())


def build_observation_period(
    events: Mapping[str, DataFrame],
    gap_days: int = DEFAULT_GAP_DAYS,
    ids: IdAssigner = person_scoped_ids,
) -> DataFrame:
    """One row per period: spans of each person's events merged across gaps <= gap_days.

    `events` maps OMOP table names (keys of EVENT_DATES) to those tables. A gap of at least
    one day is required so that back-to-back periods merge, as the CDM demands. The id is
    `ids(rows, [person_id, observation_period_start_date], "observation_period_id")`.
    """
    from pyspark.sql import functions as F

    if gap_days < 1:
        raise ValueError(
            f"gap_days must be at least 1 (adjacent periods must merge), got {gap_days}"
        )
    if not events:
        raise ValueError("no event tables given: observation periods need at least one")
    spans = reduce(
        lambda left, right: left.unionByName(right),
        (event_spans(table, frame) for table, frame in events.items()),
    )
    # Spans sharing a start date always merge: keep only the longest to shrink the sort.
    spans = spans.groupBy("person_id", "start_date").agg(F.max("end_date").alias("end_date"))
    periods = collapse_spans(spans, ["person_id"], gap_days)
    rows = periods.select(
        "person_id",
        F.col("start_date").alias("observation_period_start_date"),
        F.col("end_date").alias("observation_period_end_date"),
        F.lit(EHR).alias("period_type_concept_id"),
    )
    natural_key = ["person_id", "observation_period_start_date"]
    return cdm.conform(ids(rows, natural_key, "observation_period_id"), TABLE)
