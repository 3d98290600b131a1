"""PROCEDURE_OCCURRENCE from clinical events routed to the Procedure domain (IG ProcedureMap).

Events come from `transforms.events`: mostly FHIR Procedures (performed[x] start and end),
plus any resource whose code's standard concept is a Procedure (IG f2o-037).
Deviation from the IG: a Procedure with status not-done or entered-in-error is excluded
(the IG map does not test status).
"""

from __future__ import annotations

from transforms.base import PROVENANCE, MappingContext, TableOutput
from transforms.events import table_exclusions, table_rows

TABLE = "procedure_occurrence"


def build(ctx: MappingContext) -> TableOutput:
    from pyspark.sql import functions as F

    events = table_rows(ctx, TABLE, "procedure_occurrence_id")
    rows = events.select(
        "procedure_occurrence_id",
        "person_id",
        F.col("concept_id").alias("procedure_concept_id"),
        F.to_date("start_datetime").alias("procedure_date"),
        F.col("start_datetime").alias("procedure_datetime"),
        F.to_date("end_datetime").alias("procedure_end_date"),
        F.col("end_datetime").alias("procedure_end_datetime"),
        F.col("type_concept_id").alias("procedure_type_concept_id"),
        "quantity",
        "visit_occurrence_id",
        F.col("source_value").alias("procedure_source_value"),
        F.col("source_concept_id").alias("procedure_source_concept_id"),
        *PROVENANCE,
    )
    return TableOutput(TABLE, rows, table_exclusions(ctx, TABLE))
