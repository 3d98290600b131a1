"""METADATA: what produced this release, one name/value row per fact.

The rows a run writes (see `run_metadata`): the omopflow version, the vocabulary release,
each input export, and the version of the HL7 FHIR-to-OMOP IG the mappings follow. No
concept in the vocabulary names these facts, so metadata_concept_id and
metadata_type_concept_id are 0 ("No matching concept"), as the CDM allows.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING

from omopflow import __version__, cdm
from transforms.derived.ids import IdAssigner, small_table_ids

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

TABLE = "metadata"
NO_MATCHING_CONCEPT = 0
METADATA_CONCEPT = NO_MATCHING_CONCEPT  # no standard concept names "ETL software version" etc.
METADATA_TYPE_CONCEPT = NO_MATCHING_CONCEPT

SOFTWARE_VERSION = "omopflow_version"
VOCABULARY_RELEASE = "vocabulary_version"
INPUT_EXPORT = "input_export"
IG_VERSION = "hl7_fhir_omop_ig_version"


def read_ig_version(sushi_config: Path) -> str:
    """The `version` of the FHIR-to-OMOP IG from its sushi-config.yaml."""
    import yaml

    config = yaml.safe_load(sushi_config.read_text(encoding="utf-8")) or {}
    version = config.get("version") if isinstance(config, dict) else None
    if not version:
        raise ValueError(f"{sushi_config} has no 'version'")
    return str(version)


def run_metadata(
    vocabulary_version: str, input_exports: Sequence[str], ig_version: str
) -> dict[str, str | Sequence[str]]:
    """The facts a run records, ready for `build_metadata`."""
    return {
        SOFTWARE_VERSION: __version__,
        VOCABULARY_RELEASE: vocabulary_version,
        INPUT_EXPORT: list(input_exports),
        IG_VERSION: ig_version,
    }


def _rows(run: Mapping[str, str | Sequence[str]]) -> list[tuple[str, str]]:
    rows: list[tuple[str, str]] = []
    for name, value in run.items():
        values = [value] if isinstance(value, str) else list(value)
        rows.extend((name, str(item)) for item in values)
    limit = 250  # both name and value_as_string are varchar(250) in CDM v5.4
    too_long = [name for name, value in rows if len(name) > limit or len(value) > limit]
    if too_long:
        raise ValueError(f"metadata longer than {limit} characters for: {', '.join(too_long)}")
    return rows


def build_metadata(
    spark: SparkSession,
    run: Mapping[str, str | Sequence[str]],
    metadata_date: date | None = None,
    ids: IdAssigner = small_table_ids,
) -> DataFrame:
    """One METADATA row per (name, value); a list value gives one row per item.

    Ids come from (name, value), so the same facts keep the same ids.
    """
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    if not run:
        raise ValueError("no run facts given for METADATA")
    schema = T.StructType(
        [T.StructField("name", T.StringType(), False), T.StructField("value", T.StringType())]
    )
    facts = spark.createDataFrame(_rows(run), schema=schema)
    table = facts.select(
        F.lit(METADATA_CONCEPT).alias("metadata_concept_id"),
        F.lit(METADATA_TYPE_CONCEPT).alias("metadata_type_concept_id"),
        "name",
        F.col("value").alias("value_as_string"),
        F.lit(metadata_date).cast("date").alias("metadata_date"),
    )
    return cdm.conform(ids(table, ["name", "value_as_string"], "metadata_id"), TABLE)
