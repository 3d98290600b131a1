"""Stable OMOP ids from natural keys, through the crosswalk kept in `restricted/`.

A natural key is (OMOP table, site, FHIR resource type, source key); the source key is the
FHIR id, with a suffix when one resource yields several rows of a table. Known keys keep the
id the crosswalk gave them, forever; new keys get the next ids of their table, numbered in
key order, so the same input on an empty warehouse always gives the same ids. Numbers are
sequential per table: person ids stay far below 2^31 and all ids below 2^53, and no two
keys (of any site) share an id, which hashing could not promise at 32 bits.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from omopflow.frames import union_all

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame, SparkSession

CROSSWALK_SCHEMA = (
    "omop_table string, site string, resource_type string, source_key string, omop_id long"
)
KEY = ["site", "resource_type", "source_key"]


def sequence(df: DataFrame, order: list[str], start: Column | int, name: str) -> DataFrame:
    """Number rows 1.. in `order` (plus `start`), with joins instead of a one-partition window.

    After a global sort, partition i holds the i-th range of keys; each row's number is the
    count of rows in earlier partitions plus its position in its own.
    """
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    # Materialised once: the counts and the numbering must see the same partitions, and
    # adaptive execution may coalesce a recomputed sort differently.
    sorted_df = (
        df.orderBy(*order)
        .select(
            "*",
            F.spark_partition_id().alias("_part"),
            F.monotonically_increasing_id().alias("_pos"),
        )
        .localCheckpoint()
    )
    parts = sorted_df.groupBy("_part").agg(F.count("*").alias("_n"), F.min("_pos").alias("_first"))
    earlier = Window.orderBy("_part").rowsBetween(Window.unboundedPreceding, -1)
    parts = parts.withColumn("_before", F.coalesce(F.sum("_n").over(earlier), F.lit(0)))
    start_col = F.lit(start) if isinstance(start, int) else start
    numbered = sorted_df.join(F.broadcast(parts), "_part").withColumn(
        name, (start_col + F.col("_before") + F.col("_pos") - F.col("_first") + 1).cast("long")
    )
    return numbered.drop("_part", "_pos", "_n", "_first", "_before")


@dataclass
class IdAllocator:
    """Hands out ids per OMOP table; `new_entries()` is what this run adds to the crosswalk."""

    spark: SparkSession
    crosswalk: DataFrame
    added: list[DataFrame] = field(default_factory=list)

    @classmethod
    def open(cls, spark: SparkSession, path: Path | None) -> IdAllocator:
        if path is not None and path.is_dir():
            crosswalk = spark.read.parquet(str(path))
        else:
            crosswalk = spark.createDataFrame([], CROSSWALK_SCHEMA)
        return cls(spark, crosswalk)

    def assign(self, keys: DataFrame, table: str, id_column: str) -> DataFrame:
        """`keys` has columns site, resource_type, source_key (plus any others); adds the id.

        Rows sharing a key share the id. New keys are numbered after the table's current
        maximum, in key order.
        """
        from pyspark.sql import functions as F

        known = self._table(table)
        distinct_keys = keys.select(*KEY).distinct()
        fresh = distinct_keys.join(known.select(*KEY), KEY, "left_anti")
        top = known.agg(F.coalesce(F.max("omop_id"), F.lit(0)).alias("_top"))
        fresh = sequence(fresh.crossJoin(F.broadcast(top)), KEY, F.col("_top"), "omop_id").drop(
            "_top"
        )
        fresh = fresh.select(F.lit(table).alias("omop_table"), *KEY, "omop_id").localCheckpoint()
        self.added.append(fresh)
        every = known.select(*KEY, "omop_id").unionByName(fresh.select(*KEY, "omop_id"))
        return keys.join(every.withColumnRenamed("omop_id", id_column), KEY, "left")

    def lookup(
        self,
        df: DataFrame,
        table: str,
        site: Column,
        resource_type: str,
        source_key: Column,
        id_column: str,
    ) -> DataFrame:
        """Add the id of an already assigned key (a person or visit reference); null if none."""
        from pyspark.sql import functions as F

        ids = (
            self._assigned(table)
            .where(F.col("resource_type") == resource_type)
            .select(
                F.col("site").alias("_x_site"),
                F.col("source_key").alias("_x_key"),
                F.col("omop_id").alias(id_column),
            )
        )
        joined = df.join(ids, (site == F.col("_x_site")) & (source_key == F.col("_x_key")), "left")
        return joined.drop("_x_site", "_x_key")

    def _table(self, table: str) -> DataFrame:
        from pyspark.sql import functions as F

        return self.crosswalk.where(F.col("omop_table") == table)

    def _assigned(self, table: str) -> DataFrame:
        from pyspark.sql import functions as F

        fresh = [added.where(F.col("omop_table") == table) for added in self.added]
        return union_all([self._table(table), *fresh])

    def write(self, path: Path) -> None:
        """The whole crosswalk after this run (old entries plus new), sorted for stable files."""
        result = union_all([self.crosswalk, *self.added])
        result.orderBy("omop_table", *KEY).coalesce(1).write.mode("overwrite").parquet(str(path))
