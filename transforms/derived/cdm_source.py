"""CDM_SOURCE: the one row that tells ATLAS and the OHDSI R packages what this CDM is.

Names and descriptions come from the site's configuration (`RunConfig.source`); the ETL
reference, CDM version and its concept are this project's. No clock is read: the release
dates are arguments, so a re-run of the same export writes the same row.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date
from typing import TYPE_CHECKING

from omopflow import __version__, cdm

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

TABLE = "cdm_source"
CDM_VERSION = cdm.CDM_VERSION  # "5.4"
CDM_VERSION_5_4 = 756265  # CDM vocabulary concept "OMOP CDM Version 5.4.0"
ETL_REFERENCE = f"omopflow {__version__}"

REQUIRED_KEYS = ("cdm_source_name", "cdm_source_abbreviation", "cdm_holder")
OPTIONAL_KEYS = ("source_description", "source_documentation_reference", "cdm_etl_reference")


def _checked(source: Mapping[str, str]) -> dict[str, str]:
    """The configured fields, refusing what the CDM would reject or cut."""
    unknown = sorted(set(source) - set(REQUIRED_KEYS) - set(OPTIONAL_KEYS))
    if unknown:
        raise ValueError(f"unknown cdm_source setting(s): {', '.join(unknown)}")
    missing = [key for key in REQUIRED_KEYS if not str(source.get(key) or "").strip()]
    if missing:
        raise ValueError(f"cdm_source needs a value for: {', '.join(missing)}")
    limits = {field.name: field.max_length for field in cdm.table_fields(TABLE)}
    for key, value in source.items():
        limit = limits[key]
        if limit is not None and len(value) > limit:
            raise ValueError(f"cdm_source {key} is {len(value)} characters; the CDM allows {limit}")
    return dict(source)


def build_cdm_source(
    spark: SparkSession,
    source: Mapping[str, str],
    vocabulary_version: str,
    release_date: date,
    cdm_release_date: date | None = None,
) -> DataFrame:
    """One CDM_SOURCE row.

    `release_date` is when the data were extracted (the export's date); `cdm_release_date`
    is when this CDM was built and defaults to the same date. `vocabulary_version` is the
    VOCABULARY row 'None' of the loaded release, e.g. "v5.0 29-FEB-24".
    """
    if not vocabulary_version.strip():
        raise ValueError("cdm_source needs the vocabulary version of the loaded release")
    vocabulary_limit = next(
        f.max_length for f in cdm.table_fields(TABLE) if f.name == "vocabulary_version"
    )
    if vocabulary_limit is not None and len(vocabulary_version) > vocabulary_limit:
        raise ValueError(
            f"vocabulary version {vocabulary_version!r} is longer than {vocabulary_limit}"
        )
    row = {
        "cdm_etl_reference": ETL_REFERENCE,
        **_checked(source),
        "source_release_date": release_date,
        "cdm_release_date": cdm_release_date or release_date,
        "cdm_version": CDM_VERSION,
        "cdm_version_concept_id": CDM_VERSION_5_4,
        "vocabulary_version": vocabulary_version,
    }
    schema = cdm.schema(TABLE)
    values = tuple(row.get(field.name) for field in schema.fields)
    return cdm.conform(spark.createDataFrame([values], schema=schema), TABLE)
