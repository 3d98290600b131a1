"""DRUG_EXPOSURE from clinical events routed to the Drug domain (IG MedicationMap,
ImmunizationMap).

Events come from `transforms.events`: MedicationRequest (32838 EHR prescription),
MedicationAdministration and Immunization (32818 EHR administration record; an Immunization
with primarySource false is 32865 Patient self-report), MedicationStatement (32865),
MedicationDispense (32838), and any resource whose code's standard concept is a Drug
(IG f2o-037). A `medicationReference` is resolved to the referenced Medication's code.
Deviations from the IG, on purpose:
- `sig` stays empty and `lot_number` is not copied (free text; a lot can identify a batch
  given to few people).
- When the source gives no end, `drug_exposure_end_date` is start + days_supply - 1 (the
  start day counts), else the start date (the CDM requires an end date; THEMIS convention).
- MedicationRequest, Administration and Dispense are mapped, not only MedicationStatement.
"""

from __future__ import annotations

from transforms.base import PROVENANCE, MappingContext, TableOutput
from transforms.events import table_exclusions, table_rows

TABLE = "drug_exposure"


def build(ctx: MappingContext) -> TableOutput:
    from pyspark.sql import functions as F

    events = table_rows(ctx, TABLE, "drug_exposure_id")
    start_date = F.to_date("start_datetime")
    supplied_end = F.date_add(start_date, F.col("days_supply") - 1)
    end_date = F.coalesce(
        F.to_date("end_datetime"),
        F.when(F.col("days_supply") > 0, supplied_end),
        start_date,
    )
    rows = events.select(
        "drug_exposure_id",
        "person_id",
        F.col("concept_id").alias("drug_concept_id"),
        start_date.alias("drug_exposure_start_date"),
        F.col("start_datetime").alias("drug_exposure_start_datetime"),
        end_date.alias("drug_exposure_end_date"),
        F.col("end_datetime").alias("drug_exposure_end_datetime"),
        F.to_date("end_datetime").alias("verbatim_end_date"),
        F.col("type_concept_id").alias("drug_type_concept_id"),
        "refills",
        "quantity",
        "days_supply",
        "route_concept_id",
        "visit_occurrence_id",
        F.col("source_value").alias("drug_source_value"),
        F.col("source_concept_id").alias("drug_source_concept_id"),
        "route_source_value",
        *PROVENANCE,
    )
    return TableOutput(TABLE, rows, table_exclusions(ctx, TABLE))
