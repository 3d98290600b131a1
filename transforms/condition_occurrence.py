"""CONDITION_OCCURRENCE from clinical events routed to the Condition domain (IG ConditionMap).

Events come from `transforms.events`: mostly FHIR Conditions, plus any resource whose code's
standard concept is a Condition (IG f2o-037). Deviations from the IG, on purpose:
- `condition_source_value` is the code, not the display text (no free text in the warehouse).
- `condition_status_concept_id` is not filled from clinicalStatus: the OMOP field records the
  diagnosis' role (admitting, primary, ...), which FHIR clinicalStatus does not say.
"""

from __future__ import annotations

from transforms.base import PROVENANCE, MappingContext, TableOutput
from transforms.events import table_exclusions, table_rows

TABLE = "condition_occurrence"


def build(ctx: MappingContext) -> TableOutput:
    from pyspark.sql import functions as F

    events = table_rows(ctx, TABLE, "condition_occurrence_id")
    rows = events.select(
        "condition_occurrence_id",
        "person_id",
        F.col("concept_id").alias("condition_concept_id"),
        F.to_date("start_datetime").alias("condition_start_date"),
        F.col("start_datetime").alias("condition_start_datetime"),
        F.to_date("end_datetime").alias("condition_end_date"),
        F.col("end_datetime").alias("condition_end_datetime"),
        F.col("type_concept_id").alias("condition_type_concept_id"),
        "visit_occurrence_id",
        F.col("source_value").alias("condition_source_value"),
        F.col("source_concept_id").alias("condition_source_concept_id"),
        *PROVENANCE,
    )
    return TableOutput(TABLE, rows, table_exclusions(ctx, TABLE))
