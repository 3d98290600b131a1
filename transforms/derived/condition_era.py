"""CONDITION_ERA: a person's occurrences of one condition concept, 30-day persistence window.

Follows the OHDSI era scripts (CommonDataModel "Condition Eras", Era-Constructor):
- an occurrence without an end date lasts one day: end = start + 1 day;
- occurrences of the same person and concept join when the next one starts at most 30
  days after the latest end so far; the era runs from the first start to the latest end;
- condition_occurrence_count counts the occurrences in the era.
Deviations (see docs/derived.md):
- occurrences with condition_concept_id 0 (unmapped) are left out, as the OHDSI scripts
  suggest in a comment: otherwise every unmapped condition would merge into one era.
  `count_condition_era_exclusions` gives the number for the run ledger;
- an end date before the start date counts as no end date (OHDSI keeps it, which would
  give an era that ends before it starts).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from omopflow import cdm
from transforms.derived.ids import IdAssigner, person_scoped_ids
from transforms.derived.intervals import collapse_spans

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame

TABLE = "condition_era"
PERSISTENCE_WINDOW_DAYS = 30
NO_MATCHING_CONCEPT = 0
DEFAULT_DURATION_DAYS = 1  # the OHDSI scripts' length of an occurrence with no end date


def _is_eligible() -> Column:
    from pyspark.sql import functions as F

    concept = F.coalesce(F.col("condition_concept_id"), F.lit(NO_MATCHING_CONCEPT))
    mapped = concept != NO_MATCHING_CONCEPT
    return F.col("person_id").isNotNull() & F.col("condition_start_date").isNotNull() & mapped


def _occurrence_spans(condition_occurrence: DataFrame) -> DataFrame:
    from pyspark.sql import functions as F

    start = F.col("condition_start_date").cast("date")
    end = F.col("condition_end_date").cast("date")
    return condition_occurrence.where(_is_eligible()).select(
        F.col("person_id").cast("long").alias("person_id"),
        F.col("condition_concept_id").cast("long").alias("condition_concept_id"),
        start.alias("start_date"),
        F.when(end >= start, end)
        .otherwise(F.date_add(start, DEFAULT_DURATION_DAYS))
        .alias("end_date"),
    )


def build_condition_era(
    condition_occurrence: DataFrame,
    gap_days: int = PERSISTENCE_WINDOW_DAYS,
    ids: IdAssigner = person_scoped_ids,
) -> DataFrame:
    """CONDITION_ERA rows; ids from (person_id, condition_concept_id, era start date)."""
    from pyspark.sql import functions as F

    keys = ["person_id", "condition_concept_id"]
    eras = collapse_spans(
        _occurrence_spans(condition_occurrence),
        keys,
        gap_days,
        F.count(F.lit(1)).alias("condition_occurrence_count"),
    )
    rows = eras.select(
        *keys,
        F.col("start_date").alias("condition_era_start_date"),
        F.col("end_date").alias("condition_era_end_date"),
        "condition_occurrence_count",
    )
    natural_key = [*keys, "condition_era_start_date"]
    return cdm.conform(ids(rows, natural_key, "condition_era_id"), TABLE)


def count_condition_era_exclusions(condition_occurrence: DataFrame) -> dict[str, int]:
    """How many occurrences the eras leave out, for the run ledger (one small aggregate)."""
    from pyspark.sql import functions as F

    unmapped = F.coalesce(F.col("condition_concept_id"), F.lit(NO_MATCHING_CONCEPT)) == (
        NO_MATCHING_CONCEPT
    )
    undated = F.col("person_id").isNull() | F.col("condition_start_date").isNull()
    row = condition_occurrence.agg(
        F.count(F.lit(1)).alias("condition_occurrences"),
        F.count(F.when(unmapped, 1)).alias("without_standard_concept"),
        F.count(F.when(undated & ~unmapped, 1)).alias("without_person_or_start_date"),
    ).first()
    return {name: int(row[name] or 0) for name in row.asDict()} if row else {}
