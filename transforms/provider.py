"""PROVIDER from Practitioner, with specialty and care site from its PractitionerRole (IG
Provider model; the IG has no StructureMap).

One row per Practitioner: the CDM counts a provider as a person, and a PractitionerRole is
what a person does somewhere. A practitioner's role is its active one with the smallest id
(deterministic when there are several); the role gives `specialty_*` (its specialty codings,
then its code codings, through the vocabulary map; 0 without a vocabulary or a standard
concept) and `care_site_id` (its first location, else its organization). Every role is
accounted for: merged into its practitioner's row, or excluded when the practitioner is not
staged.
Deviations from the IG, on purpose (pseudonymisation, IG f2o-020..022):
- `provider_name` follows a name policy: withheld (null) by default; `published` writes the
  name as given + family, for warehouses whose governance allows it.
- `npi` and `dea` are business identifiers and never published; the NPI is used only to
  resolve references such as `Practitioner?identifier=http://hl7.org/fhir/sid/us-npi|...`.
- `provider_source_value` is a keyed hash of (site, Practitioner, id).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from transforms.base import MappingContext, TableOutput, exclusions, first_reason
from transforms.care_site import care_site_ids
from transforms.concept_maps import join_concept
from transforms.fhir import fhir_datetime, first, reference_index, resolve_reference
from transforms.person import GENDER_SYSTEM
from vocabularies.concepts import NO_MATCHING_CONCEPT

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame

TABLE = "provider"
NAMES_WITHHELD = "withheld"
NAMES_PUBLISHED = "published"
NAME_POLICIES = (NAMES_WITHHELD, NAMES_PUBLISHED)
MERGED_ROLE = "role merged into its practitioner's provider row"
ROLE_WITHOUT_PRACTITIONER = "practitioner not in staging"


def _roles(ctx: MappingContext) -> DataFrame:
    """Staged roles with `_practitioner` (the FHIR id they point to) and `_reason`."""
    from pyspark.sql import functions as F

    practitioners = reference_index(ctx.staged("Practitioner"))
    roles = resolve_reference(
        ctx.staged("PractitionerRole"),
        F.col("practitioner"),
        "Practitioner",
        practitioners,
        "_practitioner",
    )
    reason = first_reason(
        (F.col("_practitioner").isNull(), ROLE_WITHOUT_PRACTITIONER),
        (F.lit(True), MERGED_ROLE),
    )
    return roles.withColumn("_reason", reason)


def _main_roles(roles: DataFrame) -> DataFrame:
    """One role per practitioner: active first, then the smallest id."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    order = Window.partitionBy("_site", "_practitioner").orderBy(
        F.coalesce(F.col("active"), F.lit(True)).desc(), "id"
    )
    linked = roles.where(F.col("_practitioner").isNotNull())
    return linked.withColumn("_rank", F.row_number().over(order)).where("_rank = 1").drop("_rank")


def _specialty_codings() -> Column:
    """The role's specialty codings, then its code codings, as (system, code, display)."""
    from pyspark.sql import functions as F

    def codings(concepts: str) -> Column:
        flat = F.flatten(F.transform(F.col(concepts), lambda c: c["coding"]))
        slim = F.transform(
            flat,
            lambda c: F.struct(
                c["system"].alias("system"), c["code"].alias("code"), c["display"].alias("display")
            ),
        )
        empty = F.array().cast("array<struct<system:string, code:string, display:string>>")
        return F.coalesce(slim, empty)

    return F.concat(codings("specialty"), codings("code"))


