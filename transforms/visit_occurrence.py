"""VISIT_OCCURRENCE from Encounter (IG EncounterVisitMap, ConceptMaps EncounterClass,
EncounterAdmitSource, EncounterDischargeDisposition).

Deviations from the IG, on purpose:
- R4 names: `period` and `hospitalization` (the IG's map is written against R5's
  `actualPeriod` and `admission`).
- class `VR` maps to 5083 Telehealth Visit (Visit vocabulary) instead of the IG's 722455:
  cohort tools build visit concept sets from the Visit vocabulary.
- `visit_source_value` is the class code (as the IG), never the Encounter id.
An Encounter without a usable start, or whose patient is not staged, is excluded.
A missing end takes the start (CDM convention for one-day visits).
An Encounter nested in another staged Encounter (`partOf`) is part of that visit: it becomes
a VISIT_DETAIL row of its root encounter's visit, not a visit of its own (see visit_detail).
`care_site_id`: the first `location` that is a care site, else `serviceProvider`.
`provider_id`: the first participant typed primary performer (PPRF) or attender (ATND) that
is a provider, else the first participant that is one (the CDM asks for one provider per
visit, chosen by a stated rule).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from transforms.base import DATE_IN_FUTURE, MappingContext, TableOutput, exclusions, first_reason
from transforms.care_site import care_site_ids
from transforms.concept_maps import join_concept
from transforms.fhir import fhir_datetime, first
from transforms.provider import provider_ids
from vocabularies.concepts import EHR_ENCOUNTER_RECORD

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame

TABLE = "visit_occurrence"
PARTICIPATION_TYPE = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType"
MAIN_PARTICIPANTS = ("PPRF", "ATND")  # primary performer, attender


def _main_participant() -> Column:
    """The Reference of the visit's provider, chosen as the module docstring says."""
    from pyspark.sql import functions as F

    def is_main(p: Column) -> Column:
        codings = F.flatten(F.transform(p["type"], lambda t: t["coding"]))
        return F.exists(
            codings,
            lambda c: (c["system"] == PARTICIPATION_TYPE) & c["code"].isin(*MAIN_PARTICIPANTS),
        )

    people = F.filter(F.col("participant"), lambda p: p["individual"].isNotNull())
    main = F.filter(people, is_main)
    return F.coalesce(first(main), first(people))["individual"]


def visit_links(ctx: MappingContext, encounters: DataFrame) -> DataFrame:
    """Add care_site_id and provider_id to staged Encounters (shared with visit_detail)."""
    from pyspark.sql import functions as F

    located = F.get(F.col("location"), 0)["location"]
    with_site = care_site_ids(ctx, encounters, located, F.col("serviceProvider"))
    return provider_ids(ctx, with_site, _main_participant())


def build(ctx: MappingContext) -> TableOutput:
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    from transforms.visit_detail import encounter_nesting

    tz = ctx.config.timezone
    # Nested encounters are VISIT_DETAIL's to map or exclude, so they leave here unreported.
    nested = encounter_nesting(ctx).select("_site", F.col("_encounter").alias("id"))
    encounters = ctx.staged("Encounter").join(nested, ["_site", "id"], "left_anti")
    encounters = ctx.person_ids(encounters, F.col("subject.reference"))
    encounters = encounters.withColumn("_start", fhir_datetime(F.col("period.start"), tz))
    encounters = encounters.withColumn(
        "_end", F.coalesce(fhir_datetime(F.col("period.end"), tz), F.col("_start"))
    )
    reason = first_reason(
        (F.col("person_id").isNull(), "patient not in staging"),
        (F.col("_start").isNull(), "no usable start date"),
        (ctx.in_future(F.col("_start")), DATE_IN_FUTURE),
    )
    encounters = encounters.withColumn("_reason", reason)
    visits = visit_links(ctx, encounters.where(F.col("_reason").isNull()))
    admit = first(F.col("hospitalization.admitSource.coding"))
    discharge = first(F.col("hospitalization.dischargeDisposition.coding"))
    visits = join_concept(
        visits,
        ctx.spark,
        "encounter_class",
        F.col("class.system"),
        F.col("class.code"),
        "visit_concept_id",
    )
    visits = join_concept(
        visits,
        ctx.spark,
        "admit_source",
        admit["system"],
        admit["code"],
        "admitted_from_concept_id",
    )
    visits = join_concept(
        visits,
        ctx.spark,
        "discharge",
        discharge["system"],
        discharge["code"],
        "discharged_to_concept_id",
    )
    keyed = visits.select(
        "*",
        F.col("_site").alias("site"),
        F.lit("Encounter").alias("resource_type"),
        F.col("id").alias("source_key"),
    )
    visits = ctx.ids.assign(keyed, TABLE, "visit_occurrence_id")
    earlier = Window.partitionBy("person_id").orderBy("_start", "visit_occurrence_id")
    rows = visits.select(
        "visit_occurrence_id",
        "person_id",
        "visit_concept_id",
        F.to_date("_start").alias("visit_start_date"),
        F.col("_start").alias("visit_start_datetime"),
        F.to_date("_end").alias("visit_end_date"),
        F.col("_end").alias("visit_end_datetime"),
        F.lit(EHR_ENCOUNTER_RECORD).alias("visit_type_concept_id"),
        F.col("class.code").alias("visit_source_value"),
        F.lit(0).alias("visit_source_concept_id"),
        "admitted_from_concept_id",
        admit["code"].alias("admitted_from_source_value"),
        "discharged_to_concept_id",
        discharge["code"].alias("discharged_to_source_value"),
        "provider_id",
        "care_site_id",
        F.lag("visit_occurrence_id").over(earlier).alias("preceding_visit_occurrence_id"),
        "_site",
        "_resource_type",
        F.col("id").alias("_fhir_id"),
    )
    return TableOutput(TABLE, rows, exclusions(encounters))
