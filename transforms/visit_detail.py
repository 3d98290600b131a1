"""VISIT_DETAIL from Encounters nested in other Encounters (`Encounter.partOf`; IG VisitDetail
model, the IG has no StructureMap).

The CDM's VISIT_OCCURRENCE is the whole stay and VISIT_DETAIL its parts (transfers between
wards, a consultation inside an admission). So an Encounter whose `partOf` reaches another
staged Encounter is *not* a visit of its own: it becomes a visit_detail row whose
`visit_occurrence_id` is the visit of its root encounter (partOf followed up to an encounter
without a staged parent), and `parent_visit_detail_id` is its direct parent's detail when
that parent is nested too. Counting the parts as visits as well would count one admission
several times.
Columns follow VISIT_OCCURRENCE's rules (class map, type EHR encounter record, start/end,
care site, provider). Exclusions, each with a reason: the patient is not staged, no usable
start, or the root encounter did not become a visit.
An Encounter whose `partOf` points to an Encounter that is not staged, or whose chain is
cyclic or deeper than `MAX_DEPTH`, has no root: it stays an ordinary visit.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from transforms.base import DATE_IN_FUTURE, MappingContext, TableOutput, exclusions, first_reason
from transforms.concept_maps import join_concept
from transforms.fhir import fhir_datetime, first, reference_index, resolve_reference
from transforms.visit_occurrence import visit_links
from vocabularies.concepts import EHR_ENCOUNTER_RECORD

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame

TABLE = "visit_detail"
MAX_DEPTH = 5  # hospital stay > ward > bed is 3 levels; deeper chains are data errors
NO_VISIT = "root encounter is not a visit"


NESTING_KEY = "_encounter_nesting"  # not a table: a per-run cache in ctx.outputs


def encounter_nesting(ctx: MappingContext) -> DataFrame:
    """(_site, _encounter, _parent, _root) for every nested Encounter that has a root.

    The walk is MAX_DEPTH self-joins of the small (encounter, parent) list; an encounter
    still climbing after that is in a cycle (or absurdly deep) and gets no root.
    """
    from pyspark.sql import functions as F

    cached = ctx.outputs.get(NESTING_KEY)
    if cached is not None:
        return cached
    encounters = ctx.staged("Encounter")
    parents = resolve_reference(
        encounters, F.col("partOf"), "Encounter", reference_index(encounters), "_parent"
    ).select("_site", F.col("id").alias("_encounter"), "_parent")
    links = parents.where(F.col("_parent").isNotNull())
    walk = links.select("_site", "_encounter", "_parent", F.col("_parent").alias("_root"))
    up = links.select(
        F.col("_site").alias("_up_site"),
        F.col("_encounter").alias("_up_encounter"),
        F.col("_parent").alias("_up_parent"),
    )
    has_parent = (F.col("_site") == F.col("_up_site")) & (F.col("_root") == F.col("_up_encounter"))
    for _ in range(MAX_DEPTH):
        walk = walk.join(up, has_parent, "left").select(
            "_site", "_encounter", "_parent", F.coalesce("_up_parent", "_root").alias("_root")
        )
    # Computed once per run: visits, details and every clinical table consult it.
    nesting = walk.join(up, has_parent, "left_anti").localCheckpoint()
    ctx.outputs[NESTING_KEY] = nesting
    return nesting


def visit_ids(
    ctx: MappingContext, df: DataFrame, reference: Column, out: str = "visit_occurrence_id"
) -> DataFrame:
    """Add `out` from a Reference struct to an Encounter: its visit, or its root's visit when
    it is nested. Clinical tables should link events this way (see the module docstring)."""
    from pyspark.sql import functions as F

    encounters = ctx.staged("Encounter")
    df = resolve_reference(df, reference, "Encounter", reference_index(encounters), "_vd_enc")
    roots = encounter_nesting(ctx).select(
        F.col("_site").alias("_vd_site"),
        F.col("_encounter").alias("_vd_nested"),
        F.col("_root").alias("_vd_root"),
    )
    df = df.join(
        roots,
        (F.col("_site") == F.col("_vd_site")) & (F.col("_vd_enc") == F.col("_vd_nested")),
        "left",
    )
    visit = F.coalesce("_vd_root", "_vd_enc")
    found = ctx.ids.lookup(df, "visit_occurrence", F.col("_site"), "Encounter", visit, out)
    return found.drop("_vd_enc", "_vd_site", "_vd_nested", "_vd_root")


def visit_detail_ids(
    ctx: MappingContext, df: DataFrame, reference: Column, out: str = "visit_detail_id"
) -> DataFrame:
    """Add `out` from a Reference struct to a nested Encounter; null for any other."""
    from pyspark.sql import functions as F

    index = reference_index(ctx.staged("Encounter"))
    df = resolve_reference(df, reference, "Encounter", index, "_vd_enc")
    found = ctx.ids.lookup(df, TABLE, F.col("_site"), "Encounter", F.col("_vd_enc"), out)
    return found.drop("_vd_enc")


def build(ctx: MappingContext) -> TableOutput:
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    tz = ctx.config.timezone
    nested = ctx.staged("Encounter").join(
        encounter_nesting(ctx).withColumnRenamed("_encounter", "id"), ["_site", "id"]
    )
    nested = ctx.person_ids(nested, F.col("subject.reference"))
    nested = ctx.ids.lookup(
        nested, "visit_occurrence", F.col("_site"), "Encounter", F.col("_root"), "_visit"
    )
    nested = nested.withColumn("_start", fhir_datetime(F.col("period.start"), tz))
    nested = nested.withColumn(
        "_end", F.coalesce(fhir_datetime(F.col("period.end"), tz), F.col("_start"))
    )
    reason = first_reason(
        (F.col("person_id").isNull(), "patient not in staging"),
        (F.col("_start").isNull(), "no usable start date"),
        (ctx.in_future(F.col("_start")), DATE_IN_FUTURE),
        (F.col("_visit").isNull(), NO_VISIT),
    )
    nested = nested.withColumn("_reason", reason)
    details = visit_links(ctx, nested.where(F.col("_reason").isNull()))
    admit = first(F.col("hospitalization.admitSource.coding"))
    discharge = first(F.col("hospitalization.dischargeDisposition.coding"))
    details = join_concept(
        details, ctx.spark, "encounter_class", F.col("class.system"), F.col("class.code"), "_class"
    )
    details = join_concept(
        details, ctx.spark, "admit_source", admit["system"], admit["code"], "_admitted"
    )
    details = join_concept(
        details, ctx.spark, "discharge", discharge["system"], discharge["code"], "_discharged"
    )
    keyed = details.select(
        "*",
        F.col("_site").alias("site"),
        F.lit("Encounter").alias("resource_type"),
        F.col("id").alias("source_key"),
    )
    details = ctx.ids.assign(keyed, TABLE, "visit_detail_id")
    # The parent's detail id, when the parent is itself nested (not the root visit).
    details = ctx.ids.lookup(
        details, TABLE, F.col("_site"), "Encounter", F.col("_parent"), "_parent_detail"
    )
    earlier = Window.partitionBy("person_id").orderBy("_start", "visit_detail_id")
    rows = details.select(
        "visit_detail_id",
        "person_id",
        F.col("_class").alias("visit_detail_concept_id"),
        F.to_date("_start").alias("visit_detail_start_date"),
        F.col("_start").alias("visit_detail_start_datetime"),
        F.to_date("_end").alias("visit_detail_end_date"),
        F.col("_end").alias("visit_detail_end_datetime"),
        F.lit(EHR_ENCOUNTER_RECORD).alias("visit_detail_type_concept_id"),
        "provider_id",
        "care_site_id",
        F.col("class.code").alias("visit_detail_source_value"),
        F.lit(0).alias("visit_detail_source_concept_id"),
        F.col("_admitted").alias("admitted_from_concept_id"),
        admit["code"].alias("admitted_from_source_value"),
        discharge["code"].alias("discharged_to_source_value"),
        F.col("_discharged").alias("discharged_to_concept_id"),
        F.lag("visit_detail_id").over(earlier).alias("preceding_visit_detail_id"),
        F.col("_parent_detail").alias("parent_visit_detail_id"),
        F.col("_visit").alias("visit_occurrence_id"),
        "_site",
        "_resource_type",
        F.col("id").alias("_fhir_id"),
    )
    return TableOutput(TABLE, rows, exclusions(nested))
