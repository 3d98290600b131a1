"""LOCATION from the addresses of Patient, Organization and Location (IG Location model).

Pseudonymised by construction (IG f2o-022: no addresses in any field), so a location is a
*generalised* address: country, state, city, county and the first `ZIP_PREFIX_LENGTH`
characters of the postal code (3, the US safe-harbour prefix and the Korean convention).
Deviations from the IG, on purpose:
- `address_1`, `address_2`, `latitude` and `longitude` are never filled.
- One row per distinct generalised address, shared by every patient and site that has it
  (natural key: the generalised fields; ids through the crosswalk under site `*`), so a row
  cannot single anyone out and `location_source_value` is that key, never an address line.
- `country_concept_id` is 0 (the Geography concepts are not in the development vocabulary);
  the country code is kept in `country_source_value`.
Korean (KR Core) addresses carry the district (시군구) in the `krcore-roadNameAddress`
extension rather than in `address.district`; it fills `county` when `district` is empty.
A location row stands for an address, not a resource: its provenance is the pseudo-type
`Address`, and the resources carrying addresses are accounted for by person and care_site.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from transforms.base import MappingContext, TableOutput
from vocabularies.concepts import NO_MATCHING_CONCEPT

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame

TABLE = "location"
ZIP_PREFIX_LENGTH = 3
ALL_SITES = "*"  # a generalised address is the same place whichever site reports it
ADDRESS = "Address"  # crosswalk resource type of location keys
KR_ROAD_NAME_ADDRESS = (
    "http://www.hl7korea.or.kr/fhir/krcore/StructureDefinition/krcore-roadNameAddress"
)
_KR_EXTENSION = "struct<url:string, extension:array<struct<url:string, valueString:string>>>"
_FIELDS = ("country", "state", "city", "county", "zip")


def _clean(value: Column) -> Column:
    """Trimmed and upper-cased, so `Emporia` and `EMPORIA ` are one place; empty is null."""
    from pyspark.sql import functions as F

    cleaned = F.upper(F.trim(value))
    return F.when(cleaned != "", cleaned)


def _zip_prefix(postal_code: Column) -> Column:
    """The first characters of the postal code without spaces or dashes; null when shorter."""
    from pyspark.sql import functions as F

    compact = F.upper(F.regexp_replace(postal_code, r"[^0-9A-Za-z]", ""))
    return F.when(
        F.length(compact) >= ZIP_PREFIX_LENGTH, F.substring(compact, 1, ZIP_PREFIX_LENGTH)
    )


def _kr_district(extensions: Column) -> Column:
    """The `district` part of a KR Core road-name address extension (extensions are JSON text)."""
    from pyspark.sql import functions as F

    parsed = F.transform(extensions, lambda e: F.from_json(e, _KR_EXTENSION))
    road = F.get(F.filter(parsed, lambda e: e["url"] == KR_ROAD_NAME_ADDRESS), 0)
    return F.get(F.filter(road["extension"], lambda p: p["url"] == "district"), 0)["valueString"]


def generalised(address: Column) -> Column:
    """The published fields of an address: struct(country, state, city, county, zip)."""
    from pyspark.sql import functions as F

    return F.struct(
        _clean(address["country"]).alias("country"),
        _clean(address["state"]).alias("state"),
        _clean(address["city"]).alias("city"),
        _clean(F.coalesce(address["district"], _kr_district(address["extension"]))).alias("county"),
        _zip_prefix(address["postalCode"]).alias("zip"),
    )


def location_key(address: Column) -> Column:
    """The natural key of an address's location (`country|state|city|county|zip`), or null
    when none of the generalised fields is known."""
    from pyspark.sql import functions as F

    parts = generalised(address)
    key = F.concat_ws("|", *[F.coalesce(parts[f], F.lit("")) for f in _FIELDS])
    return F.when(F.coalesce(*[parts[f] for f in _FIELDS]).isNotNull(), key)


def current_address(addresses: Column) -> Column:
    """The address to use from a list: a current home address, else the first current one.

    Addresses marked `old` or whose period has ended describe where someone no longer is.
    """
    from pyspark.sql import functions as F

    current = F.filter(
        addresses,
        lambda a: (F.coalesce(a["use"], F.lit("")) != "old") & a["period"]["end"].isNull(),
    )
    home = F.filter(current, lambda a: a["use"] == "home")
    return F.coalesce(F.get(home, 0), F.get(current, 0))


def location_ids(
    ctx: MappingContext, df: DataFrame, address: Column, out: str = "location_id"
) -> DataFrame:
    """Add `out`, the location_id of `address` (an R4 Address struct); null when unknown."""
    from pyspark.sql import functions as F

    keyed = df.withColumn("_location_key", location_key(address))
    found = ctx.ids.lookup(keyed, TABLE, F.lit(ALL_SITES), ADDRESS, F.col("_location_key"), out)
    return found.drop("_location_key")


def _addresses(ctx: MappingContext) -> DataFrame:
    """Every address a person or care site will link to, generalised, with its key."""
    from pyspark.sql import functions as F

    sources = [
        ctx.staged("Patient").select(current_address(F.col("address")).alias("a")),
        ctx.staged("Organization").select(current_address(F.col("address")).alias("a")),
        ctx.staged("Location").select(F.col("address").alias("a")),
    ]
    union = sources[0].unionByName(sources[1]).unionByName(sources[2])
    return union.select(
        location_key(F.col("a")).alias("source_key"), generalised(F.col("a")).alias("g")
    ).where(F.col("source_key").isNotNull())


def build(ctx: MappingContext) -> TableOutput:
    from pyspark.sql import functions as F

    # Equal keys have equal generalised fields, so any one row per key will do.
    places = _addresses(ctx).groupBy("source_key").agg(F.min("g").alias("g"))
    keyed = places.select(
        "*", F.lit(ALL_SITES).alias("site"), F.lit(ADDRESS).alias("resource_type")
    )
    with_ids = ctx.ids.assign(keyed, TABLE, "location_id")
    rows = with_ids.select(
        "location_id",
        F.lit(None).cast("string").alias("address_1"),
        F.lit(None).cast("string").alias("address_2"),
        F.col("g.city").alias("city"),
        F.col("g.state").alias("state"),
        F.col("g.zip").alias("zip"),
        F.col("g.county").alias("county"),
        F.col("source_key").alias("location_source_value"),
        F.lit(NO_MATCHING_CONCEPT).alias("country_concept_id"),
        F.col("g.country").alias("country_source_value"),
        F.lit(None).cast("double").alias("latitude"),
        F.lit(None).cast("double").alias("longitude"),
        F.lit(ALL_SITES).alias("_site"),
        F.lit(ADDRESS).alias("_resource_type"),
        F.col("source_key").alias("_fhir_id"),
    )
    return TableOutput(TABLE, rows)
