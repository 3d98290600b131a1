"""Load an OMOP vocabulary release in Athena's download layout into a Parquet cache.

Athena folders hold tab-separated files with a header row, no quoting (concept names
contain quote characters) and YYYYMMDD dates: `CONCEPT.csv`, `CONCEPT_RELATIONSHIP.csv`,
... Any of them may be gzipped (`.csv.gz`). Only CONCEPT is required; a missing optional
file gives an empty table, as partial releases and subsets often lack some.

Several folders can be merged (e.g. the Korean partial vocabulary on top of an Athena
subset): rows are de-duplicated on each table's key and the earlier folder wins, so later
folders only add what is missing. The supplement shipped in `vocabularies/supplement/`
is always merged last, so it never overrides a real release.

Loading costs tens of seconds on a full release, so the result is cached as Parquet under
`<cache_dir>/<fingerprint>/`, written to a temporary folder and renamed when complete; a
later run with unchanged files reuses it, a changed file gives a new fingerprint and a
reload. Relationships or ancestors pointing to concepts absent from CONCEPT are kept as
they are: the map joins drop them where they matter.
"""

from __future__ import annotations

import fcntl
import hashlib
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from omopflow import cdm
from omopflow.errors import UsageError
from omopflow.frames import union_all

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame, SparkSession

# Bumped whenever the cached layout or the parsing rules change, so old caches are not reused.
LOADER_VERSION = "1"

SUPPLEMENT_DIR = Path(__file__).resolve().parent / "supplement"
SAMPLE_DIR = Path(__file__).resolve().parent / "sample"

# Each vocabulary table and the columns that identify one of its rows.
TABLE_KEYS: dict[str, tuple[str, ...]] = {
    "concept": ("concept_id",),
    "concept_relationship": ("concept_id_1", "concept_id_2", "relationship_id"),
    "concept_ancestor": ("ancestor_concept_id", "descendant_concept_id"),
    "vocabulary": ("vocabulary_id",),
    "domain": ("domain_id",),
    "concept_class": ("concept_class_id",),
    "relationship": ("relationship_id",),
    "concept_synonym": ("concept_id", "concept_synonym_name", "language_concept_id"),
    "drug_strength": ("drug_concept_id", "ingredient_concept_id"),
}
# Published with every release, beside the clinical tables (OMOP CDM vocabulary tables).
VOCABULARY_TABLES = tuple(TABLE_KEYS)
COMPLETE_MARKER = "_RELEASE_COMPLETE"
NONE_VOCABULARY = "None"  # Athena's row whose version names the whole release


class VocabularyError(UsageError):
    """A vocabulary folder that cannot be used (missing folder or CONCEPT file)."""


@dataclass(frozen=True)
class VocabularyRelease:
    """A loaded release: Parquet tables under `path`, named by the Athena table names."""

    spark: SparkSession
    path: Path
    version: str
    fingerprint: str
    sources: tuple[Path, ...]

    def table(self, name: str) -> DataFrame:
        if name not in TABLE_KEYS:
            raise KeyError(f"{name!r} is not a vocabulary table ({', '.join(TABLE_KEYS)})")
        return self.spark.read.parquet(str(self.path / name))


def table_file(folder: Path, table: str) -> Path | None:
    """The file holding `table` in an Athena folder, plain or gzipped, any letter case."""
    wanted = {f"{table}.csv", f"{table}.csv.gz"}
    found = sorted(p for p in folder.iterdir() if p.is_file() and p.name.lower() in wanted)
    return found[0] if found else None


def check_folder(folder: Path) -> None:
    if not folder.is_dir():
        raise VocabularyError(f"vocabulary folder {folder} does not exist")
    if table_file(folder, "concept") is None:
        raise VocabularyError(
            f"vocabulary folder {folder} has no CONCEPT.csv: expected an Athena download"
        )


def fingerprint(folders: Sequence[Path]) -> str:
    """Names, sizes and modification times of every table file, plus VOCABULARY's content.

    Stat data catches any re-download or edit cheaply; hashing VOCABULARY (a few KB) also
    catches a new release copied over with preserved times, as its version strings change.
    """
    digest = hashlib.sha256(f"loader {LOADER_VERSION}\n".encode())
    for folder in folders:
        digest.update(f"folder {folder.resolve()}\n".encode())
        for table in TABLE_KEYS:
            path = table_file(folder, table)
            if path is None:
                continue
            stat = path.stat()
            digest.update(f"{path.name} {stat.st_size} {stat.st_mtime_ns}\n".encode())
            if table == "vocabulary":
                digest.update(path.read_bytes())
    return digest.hexdigest()


def parse_date(column: Column) -> Column:
    from pyspark.sql import functions as F

    # Athena writes YYYYMMDD; some hand-made subsets use ISO dates.
    return F.coalesce(F.try_to_date(column, "yyyyMMdd"), F.try_to_date(column, "yyyy-MM-dd"))


