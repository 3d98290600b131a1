"""MEASUREMENT from clinical events routed to the Measurement domain (IG MeasurementMap,
SimpleVitalSignsMap, BloodPressureVitalSignsMap).

Events come from `transforms.events`: Observations in the laboratory or vital-signs category
(each component its own row), DiagnosticReport codes, and any resource whose code's standard
concept is a Measurement (IG f2o-037). Deviations from the IG, on purpose:
- `measurement_type_concept_id` is 32856 Lab for the laboratory category (EHR otherwise).
- `unit_concept_id` comes from the UCUM code (Quantity.system + code), not the unit text.
- `value_source_value` is the value's code or number; a string value has no MEASUREMENT
  column and is not kept (no free text in the warehouse).
"""

from __future__ import annotations

from transforms.base import PROVENANCE, MappingContext, TableOutput
from transforms.events import table_exclusions, table_rows

TABLE = "measurement"


def build(ctx: MappingContext) -> TableOutput:
    from pyspark.sql import functions as F

    events = table_rows(ctx, TABLE, "measurement_id")
    rows = events.select(
        "measurement_id",
        "person_id",
        F.col("concept_id").alias("measurement_concept_id"),
        F.to_date("start_datetime").alias("measurement_date"),
        F.col("start_datetime").alias("measurement_datetime"),
        F.col("type_concept_id").alias("measurement_type_concept_id"),
        "operator_concept_id",
        "value_as_number",
        "value_as_concept_id",
        "unit_concept_id",
        "range_low",
        "range_high",
        "visit_occurrence_id",
        F.col("source_value").alias("measurement_source_value"),
        F.col("source_concept_id").alias("measurement_source_concept_id"),
        "unit_source_value",
        "unit_source_concept_id",
        "value_source_value",
        *PROVENANCE,
    )
    return TableOutput(TABLE, rows, table_exclusions(ctx, TABLE))
