"""DEVICE_EXPOSURE from clinical events routed to the Device domain (no IG map yet).

Events come from `transforms.events`: FHIR Devices (type code, manufactureDate as the start,
since R4 Device has no period of use) and any resource whose code's standard concept is a
Device (IG f2o-037). `unique_device_id` (the UDI) and serial or lot numbers are not copied:
they identify one physical device and so, indirectly, its patient.
"""

from __future__ import annotations

from transforms.base import PROVENANCE, MappingContext, TableOutput
from transforms.events import table_exclusions, table_rows

TABLE = "device_exposure"


def build(ctx: MappingContext) -> TableOutput:
    from pyspark.sql import functions as F

    events = table_rows(ctx, TABLE, "device_exposure_id")
    rows = events.select(
        "device_exposure_id",
        "person_id",
        F.col("concept_id").alias("device_concept_id"),
        F.to_date("start_datetime").alias("device_exposure_start_date"),
        F.col("start_datetime").alias("device_exposure_start_datetime"),
        F.to_date("end_datetime").alias("device_exposure_end_date"),
        F.col("end_datetime").alias("device_exposure_end_datetime"),
        F.col("type_concept_id").alias("device_type_concept_id"),
        "quantity",
        "visit_occurrence_id",
        F.col("source_value").alias("device_source_value"),
        F.col("source_concept_id").alias("device_source_concept_id"),
        *PROVENANCE,
    )
    return TableOutput(TABLE, rows, table_exclusions(ctx, TABLE))