def read_table(spark: SparkSession, folder: Path, table: str) -> DataFrame:
    """One table of one folder, typed as the CDM spec says; empty when the file is absent."""
    from pyspark.sql import functions as F

    schema = cdm.schema(table)
    path = table_file(folder, table)
    if path is None:
        return spark.createDataFrame([], schema)
    # Read every column as text by header name, then cast: column order in the file does
    # not matter and a bad number becomes null instead of failing the whole load.
    raw = (
        spark.read.option("sep", "\t")
        .option("header", "true")
        .option("quote", "")
        .option("escape", "")
        .option("inferSchema", "false")
        .option("mode", "PERMISSIVE")
        .csv(str(path))
    )
    raw = raw.toDF(*[name.strip().lower() for name in raw.columns])
    columns = []
    for field in schema.fields:
        value = F.col(field.name) if field.name in raw.columns else F.lit(None)
        if field.dataType.typeName() == "date":
            value = parse_date(value)
        else:
            value = value.cast(field.dataType)
        columns.append(value.alias(field.name))
    return raw.select(*columns)


def merge_folders(spark: SparkSession, folders: Sequence[Path], table: str) -> DataFrame:
    """Union of the folders' rows; on a duplicate key the earliest folder's row is kept."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    parts = [
        read_table(spark, folder, table).withColumn("_rank", F.lit(rank))
        for rank, folder in enumerate(folders)
        if table_file(folder, table) is not None
    ]
    if not parts:  # no folder has this optional table
        return spark.createDataFrame([], cdm.schema(table))
    merged = union_all(parts)
    keys = TABLE_KEYS[table]
    others = [c for c in merged.columns if c not in keys and c != "_rank"]
    # Ties inside one folder are broken on the other columns so reruns pick the same row.
    order = [F.col("_rank")] + [F.col(c).asc_nulls_last() for c in others]
    window = Window.partitionBy(*keys).orderBy(*order)
    return (
        merged.withColumn("_pick", F.row_number().over(window))
        .where(F.col("_pick") == 1)
        .drop("_pick", "_rank")
    )


def write_cache(spark: SparkSession, folders: Sequence[Path], target: Path) -> None:
    staging = target.with_name(target.name + ".tmp")
    shutil.rmtree(staging, ignore_errors=True)
    for table in TABLE_KEYS:
        merged = merge_folders(spark, folders, table).repartition(1)
        merged.sortWithinPartitions(*TABLE_KEYS[table]).write.mode("overwrite").parquet(
            str(staging / table)
        )
    (staging / COMPLETE_MARKER).write_text("\n".join(str(f) for f in folders) + "\n")
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)


def release_version(spark: SparkSession, path: Path) -> str:
    """The 'None' vocabulary's version (Athena's release name), else a short summary."""
    from pyspark.sql import functions as F

    vocabulary = spark.read.parquet(str(path / "vocabulary"))
    rows = (
        vocabulary.where(F.col("vocabulary_id").isin(NONE_VOCABULARY, "SNOMED", "LOINC", "RxNorm"))
        .select("vocabulary_id", "vocabulary_version")
        .collect()
    )
    versions = {row["vocabulary_id"]: row["vocabulary_version"] for row in rows}
    if versions.get(NONE_VOCABULARY):
        return str(versions[NONE_VOCABULARY])
    parts = [f"{v} {versions[v]}" for v in ("SNOMED", "LOINC", "RxNorm") if versions.get(v)]
    return "no release row; " + ("; ".join(parts) if parts else "unknown versions")


def build_once(marker: Path, build: Callable[[], None]) -> None:
    """Run `build` (which writes `marker` last) unless `marker` exists. Warehouses and test
    workers may share a vocabulary cache: one process builds, the others wait under a file
    lock and then reuse what it wrote, instead of replacing it while another reads it."""
    if marker.is_file():
        return
    folder = marker.parent
    with open(folder.with_name(folder.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not marker.is_file():
            build()


def load_release(
    spark: SparkSession,
    athena_dirs: Path | Sequence[Path],
    cache_dir: Path,
    with_supplement: bool = True,
) -> VocabularyRelease:
    """Load one or several Athena folders (earlier ones win), cached once per release."""
    folders = [Path(athena_dirs)] if isinstance(athena_dirs, str | Path) else list(athena_dirs)
    if not folders:
        raise VocabularyError("no vocabulary folder given")
    for folder in folders:
        check_folder(folder)
    if with_supplement:
        folders.append(SUPPLEMENT_DIR)
    release_print = fingerprint(folders)
    target = Path(cache_dir) / f"release-{release_print[:16]}"
    target.parent.mkdir(parents=True, exist_ok=True)
    build_once(target / COMPLETE_MARKER, lambda: write_cache(spark, folders, target))
    return VocabularyRelease(
        spark=spark,
        path=target,
        version=release_version(spark, target),
        fingerprint=release_print,
        sources=tuple(folders),
    )
