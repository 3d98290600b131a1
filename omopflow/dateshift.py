"""Per-person date shifting of conformed CDM tables (optional; off unless configured).

Every date and datetime of a person's rows moves by the same secret number of days, in
every table, so intervals within a person survive (ages at events, lengths of stay, eras)
while calendar dates no longer match hospital records. The shift is
`omopflow.pseudonym.date_shift_days` of the person_id: an HMAC under its own label, so it
needs the pseudonym key, and it is stable because person ids never change (crosswalk).
Each row computes its own shift from its person_id: no join, so no row can miss it.

Apply it to the tables the mapping modules produce, before they are written; the derived
tables (observation_period, eras) are then built from shifted events and come out shifted
too. Applying it again to a derived table would shift that table twice.

Rules per table:
- tables with `person_id`: every DateType/TimestampType column is shifted. A row with a
  null person_id gets null dates (fail closed: the gate's not-null checks then block the
  release rather than publish a real date).
- `person`: the birth date is shifted as a whole when year, month and day are all known
  (birth_datetime too), and year/month/day are rewritten from it; a birth known only to
  the year or month is left as it is, because moving part of a date would invent the rest.
- tables without `person_id` and without person-level dates (vocabulary, location,
  care_site, provider, cdm_source, metadata) are returned unchanged; any other table with
  dates and no person_id is refused, so a new table is never published unshifted.

The shifts are written to `restricted/date_shift/<run>/` (person_id, date_shift_days), never
to the warehouse.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from omopflow.pseudonym import date_shift_days, shift_dates

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame

SHIFT_COLUMN = "date_shift_days"
SHIFTED_BIRTH = "_shifted_birth"
# Tables whose dates belong to no person: releases, care sites, providers, sources.
NOT_PERSON_TABLES = frozenset(
    {"cdm_source", "metadata", "location", "care_site", "provider", "concept", "vocabulary"}
)
BIRTH_PARTS = ("year_of_birth", "month_of_birth", "day_of_birth")


class UnshiftableTable(ValueError):
    """A table has dates but no person_id, and is not known to be free of person dates."""


def date_columns(df: DataFrame) -> list[str]:
    from pyspark.sql.types import DateType, TimestampNTZType, TimestampType

    dated = (DateType, TimestampType, TimestampNTZType)
    return [f.name for f in df.schema.fields if isinstance(f.dataType, dated)]


def person_shift(person_id: Column, key: bytes, max_days: int) -> Column:
    """The person's secret shift in days, within [-max_days, max_days]."""
    return date_shift_days(person_id, key, max_days).alias(SHIFT_COLUMN)


def shift_table(df: DataFrame, table: str, key: bytes, max_days: int) -> DataFrame:
    """One conformed CDM table with every person date moved by that person's shift."""
    from pyspark.sql import functions as F

    if max_days <= 0:
        return df
    dates = [c for c in date_columns(df) if c != "birth_datetime"]
    if "person_id" not in df.columns:
        if dates and table not in NOT_PERSON_TABLES:
            raise UnshiftableTable(
                f"date shift: {table} has dates ({', '.join(dates)}) but no person_id"
            )
        return df
    shifted = df.withColumn(SHIFT_COLUMN, person_shift(F.col("person_id"), key, max_days))
    shifted = shift_dates(shifted, dates, SHIFT_COLUMN)
    if table == "person":
        shifted = _shift_birth(shifted)
    return shifted.drop(SHIFT_COLUMN).select(*df.columns)


def _shift_birth(person: DataFrame) -> DataFrame:
    """Shift a fully known birth date; rewrite its parts; leave partial ones alone."""
    from pyspark.sql import functions as F

    full = F.make_date(*[F.col(c) for c in BIRTH_PARTS])
    # Computed once, before any part is rewritten: deriving the month from a rewritten
    # year (or the day from a rewritten month) would shift twice across a month boundary.
    person = person.withColumn(SHIFTED_BIRTH, F.date_add(full, F.col(SHIFT_COLUMN)))
    complete = F.col(SHIFTED_BIRTH).isNotNull()
    parts = {"year_of_birth": F.year, "month_of_birth": F.month, "day_of_birth": F.dayofmonth}
    for name, part in parts.items():
        old = person.schema[name].dataType
        person = person.withColumn(
            name, F.when(complete, part(SHIFTED_BIRTH).cast(old)).otherwise(F.col(name))
        )
    if "birth_datetime" in person.columns:
        moved = F.timestamp_add("DAY", F.col(SHIFT_COLUMN), F.col("birth_datetime"))
        kind = person.schema["birth_datetime"].dataType
        person = person.withColumn(
            "birth_datetime", F.when(complete, moved.cast(kind)).otherwise(F.col("birth_datetime"))
        )
    return person


def shift_tables(
    tables: Mapping[str, DataFrame], key: bytes, max_days: int
) -> dict[str, DataFrame]:
    """`shift_table` over a set of conformed tables (the mapped ones, not the derived)."""
    return {name: shift_table(df, name, key, max_days) for name, df in tables.items()}


def shift_frame(person: DataFrame, key: bytes, max_days: int) -> DataFrame:
    """(person_id, date_shift_days) for every person: what restricted/ keeps."""
    from pyspark.sql import functions as F

    return person.select("person_id", person_shift(F.col("person_id"), key, max_days))


def write_shifts(
    person: DataFrame, key: bytes, max_days: int, restricted: Path, run_id: str
) -> Path:
    """Write the person shifts to `restricted/date_shift/<run_id>/` and return the folder."""
    target = restricted / "date_shift" / run_id
    shift_frame(person, key, max_days).orderBy("person_id").coalesce(1).write.mode(
        "overwrite"
    ).parquet(str(target))
    return target