def _with_specialty(ctx: MappingContext, roles: DataFrame) -> DataFrame:
    """Add specialty_concept_id, specialty_source_value, specialty_source_concept_id."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    roles = roles.withColumn("_specialty_codings", _specialty_codings())
    if ctx.vocab is None:
        return roles.select(
            "*",
            F.lit(NO_MATCHING_CONCEPT).cast("long").alias("specialty_concept_id"),
            first(F.col("_specialty_codings"))["code"].alias("specialty_source_value"),
            F.lit(NO_MATCHING_CONCEPT).cast("long").alias("specialty_source_concept_id"),
        )
    from vocabularies.mapping import map_codings

    mapped = map_codings(roles, "_specialty_codings", ctx.vocab, "specialty")
    # A code mapping to several standard concepts: keep one, the smallest non-zero.
    best = Window.partitionBy("_site", "id").orderBy(
        (F.col("specialty_concept_id") == NO_MATCHING_CONCEPT), "specialty_concept_id"
    )
    mapped = mapped.withColumn("_rank", F.row_number().over(best)).where("_rank = 1")
    return mapped.select(*roles.columns, *[c for c in mapped.columns if c.startswith("specialty_")])


def _name(policy: str) -> Column:
    from pyspark.sql import functions as F

    if policy not in NAME_POLICIES:
        raise ValueError(f"provider name policy must be one of {NAME_POLICIES}, not {policy!r}")
    if policy == NAMES_WITHHELD:
        return F.lit(None).cast("string")
    name = first(F.col("name"))
    given_family = F.concat_ws(" ", F.array_join(name["given"], " "), name["family"])
    return F.coalesce(name["text"], F.when(given_family != "", given_family))


def build(ctx: MappingContext, name_policy: str = NAMES_WITHHELD) -> TableOutput:
    from pyspark.sql import functions as F

    roles = _roles(ctx)
    main = _main_roles(roles)
    main = care_site_ids(ctx, main, first(F.col("location")), F.col("organization"))
    main = _with_specialty(ctx, main).select(
        "_site",
        F.col("_practitioner").alias("_role_practitioner"),
        "care_site_id",
        "specialty_concept_id",
        "specialty_source_value",
        "specialty_source_concept_id",
    )
    people = ctx.staged("Practitioner").join(
        main.withColumnRenamed("_site", "_role_site"),
        (F.col("_site") == F.col("_role_site")) & (F.col("id") == F.col("_role_practitioner")),
        "left",
    )
    people = join_concept(
        people, ctx.spark, "gender", F.lit(GENDER_SYSTEM), F.col("gender"), "gender_concept_id"
    )
    keyed = people.select(
        "*",
        F.col("_site").alias("site"),
        F.lit("Practitioner").alias("resource_type"),
        F.col("id").alias("source_key"),
    )
    with_ids = ctx.ids.assign(keyed, TABLE, "provider_id")
    rows = with_ids.select(
        "provider_id",
        _name(name_policy).alias("provider_name"),
        F.lit(None).cast("string").alias("npi"),
        F.lit(None).cast("string").alias("dea"),
        F.coalesce("specialty_concept_id", F.lit(NO_MATCHING_CONCEPT)).alias(
            "specialty_concept_id"
        ),
        "care_site_id",
        F.year(fhir_datetime(F.col("birthDate"), ctx.config.timezone)).alias("year_of_birth"),
        "gender_concept_id",
        ctx.pseudonym(F.concat_ws("|", "_site", F.lit("Practitioner"), "id")).alias(
            "provider_source_value"
        ),
        "specialty_source_value",
        F.coalesce("specialty_source_concept_id", F.lit(NO_MATCHING_CONCEPT)).alias(
            "specialty_source_concept_id"
        ),
        F.col("gender").alias("gender_source_value"),
        F.lit(NO_MATCHING_CONCEPT).alias("gender_source_concept_id"),
        "_site",
        "_resource_type",
        F.col("id").alias("_fhir_id"),
    )
    return TableOutput(TABLE, rows, exclusions(roles))


def provider_ids(
    ctx: MappingContext, df: DataFrame, reference: Column, out: str = "provider_id"
) -> DataFrame:
    """Add `out` from a Reference struct to a Practitioner or a PractitionerRole (then its
    practitioner); literal, conditional or by identifier. Null when it reaches no provider."""
    from pyspark.sql import functions as F

    df = resolve_reference(
        df, reference, "Practitioner", reference_index(ctx.staged("Practitioner")), "_pv_direct"
    )
    roles = _roles(ctx).where(F.col("_practitioner").isNotNull())
    df = resolve_reference(df, reference, "PractitionerRole", reference_index(roles), "_pv_role")
    role_practitioner = roles.select(
        F.col("_site").alias("_pv_site"),
        F.col("id").alias("_pv_role_id"),
        F.col("_practitioner").alias("_pv_via_role"),
    )
    df = df.join(
        role_practitioner,
        (F.col("_site") == F.col("_pv_site")) & (F.col("_pv_role") == F.col("_pv_role_id")),
        "left",
    )
    practitioner = F.coalesce("_pv_direct", "_pv_via_role")
    found = ctx.ids.lookup(df, TABLE, F.col("_site"), "Practitioner", practitioner, out)
    return found.drop("_pv_direct", "_pv_role", "_pv_site", "_pv_role_id", "_pv_via_role")
