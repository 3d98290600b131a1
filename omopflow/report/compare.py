"""What changed since the previous release: rows added and removed per table, and the
concepts whose record counts moved most.

Rows are matched on the table's primary key (ids are stable across runs, so an id present
in both releases is the same record); tables without one (death, cdm_source) are matched
on all their columns.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from omopflow import cdm
from omopflow.frames import union_all
from omopflow.report.characterise import MAIN_CONCEPT, NO_MATCHING_CONCEPT
from omopflow.report.dictionary import VOCABULARY_TABLES, release_tables

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession


@dataclass(frozen=True)
class TableChange:
    table: str
    previous_rows: int
    current_rows: int
    added: int
    removed: int


@dataclass(frozen=True)
class ConceptMove:
    table: str
    concept_id: int
    previous_records: int
    current_records: int

    @property
    def delta(self) -> int:
        return self.current_records - self.previous_records


def table_changes(spark: SparkSession, current: Path, previous: Path) -> list[TableChange]:
    changes = []
    tables = sorted(set(release_tables(current)) | set(release_tables(previous)))
    for table in tables:
        if table in VOCABULARY_TABLES:
            continue
        now = _read(spark, current, table)
        before = _read(spark, previous, table)
        if now is None and before is None:
            continue
        changes.append(_change(table, now, before))
    return changes


def _read(spark: SparkSession, release: Path, table: str) -> DataFrame | None:
    folder = Path(release) / table
    return spark.read.parquet(str(folder)) if folder.is_dir() else None


def _change(table: str, now: DataFrame | None, before: DataFrame | None) -> TableChange:
    if now is None or before is None:
        rows_now = now.count() if now is not None else 0
        rows_before = before.count() if before is not None else 0
        return TableChange(table, rows_before, rows_now, rows_now, rows_before)
    key = _match_key(table, now, before)
    now_keys, before_keys = now.select(*key), before.select(*key)
    return TableChange(
        table,
        previous_rows=before.count(),
        current_rows=now.count(),
        added=now_keys.join(before_keys, key, "left_anti").count(),
        removed=before_keys.join(now_keys, key, "left_anti").count(),
    )


def _match_key(table: str, now: DataFrame, before: DataFrame) -> list[str]:
    try:
        keys = [f.name for f in cdm.table_fields(table) if f.primary_key]
    except KeyError:  # not a CDM table
        keys = []
    shared = [c for c in now.columns if c in before.columns]
    return keys if keys and all(k in shared for k in keys) else shared


def concept_moves(
    spark: SparkSession, current: Path, previous: Path, top: int
) -> list[ConceptMove]:
    """The `top` (table, concept) pairs whose record counts changed most, either way."""
    from pyspark.sql import functions as F

    frames = []
    for table, stem in MAIN_CONCEPT.items():
        now = _read(spark, current, table)
        before = _read(spark, previous, table)
        if now is None and before is None:
            continue
        column = f"{stem}_concept_id"
        counts = [
            _concept_counts(df, column, name)
            for df, name in ((now, "current_records"), (before, "previous_records"))
            if df is not None
        ]
        joined = counts[0]
        for other in counts[1:]:
            joined = joined.join(other, "concept_id", "full")
        frames.append(joined.withColumn("table", F.lit(table)))
    if not frames:
        return []
    union = union_all(frames, allow_missing_columns=True)
    union = union.fillna(0, ["current_records", "previous_records"])
    delta = F.abs(F.col("current_records") - F.col("previous_records"))
    rows = union.where(delta > 0).orderBy(delta.desc(), "table", "concept_id").limit(top).collect()
    return [
        ConceptMove(
            r["table"], int(r["concept_id"]), int(r["previous_records"]), int(r["current_records"])
        )
        for r in rows
    ]


def _concept_counts(df: DataFrame, column: str, name: str) -> DataFrame:
    from pyspark.sql import functions as F

    return (
        df.where(F.col(column) != NO_MATCHING_CONCEPT)
        .groupBy(F.col(column).alias("concept_id"))
        .agg(F.count(F.lit(1)).alias(name))
    )
