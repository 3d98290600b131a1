"""CARE_SITE from Organization and Location (IG CareSite model; the IG has no StructureMap).

Every Organization and every Location instance is a care site: the CDM defines a care site
as an institutional unit, physical (a ward, a clinic building) or organisational (a
hospital). `care_site_name` is the organisation's or location's name: the name of an
institution identifies no patient (IG f2o-022 is about patient information).
Deviations from the IG, on purpose:
- `care_site_source_value` is a keyed hash of (site, type, id), never the FHIR id (IG
  f2o-020 and the identifiers page: ids do not belong in source values).
- `place_of_service_concept_id` comes from the first type coding through a small HL7
  RoleCode -> CMS Place of Service map below; other codes (Organization.type `prov`, HIRA
  organisation types) give 0 and keep the code in `place_of_service_source_value`.
A Location with `mode = kind` describes a kind of place (an ambulance, a patient's home),
not an instance, so it is excluded with a reason.
References reach care sites through `care_site_ids`, literal or conditional
(`Organization?identifier=system|value`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from transforms.base import MappingContext, TableOutput, exclusions, first_reason
from transforms.fhir import first, reference_index, resolve_reference
from transforms.location import current_address, location_ids

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame, SparkSession

TABLE = "care_site"
SOURCE_TYPES = ("Location", "Organization")
ROLE_CODE = "http://terminology.hl7.org/CodeSystem/v3-RoleCode"

# CMS Place of Service concepts (vocabulary 'CMS Place of Service'), as the IG's
# EncounterAdmitSource map uses them. To move to vocabularies/concepts.py.
HOSPITAL = 38004515
EMERGENCY_ROOM_HOSPITAL = 8870
OUTPATIENT_HOSPITAL = 8756
NURSING_FACILITY = 8676
INPATIENT_PSYCHIATRIC_FACILITY = 8971
HOME = 8536

# HL7 v3 RoleCode service delivery location types -> place of service.
PLACE_OF_SERVICE = (
    (ROLE_CODE, "HOSP", HOSPITAL),
    (ROLE_CODE, "ER", EMERGENCY_ROOM_HOSPITAL),
    (ROLE_CODE, "OF", OUTPATIENT_HOSPITAL),
    (ROLE_CODE, "NCCF", NURSING_FACILITY),
    (ROLE_CODE, "PSYCHF", INPATIENT_PSYCHIATRIC_FACILITY),
    (ROLE_CODE, "PTRES", HOME),
)


def place_of_service_map(spark: SparkSession) -> DataFrame:
    return spark.createDataFrame(
        list(PLACE_OF_SERVICE), "_pos_system string, _pos_code string, _pos_concept long"
    )


def _first_type_coding(types: Column) -> Column:
    from pyspark.sql import functions as F

    return first(F.flatten(F.transform(types, lambda t: t["coding"])))


def _sites(ctx: MappingContext) -> DataFrame:
    """Organizations and Locations in one shape, with the exclusion reason (if any)."""
    from pyspark.sql import functions as F

    def shape(frame: DataFrame, address: Column, kind: Column) -> DataFrame:
        return frame.select(
            "_site",
            "_resource_type",
            "id",
            "name",
            _first_type_coding(F.col("type")).alias("_type_coding"),
            address.alias("_address"),
            first_reason((kind, "Location describes a kind of place, not a site")).alias("_reason"),
        )

    organizations = shape(
        ctx.staged("Organization"), current_address(F.col("address")), F.lit(False)
    )
    locations = shape(
        ctx.staged("Location"),
        F.col("address"),
        F.coalesce(F.col("mode") == "kind", F.lit(False)),
    )
    return organizations.unionByName(locations)


def build(ctx: MappingContext) -> TableOutput:
    from pyspark.sql import functions as F

    sites = _sites(ctx)
    kept = sites.where(F.col("_reason").isNull())
    pos = F.broadcast(place_of_service_map(ctx.spark))
    coding = F.col("_type_coding")
    kept = kept.join(
        pos,
        (coding["system"] == F.col("_pos_system")) & (coding["code"] == F.col("_pos_code")),
        "left",
    )
    kept = location_ids(ctx, kept, F.col("_address"))
    keyed = kept.select(
        "*",
        F.col("_site").alias("site"),
        F.col("_resource_type").alias("resource_type"),
        F.col("id").alias("source_key"),
    )
    with_ids = ctx.ids.assign(keyed, TABLE, "care_site_id")
    rows = with_ids.select(
        "care_site_id",
        F.col("name").alias("care_site_name"),
        F.coalesce("_pos_concept", F.lit(0)).alias("place_of_service_concept_id"),
        "location_id",
        ctx.pseudonym(F.concat_ws("|", "_site", "_resource_type", "id")).alias(
            "care_site_source_value"
        ),
        coding["code"].alias("place_of_service_source_value"),
        "_site",
        "_resource_type",
        F.col("id").alias("_fhir_id"),
    )
    return TableOutput(TABLE, rows, exclusions(sites))


def care_site_ids(
    ctx: MappingContext, df: DataFrame, *references: Column, out: str = "care_site_id"
) -> DataFrame:
    """Add `out` from references to an Organization or a Location; the first reference that
    reaches a care site wins (e.g. Encounter.location first, then serviceProvider)."""
    from pyspark.sql import functions as F

    found: list[Column] = []
    for n, reference in enumerate(references):
        for resource_type in SOURCE_TYPES:
            fhir_id, omop_id = f"_cs_fhir_{n}_{resource_type}", f"_cs_id_{n}_{resource_type}"
            index = reference_index(ctx.staged(resource_type))
            df = resolve_reference(df, reference, resource_type, index, fhir_id)
            df = ctx.ids.lookup(df, TABLE, F.col("_site"), resource_type, F.col(fhir_id), omop_id)
            df = df.drop(fhir_id)
            found.append(F.col(omop_id))
    helpers = [c for c in df.columns if c.startswith("_cs_id_")]
    return df.withColumn(out, F.coalesce(*found)).drop(*helpers)
