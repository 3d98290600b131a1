"""DRUG_ERA: a person's exposure to one ingredient, 30-day persistence window.

Follows the OHDSI "non-stockpile" drug era script (CommonDataModel "Drug Eras", as used by
ETL-Synthea):
- each exposure is rolled up to its ingredients through CONCEPT_ANCESTOR, keeping
  ancestors of concept class 'Ingredient' in RxNorm or RxNorm Extension; a combination drug
  counts towards each of its ingredients;
- exposure end = drug_exposure_end_date, else start + days_supply when days_supply > 0,
  else start + 1 day;
- overlapping or touching exposures of one ingredient first merge into sub-exposures (no
  gap), then sub-exposures join into eras when the next starts at most 30 days after the
  latest end so far;
- drug_exposure_count counts exposures; gap_days = era length - days covered by
  sub-exposures (the drug-free days inside the era, supplies not stockpiled).
Deviations (see docs/derived.md):
- RxNorm Extension ingredients are accepted too (ETL-Synthea keeps RxNorm only);
- an end date before the start date counts as no end date;
- gap_days is the number of days; ETL-Synthea's published tables hold days since
  1970-01-01 there (a date arithmetic slip in its script).
Left out and counted: exposures with drug_concept_id 0 or no Ingredient ancestor, with a
negative days_supply (as OHDSI does), or without person or start date.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from omopflow import cdm
from transforms.derived.ids import IdAssigner, person_scoped_ids
from transforms.derived.intervals import collapse_spans

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame

TABLE = "drug_era"
PERSISTENCE_WINDOW_DAYS = 30
NO_MATCHING_CONCEPT = 0
DEFAULT_DURATION_DAYS = 1  # length of an exposure with neither end date nor days supply
INGREDIENT_CLASS = "Ingredient"
INGREDIENT_VOCABULARIES = ("RxNorm", "RxNorm Extension")
EXPOSURE_COLUMNS = (
    "person_id",
    "drug_concept_id",
    "drug_exposure_start_date",
    "drug_exposure_end_date",
    "days_supply",
)


def require_columns(frame: DataFrame, name: str, columns: Sequence[str]) -> None:
    missing = [column for column in columns if column not in frame.columns]
    if missing:
        raise ValueError(f"{name} lacks the column(s) {', '.join(missing)}")


def ingredient_map(concept: DataFrame, concept_ancestor: DataFrame) -> DataFrame:
    """(drug_concept_id, ingredient_concept_id) for every drug with an Ingredient ancestor.

    Ingredients are their own ancestors (level 0) in CONCEPT_ANCESTOR, so exposures coded
    at ingredient level roll up to themselves.
    """
    from pyspark.sql import functions as F

    require_columns(concept, "concept", ["concept_id", "concept_class_id", "vocabulary_id"])
    require_columns(
        concept_ancestor, "concept_ancestor", ["ancestor_concept_id", "descendant_concept_id"]
    )
    ingredients = concept.where(
        (F.col("concept_class_id") == INGREDIENT_CLASS)
        & F.col("vocabulary_id").isin(*INGREDIENT_VOCABULARIES)
    ).select(F.col("concept_id").cast("long").alias("ingredient_concept_id"))
    ancestors = concept_ancestor.select(
        F.col("descendant_concept_id").cast("long").alias("drug_concept_id"),
        F.col("ancestor_concept_id").cast("long").alias("ingredient_concept_id"),
    )
    # Ingredients are few (thousands): broadcasting them keeps the big ancestor table still.
    return ancestors.join(F.broadcast(ingredients), "ingredient_concept_id").distinct()


def exposure_end() -> Column:
    from pyspark.sql import functions as F

    start = F.col("drug_exposure_start_date").cast("date")
    end = F.col("drug_exposure_end_date").cast("date")
    days_supply = F.col("days_supply").cast("int")
    return (
        F.when(end >= start, end)
        .when(days_supply > 0, F.date_add(start, days_supply))
        .otherwise(F.date_add(start, DEFAULT_DURATION_DAYS))
    )


def _is_dated() -> Column:
    from pyspark.sql import functions as F

    return F.col("person_id").isNotNull() & F.col("drug_exposure_start_date").isNotNull()


def _has_usable_supply() -> Column:
    from pyspark.sql import functions as F

    return F.coalesce(F.col("days_supply"), F.lit(0)) >= 0


def _ingredient_spans(drug_exposure: DataFrame, ingredients: DataFrame) -> DataFrame:
    from pyspark.sql import functions as F

    exposures = drug_exposure.where(_is_dated() & _has_usable_supply()).select(
        F.col("person_id").cast("long").alias("person_id"),
        F.col("drug_concept_id").cast("long").alias("drug_concept_id"),
        F.col("drug_exposure_start_date").cast("date").alias("start_date"),
        exposure_end().alias("end_date"),
    )
    # The inner join drops concept 0 too: no ingredient descends from it.
    return exposures.join(ingredients, "drug_concept_id").drop("drug_concept_id")


def build_drug_era(
    drug_exposure: DataFrame,
    concept: DataFrame,
    concept_ancestor: DataFrame,
    gap_days: int = PERSISTENCE_WINDOW_DAYS,
    ids: IdAssigner = person_scoped_ids,
) -> tuple[DataFrame, dict[str, int]]:
    """DRUG_ERA rows and the counts of exposures left out, for the run ledger.

    The counts dict has: drug_exposures, exposures_without_ingredient,
    exposures_with_negative_days_supply, exposures_without_person_or_start_date,
    exposures_used. Ids come from (person_id, ingredient, era start date).
    """
    from pyspark.sql import functions as F

    require_columns(drug_exposure, "drug_exposure", EXPOSURE_COLUMNS)
    ingredients = ingredient_map(concept, concept_ancestor)
    keys = ["person_id", "ingredient_concept_id"]
    sub_exposures = collapse_spans(
        _ingredient_spans(drug_exposure, ingredients),
        keys,
        0,
        F.count(F.lit(1)).alias("drug_exposure_count"),
    ).withColumn("days_exposed", F.datediff("end_date", "start_date"))
    eras = collapse_spans(
        sub_exposures,
        keys,
        gap_days,
        F.sum("drug_exposure_count").alias("drug_exposure_count"),
        F.sum("days_exposed").alias("days_exposed"),
    )
    table = eras.select(
        "person_id",
        F.col("ingredient_concept_id").alias("drug_concept_id"),
        F.col("start_date").alias("drug_era_start_date"),
        F.col("end_date").alias("drug_era_end_date"),
        "drug_exposure_count",
        (F.datediff("end_date", "start_date") - F.col("days_exposed")).alias("gap_days"),
    )
    natural_key = ["person_id", "drug_concept_id", "drug_era_start_date"]
    table = ids(table, natural_key, "drug_era_id")
    return cdm.conform(table, TABLE), _count_exclusions(drug_exposure, ingredients)


def _count_exclusions(drug_exposure: DataFrame, ingredients: DataFrame) -> dict[str, int]:
    """One aggregate over the exposures; each left-out exposure falls in exactly one bucket."""
    from pyspark.sql import functions as F

    known = ingredients.select("drug_concept_id").distinct().withColumn("_known", F.lit(True))
    flagged = drug_exposure.select(
        F.col("drug_concept_id").cast("long").alias("drug_concept_id"),
        _is_dated().alias("_dated"),
        _has_usable_supply().alias("_supply_ok"),
    ).join(known, "drug_concept_id", "left")
    no_ingredient = F.col("_known").isNull()
    row = flagged.agg(
        F.count(F.lit(1)).alias("drug_exposures"),
        F.count(F.when(no_ingredient, 1)).alias("exposures_without_ingredient"),
        F.count(F.when(~no_ingredient & ~F.col("_supply_ok"), 1)).alias(
            "exposures_with_negative_days_supply"
        ),
        F.count(F.when(~no_ingredient & F.col("_supply_ok") & ~F.col("_dated"), 1)).alias(
            "exposures_without_person_or_start_date"
        ),
        F.count(F.when(~no_ingredient & F.col("_supply_ok") & F.col("_dated"), 1)).alias(
            "exposures_used"
        ),
    ).first()
    return {name: int(row[name] or 0) for name in row.asDict()} if row else {}
