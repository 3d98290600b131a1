"""PERSON from Patient (IG PersonMap; f2o-020..024 for identity).

Deviations from the IG, on purpose:
- `person_source_value` is a keyed hash of (site, Patient id), never the id itself: the
  warehouse carries no source identifier (DESIGN.md, pseudonymised by construction).
- `race_source_value` / `ethnicity_source_value` hold the OMB code, not the text.
A Patient without a usable birth date is excluded (year_of_birth is required by the CDM).
`location_id` is the generalised location of the current home address (see location).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from transforms.base import MappingContext, TableOutput, exclusions, first_reason
from transforms.concept_maps import join_concept
from transforms.fhir import extension
from transforms.location import current_address, location_ids

if TYPE_CHECKING:
    from pyspark.sql import Column

TABLE = "person"
US_CORE_RACE = "http://hl7.org/fhir/us/core/StructureDefinition/us-core-race"
US_CORE_ETHNICITY = "http://hl7.org/fhir/us/core/StructureDefinition/us-core-ethnicity"
OMB_CATEGORY = "ombCategory"
OMB_EXTENSION = (
    "struct<url:string, extension:array<struct<url:string, "
    "valueCoding:struct<system:string, code:string>>>>"
)
GENDER_SYSTEM = "http://hl7.org/fhir/administrative-gender"


def _omb_code(extensions_col: str, url: str) -> Column:
    """The OMB category coding of a US Core race or ethnicity extension (staged as JSON)."""
    from pyspark.sql import functions as F

    extensions = F.transform(F.col(extensions_col), lambda e: F.from_json(e, OMB_EXTENSION))
    category = extension(extension(extensions, url)["extension"], OMB_CATEGORY)
    return category["valueCoding"]


def build(ctx: MappingContext) -> TableOutput:
    from pyspark.sql import functions as F

    from transforms.fhir import fhir_datetime

    patients = ctx.staged("Patient")
    birth = fhir_datetime(F.col("birthDate"), ctx.config.timezone)
    usable = patients.withColumn("_birth", birth)
    usable = usable.withColumn(
        "_reason",
        first_reason(
            (F.col("_birth").isNull(), "no usable birth date"),
            (ctx.in_future(F.col("_birth")), "birth date in the future"),
        ),
    )
    people = usable.where(F.col("_reason").isNull())
    race = _omb_code("extension", US_CORE_RACE)
    ethnicity = _omb_code("extension", US_CORE_ETHNICITY)
    people = people.select(
        "*",
        race["system"].alias("_race_system"),
        race["code"].alias("_race_code"),
        ethnicity["system"].alias("_eth_system"),
        ethnicity["code"].alias("_eth_code"),
    )
    people = join_concept(
        people, ctx.spark, "gender", F.lit(GENDER_SYSTEM), F.col("gender"), "gender_concept_id"
    )
    people = join_concept(
        people, ctx.spark, "race", F.col("_race_system"), F.col("_race_code"), "race_concept_id"
    )
    people = join_concept(
        people,
        ctx.spark,
        "ethnicity",
        F.col("_eth_system"),
        F.col("_eth_code"),
        "ethnicity_concept_id",
    )
    keyed = people.select(
        "*",
        F.col("_site").alias("site"),
        F.lit("Patient").alias("resource_type"),
        F.col("id").alias("source_key"),
    )
    with_ids = ctx.ids.assign(keyed, TABLE, "person_id")
    with_ids = location_ids(ctx, with_ids, current_address(F.col("address")))
    rows = with_ids.select(
        "person_id",
        "gender_concept_id",
        F.year("_birth").alias("year_of_birth"),
        F.month("_birth").alias("month_of_birth"),
        F.dayofmonth("_birth").alias("day_of_birth"),
        F.col("_birth").alias("birth_datetime"),
        "race_concept_id",
        "ethnicity_concept_id",
        "location_id",
        ctx.pseudonym(F.concat_ws("|", "_site", F.lit("Patient"), "id")).alias(
            "person_source_value"
        ),
        F.col("gender").alias("gender_source_value"),
        F.lit(0).alias("gender_source_concept_id"),
        F.col("_race_code").alias("race_source_value"),
        F.lit(0).alias("race_source_concept_id"),
        F.col("_eth_code").alias("ethnicity_source_value"),
        F.lit(0).alias("ethnicity_source_concept_id"),
        "_site",
        "_resource_type",
        F.col("id").alias("_fhir_id"),
    )
    return TableOutput(TABLE, rows, exclusions(usable))
