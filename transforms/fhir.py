"""Small column functions over typed FHIR elements, shared by every table module."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame

_OFFSET = r"(Z|[+-]\d\d:\d\d)$"


def reference_id(reference: Column, resource_type: str) -> Column:
    """The id in a reference to `resource_type` (`Patient/1`, `https://x/fhir/Patient/1`,
    `Patient/1/_history/2`); null for a reference to another type or an unresolved urn."""
    from pyspark.sql import functions as F

    pattern = rf"(?:^|/){resource_type}/([^/]+)(?:/_history/[^/]+)?$"
    found = F.regexp_extract(reference, pattern, 1)
    return F.when(found != "", found)


def fhir_datetime(value: Column, timezone: str) -> Column:
    """A FHIR date, dateTime or instant as wall-clock time in `timezone` (TIMESTAMP_NTZ).

    Values with an offset are instants, converted to `timezone`; dates and partial dates
    (`2019`, `2019-03`) have no instant and are read as local midnight of their first day.
    Unparsable values give null, which the caller turns into an exclusion.
    """
    from pyspark.sql import functions as F

    instant = F.from_utc_timestamp(F.try_to_timestamp(value), timezone)
    local = F.try_to_timestamp(value)
    wall = F.when(value.rlike(_OFFSET), instant).otherwise(local)
    return wall.cast("timestamp_ntz")


def first(array: Column) -> Column:
    from pyspark.sql import functions as F

    return F.get(array, 0)


def extension(extensions: Column, url: str) -> Column:
    """The first extension with `url` in an array of extensions (null when absent)."""
    from pyspark.sql import functions as F

    return F.get(F.filter(extensions, lambda e: e["url"] == url), 0)


# References come literal (`Practitioner/1`), conditional
# (`Practitioner?identifier=http://hl7.org/fhir/sid/us-npi|99`, as Synthea's bulk export
# writes them) or logical (`Reference.identifier` alone, as in its PractitionerRole). All
# resolve through one index, keyed so that an id never meets an identifier.
_ID_KEY = "id:"
_IDENTIFIER_KEY = "identifier:"


def reference_key(reference: Column, resource_type: str) -> Column:
    """The index key of a Reference struct pointing to `resource_type`: `id:<id>` when
    literal, `identifier:<system>|<value>` when conditional or logical; null otherwise."""
    from pyspark.sql import functions as F

    text = reference["reference"]
    literal = reference_id(text, resource_type)
    token = F.regexp_extract(text, rf"^{resource_type}\?identifier=(.+\|.+)$", 1)
    logical = F.concat(
        reference["identifier"]["system"], F.lit("|"), reference["identifier"]["value"]
    )
    return F.coalesce(
        F.concat(F.lit(_ID_KEY), literal),
        F.when(token != "", F.concat(F.lit(_IDENTIFIER_KEY), token)),
        F.concat(F.lit(_IDENTIFIER_KEY), logical),
    )


def reference_index(resources: DataFrame) -> DataFrame:
    """(_site, _ref_key, _ref_id) for staged resources: their id and each business identifier.

    An identifier shared by two resources of the site is dropped: a reference through it is
    ambiguous, so it stays unresolved rather than linking to either (or duplicating rows).
    """
    from pyspark.sql import functions as F

    by_id = resources.select(
        "_site", F.concat(F.lit(_ID_KEY), "id").alias("_ref_key"), F.col("id").alias("_ref_id")
    )
    tokens = F.transform(
        F.filter("identifier", lambda i: i["system"].isNotNull() & i["value"].isNotNull()),
        lambda i: F.concat(F.lit(_IDENTIFIER_KEY), i["system"], F.lit("|"), i["value"]),
    )
    by_identifier = (
        resources.select("_site", F.explode(tokens).alias("_ref_key"), F.col("id").alias("_ref_id"))
        .distinct()
        .groupBy("_site", "_ref_key")
        .agg(F.count("*").alias("_n"), F.min("_ref_id").alias("_ref_id"))
        .where("_n = 1")
        .drop("_n")
    )
    return by_id.unionByName(by_identifier)


def resolve_reference(
    df: DataFrame, reference: Column, resource_type: str, index: DataFrame, out: str
) -> DataFrame:
    """Add `out`: the FHIR id of the staged resource that `reference` (a Reference struct)
    points to, in the row's own site; null when it is not staged or is ambiguous."""
    from pyspark.sql import functions as F

    keyed = df.withColumn("_ref_lookup", reference_key(reference, resource_type))
    right = index.select(F.col("_site").alias("_ref_site"), "_ref_key", F.col("_ref_id").alias(out))
    on = (F.col("_site") == F.col("_ref_site")) & (F.col("_ref_lookup") == F.col("_ref_key"))
    return keyed.join(right, on, "left").drop("_ref_lookup", "_ref_site", "_ref_key")


def as_reference(text: Column) -> Column:
    """A Reference struct holding only `reference` text, for helpers that take Reference
    structs (`resolve_reference`) when a caller has just the string."""
    from pyspark.sql import functions as F

    identifier = F.struct(
        F.lit(None).cast("string").alias("system"), F.lit(None).cast("string").alias("value")
    )
    return F.struct(text.alias("reference"), identifier.alias("identifier"))
