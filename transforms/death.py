"""DEATH from Patient.deceased[x] (IG Death model; the IG has no StructureMap).

A Patient with `deceasedDateTime` gives one death row, typed EHR (the record came from the
hospital's patient record). FHIR carries no cause of death on Patient, so the cause columns
stay empty.
Exclusions, each with a reason (the person row is kept in every case):
- `deceasedBoolean = true` without a date: the CDM requires `death_date` and inventing one
  (the export date, the last visit) would be a made-up fact;
- a `deceasedDateTime` that cannot be read as a date;
- a death date before the person's birth date (DQD plausibleTemporalAfter).
Patients that did not become persons are excluded by PERSON with its reason, not here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from transforms.base import DATE_IN_FUTURE, MappingContext, TableOutput, exclusions, first_reason
from transforms.fhir import fhir_datetime
from vocabularies.concepts import EHR

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

TABLE = "death"
NO_DATE = "deceased without a date"
BAD_DATE = "deceased date not usable"
BEFORE_BIRTH = "death date before birth date"


def build(ctx: MappingContext) -> TableOutput:
    from pyspark.sql import functions as F

    patients = ctx.staged("Patient")
    deceased = patients.where(
        F.col("deceasedDateTime").isNotNull() | F.coalesce(F.col("deceasedBoolean"), F.lit(False))
    )
    deceased = ctx.ids.lookup(
        deceased, "person", F.col("_site"), "Patient", F.col("id"), "person_id"
    ).where(F.col("person_id").isNotNull())
    deceased = deceased.withColumn(
        "_death", fhir_datetime(F.col("deceasedDateTime"), ctx.config.timezone)
    )
    births = _births(ctx, deceased)
    reason = first_reason(
        (F.col("deceasedDateTime").isNull(), NO_DATE),
        (F.col("_death").isNull(), BAD_DATE),
        (F.to_date("_death") < F.col("_birth_date"), BEFORE_BIRTH),
        (ctx.in_future(F.col("_death")), DATE_IN_FUTURE),
    )
    deceased = births.withColumn("_reason", reason)
    rows = deceased.where(F.col("_reason").isNull()).select(
        "person_id",
        F.to_date("_death").alias("death_date"),
        F.col("_death").alias("death_datetime"),
        F.lit(EHR).alias("death_type_concept_id"),
        F.lit(None).cast("long").alias("cause_concept_id"),
        F.lit(None).cast("string").alias("cause_source_value"),
        F.lit(None).cast("long").alias("cause_source_concept_id"),
        "_site",
        "_resource_type",
        F.col("id").alias("_fhir_id"),
    )
    return TableOutput(TABLE, rows, exclusions(deceased))


def _births(ctx: MappingContext, deceased: DataFrame) -> DataFrame:
    """Add `_birth_date` from the PERSON rows built earlier in the run (null if not built)."""
    from pyspark.sql import functions as F

    person = ctx.outputs.get("person")
    if person is None:
        return deceased.withColumn("_birth_date", F.lit(None).cast("date"))
    births = person.select(
        F.col("person_id").alias("_birth_person"),
        F.make_date(
            "year_of_birth",
            F.coalesce("month_of_birth", F.lit(1)),
            F.coalesce("day_of_birth", F.lit(1)),
        ).alias("_birth_date"),
    )
    joined = deceased.join(births, F.col("person_id") == F.col("_birth_person"), "left")
    return joined.drop("_birth_person")
