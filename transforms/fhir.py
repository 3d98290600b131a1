"""Small column functions over typed FHIR elements, shared by every table module."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pyspark.sql import Column

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
