"""DOSE_ERA: a person's exposure to one ingredient at one constant daily dose.

The CDM v5 DRUG_EXPOSURE has no dose column (v4's effective_drug_dose is gone), so the dose
must come from DRUG_STRENGTH. This builder does so only where the daily dose is plain
arithmetic: a solid strength (amount_value, e.g. 5 mg per tablet), a quantity and a
days_supply, giving dose_value = amount_value * quantity / days_supply in the amount unit.
Liquids and other concentration strengths (numerator/denominator) are not converted, as
that needs volume per dose the exports do not give; those exposures are left out and counted
in the returned reason. Eras then follow the drug era rule per (person, ingredient, unit,
dose): exposure end as for drug eras, 30-day persistence window (the CDM: "an era is ended
if there are 31 days or more between dosage records").

When no dose can be computed at all (the shipped vocabulary's DRUG_STRENGTH is empty) the
builder returns None and a reason for the run ledger instead of an empty table.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from omopflow import cdm
from transforms.derived.drug_era import (
    EXPOSURE_COLUMNS,
    PERSISTENCE_WINDOW_DAYS,
    exposure_end,
    require_columns,
)
from transforms.derived.ids import IdAssigner, person_scoped_ids
from transforms.derived.intervals import collapse_spans

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame

TABLE = "dose_era"
DOSE_DECIMALS = 6  # rounding keeps float noise from splitting one dose into two eras


def _daily_dose() -> Column:
    from pyspark.sql import functions as F

    quantity = F.col("quantity").cast("double")
    days_supply = F.col("days_supply").cast("double")
    computable = (
        F.col("amount_value").isNotNull()
        & F.col("amount_unit_concept_id").isNotNull()
        & (quantity > 0)
        & (days_supply > 0)
    )
    dose = F.col("amount_value").cast("double") * quantity / days_supply
    return F.when(computable, F.round(dose, DOSE_DECIMALS))


def build_dose_era(
    drug_exposure: DataFrame,
    drug_strength: DataFrame,
    gap_days: int = PERSISTENCE_WINDOW_DAYS,
    ids: IdAssigner = person_scoped_ids,
) -> tuple[DataFrame | None, str]:
    """DOSE_ERA rows (or None) and a one-line reason or summary for the run ledger.

    Ids come from (person_id, ingredient, unit, dose_value, era start date).
    """
    from pyspark.sql import functions as F

    require_columns(
        drug_strength,
        "drug_strength",
        ["drug_concept_id", "ingredient_concept_id", "amount_value", "amount_unit_concept_id"],
    )
    require_columns(drug_exposure, "drug_exposure", [*EXPOSURE_COLUMNS, "quantity"])
    if drug_strength.isEmpty():
        return None, "dose_era not built: the vocabulary's DRUG_STRENGTH table is empty"
    strengths = drug_strength.select(
        F.col("drug_concept_id").cast("long").alias("drug_concept_id"),
        F.col("ingredient_concept_id").cast("long").alias("ingredient_concept_id"),
        F.col("amount_value"),
        F.col("amount_unit_concept_id").cast("long").alias("amount_unit_concept_id"),
    )
    doses = (
        drug_exposure.where(
            F.col("person_id").isNotNull() & F.col("drug_exposure_start_date").isNotNull()
        )
        .select(
            F.col("person_id").cast("long").alias("person_id"),
            F.col("drug_concept_id").cast("long").alias("drug_concept_id"),
            F.col("drug_exposure_start_date").cast("date").alias("start_date"),
            exposure_end().alias("end_date"),
            "quantity",
            "days_supply",
        )
        .join(strengths, "drug_concept_id")
        .select(
            "person_id",
            "ingredient_concept_id",
            F.col("amount_unit_concept_id").alias("unit_concept_id"),
            _daily_dose().alias("dose_value"),
            "start_date",
            "end_date",
        )
    )
    counts = doses.agg(
        F.count(F.lit(1)).alias("pairs"), F.count("dose_value").alias("with_dose")
    ).first()
    pairs, with_dose = (int(counts["pairs"]), int(counts["with_dose"])) if counts else (0, 0)
    if with_dose == 0:
        return None, (
            f"dose_era not built: none of {pairs} exposure-ingredient pairs with a DRUG_STRENGTH"
            " row has an amount strength, quantity and days supply"
        )
    keys = ["person_id", "ingredient_concept_id", "unit_concept_id", "dose_value"]
    eras = collapse_spans(doses.where(F.col("dose_value").isNotNull()), keys, gap_days)
    table = eras.select(
        "person_id",
        F.col("ingredient_concept_id").alias("drug_concept_id"),
        "unit_concept_id",
        "dose_value",
        F.col("start_date").alias("dose_era_start_date"),
        F.col("end_date").alias("dose_era_end_date"),
    )
    summary = (
        f"dose_era built from {with_dose} of {pairs} exposure-ingredient pairs; "
        f"{pairs - with_dose} lack an amount strength, quantity or days supply"
    )
    natural_key = [
        "person_id",
        "drug_concept_id",
        "unit_concept_id",
        "dose_value",
        "dose_era_start_date",
    ]
    return cdm.conform(ids(table, natural_key, "dose_era_id"), TABLE), summary
