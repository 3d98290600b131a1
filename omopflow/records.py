"""Raw input records with their lineage: one row per NDJSON line or per JSON file.

Spark reads the text; line numbers are derived without Python per row. A text read gives
each partition a contiguous run of one file's lines (a split starting at a byte offset), so
a line's number is the count of lines in earlier splits of its file plus its position in
its own split. `monotonically_increasing_id` encodes (partition, position) and is stable
for a given file layout, which is all that is needed here; it is never used as an OMOP id.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING

from omopflow.frames import union_all
from omopflow.landing import InputFile

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame, SparkSession

RECORD_COLUMNS = ("_file", "_export", "_declared_type", "_line", "value")
_GLOB_CHARS = re.compile(r"([\[\]{}*?\\])")


def spark_path(path: str) -> str:
    """Escape Hadoop glob characters so a file name like `x[1].ndjson` reads as itself."""
    return _GLOB_CHARS.sub(r"\\\1", path)


def _local_path(uri: Column) -> Column:
    """A file URI as Hadoop gives it (percent-encoded) as a plain local path."""
    from pyspark.sql import functions as F

    decoded = F.url_decode(F.regexp_replace(uri, r"\+", "%2B"))
    return F.regexp_replace(decoded, r"^file:/+", "/")


def _files_table(spark: SparkSession, files: Sequence[InputFile]) -> DataFrame:
    rows = [(str(f.path.resolve()), f.export_id, f.declared_type) for f in files]
    return spark.createDataFrame(rows, "_file string, _export string, _declared_type string")


def read_ndjson(spark: SparkSession, files: Sequence[InputFile]) -> DataFrame:
    """Every line of every NDJSON file, numbered from 1 within its file."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    paths = [spark_path(str(f.path.resolve())) for f in files]
    text = spark.read.text(paths).select(
        F.input_file_name().alias("_uri"),
        F.input_file_block_start().alias("_block"),
        F.monotonically_increasing_id().alias("_pos"),
        "value",
    )
    splits = text.groupBy("_uri", "_block").agg(
        F.count("*").alias("_n"), F.min("_pos").alias("_first")
    )
    earlier = (
        Window.partitionBy("_uri").orderBy("_block").rowsBetween(Window.unboundedPreceding, -1)
    )
    # The file's path and export go on the (few) splits, not on every line: the lines then
    # take everything they need from one small broadcast join.
    splits = splits.select(
        "*",
        F.coalesce(F.sum("_n").over(earlier), F.lit(0)).alias("_before"),
        _local_path(F.col("_uri")).alias("_file"),
    ).join(_files_table(spark, files), "_file")
    numbered = text.join(F.broadcast(splits), ["_uri", "_block"]).withColumn(
        "_line", (F.col("_before") + F.col("_pos") - F.col("_first") + 1).cast("long")
    )
    return numbered.select(*RECORD_COLUMNS)


def read_json_files(spark: SparkSession, files: Sequence[InputFile]) -> DataFrame:
    """Each JSON file (a Bundle or a single resource) as one record, line 1."""
    from pyspark.sql import functions as F

    paths = [spark_path(str(f.path.resolve())) for f in files]
    text = spark.read.text(paths, wholetext=True).select(
        _local_path(F.input_file_name()).alias("_file"), "value"
    )
    return (
        text.withColumn("_line", F.lit(1).cast("long"))
        .join(F.broadcast(_files_table(spark, files)), "_file")
        .select(*RECORD_COLUMNS)
    )


def read_records(spark: SparkSession, files: Sequence[InputFile]) -> DataFrame:
    ndjson = [f for f in files if f.kind == "ndjson"]
    whole = [f for f in files if f.kind == "json"]
    parts = []
    if ndjson:
        parts.append(read_ndjson(spark, ndjson))
    if whole:
        parts.append(read_json_files(spark, whole))
    if not parts:
        schema = "_file string, _export string, _declared_type string, _line long, value string"
        return spark.createDataFrame([], schema)
    return union_all(parts)
