"""Mapping coverage for the run report, and the unmapped codes as an OHDSI Usagi import.

Input: mapped coded records (the output of `map_codings`) with a `resource_type` column
and the `{prefix}_*` columns. Counts are of rows; a code mapped to two standard concepts
counts twice, as it gives two OMOP records.

The Usagi file is a plain CSV (RFC 4180 quoting) with the column names Usagi itself uses
in its mapping files: `sourceCode`, `sourceName`, `sourceFrequency`,
`sourceAutoAssignedConceptIds` (left empty) and `ADD_INFO:*` columns, which Usagi shows to
the reviewer without using them for matching. In Usagi: File > Import codes, then pick
these columns in the column-mapping section. The most frequent codes come first.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from vocabularies.concepts import NO_MATCHING_CONCEPT

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

NO_VOCABULARY = "(unknown system)"


def coverage(df: DataFrame, prefix: str) -> DataFrame:
    """Per resource type and source vocabulary: records, mapped records and their share."""
    from pyspark.sql import functions as F

    vocabulary = F.coalesce(F.col(f"{prefix}_vocabulary_id"), F.lit(NO_VOCABULARY))
    mapped = (F.col(f"{prefix}_concept_id") != NO_MATCHING_CONCEPT).cast("long")
    return (
        df.groupBy(F.col("resource_type"), vocabulary.alias("vocabulary_id"))
        .agg(F.count(F.lit(1)).alias("records"), F.sum(mapped).alias("mapped_records"))
        .withColumn("mapped_share", F.round(F.col("mapped_records") / F.col("records"), 4))
        .orderBy("resource_type", "vocabulary_id")
    )


def unmapped_codes(df: DataFrame, prefix: str) -> DataFrame:
    """Codes that reached no standard concept: system, vocabulary, code, display, count."""
    from pyspark.sql import functions as F

    unmapped = df.where(
        (F.col(f"{prefix}_concept_id") == NO_MATCHING_CONCEPT)
        & F.col(f"{prefix}_source_value").isNotNull()
    )
    return (
        unmapped.groupBy(
            F.col(f"{prefix}_system").alias("system"),
            F.col(f"{prefix}_vocabulary_id").alias("vocabulary_id"),
            F.col(f"{prefix}_source_value").alias("code"),
        )
        .agg(
            # min() so reruns pick the same display when sources spell it differently
            F.min(f"{prefix}_display").alias("display"),
            F.max(f"{prefix}_source_concept_id").alias("source_concept_id"),
            F.count(F.lit(1)).alias("count"),
        )
        .orderBy(F.col("count").desc(), "system", "code")
    )


def write_usagi_csv(df: DataFrame, path: Path, prefix: str) -> Path:
    """Write the unmapped codes of `df` as one Usagi import CSV at `path`."""
    from pyspark.sql import functions as F

    codes = unmapped_codes(df, prefix).select(
        F.col("code").alias("sourceCode"),
        F.coalesce("display", "code").alias("sourceName"),
        F.col("count").alias("sourceFrequency"),
        F.lit("").alias("sourceAutoAssignedConceptIds"),
        F.col("system").alias("ADD_INFO:system"),
        F.col("vocabulary_id").alias("ADD_INFO:vocabulary_id"),
        F.col("source_concept_id").alias("ADD_INFO:source_concept_id"),
    )
    return write_single_csv(codes, Path(path), sep=",", quote='"')


def write_single_csv(df: DataFrame, path: Path, sep: str, quote: str) -> Path:
    """Write `df` (already ordered) as exactly one CSV file, through a temporary folder."""
    staging = path.with_name(f".{path.name}.tmp")
    shutil.rmtree(staging, ignore_errors=True)
    writer = (
        df.coalesce(1)
        .write.option("header", "true")
        .option("sep", sep)
        .option("quote", quote)
        .option("emptyValue", "")
        .option("ignoreLeadingWhiteSpace", "false")
        .option("ignoreTrailingWhiteSpace", "false")
    )
    # RFC 4180 doubles a quote inside a quoted field; the Athena layout (no quote char)
    # never quotes, so names keep their quote characters verbatim.
    escaping = ("escape", quote) if quote else ("escapeQuotes", "false")
    writer = writer.option(*escaping)
    writer.csv(str(staging))
    part = next(staging.glob("part-*"))
    path.parent.mkdir(parents=True, exist_ok=True)
    part.replace(path)
    shutil.rmtree(staging, ignore_errors=True)
    return path
