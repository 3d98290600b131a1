"""OBSERVATION from clinical events routed to the Observation domain (IG ObservationMap,
AllergyMap).

Events come from `transforms.events`: Observations outside the laboratory and vital-signs
categories, AllergyIntolerances (the category's allergy concept, the substance as value),
and any resource whose code's standard concept is an Observation or a domain without a
table of its own (IG f2o-037). Deviations from the IG, on purpose:
- A boolean value is 4188539 Yes / 4188540 No in `value_as_concept_id` (and 'true'/'false'
  in `value_as_string`).
- The allergy's substance display is not copied to `value_as_string` (free text); the code
  is in `value_source_value`.
"""

from __future__ import annotations

from transforms.base import PROVENANCE, MappingContext, TableOutput
from transforms.events import table_exclusions, table_rows

TABLE = "observation"


def build(ctx: MappingContext) -> TableOutput:
    from pyspark.sql import functions as F

    events = table_rows(ctx, TABLE, "observation_id")
    rows = events.select(
        "observation_id",
        "person_id",
        F.col("concept_id").alias("observation_concept_id"),
        F.to_date("start_datetime").alias("observation_date"),
        F.col("start_datetime").alias("observation_datetime"),
        F.col("type_concept_id").alias("observation_type_concept_id"),
        "value_as_number",
        "value_as_string",
        "value_as_concept_id",
        "unit_concept_id",
        "visit_occurrence_id",
        F.col("source_value").alias("observation_source_value"),
        F.col("source_concept_id").alias("observation_source_concept_id"),
        "unit_source_value",
        "value_source_value",
        *PROVENANCE,
    )
    return TableOutput(TABLE, rows, table_exclusions(ctx, TABLE))
