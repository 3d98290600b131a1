"""Characterisation of a release in the spirit of OHDSI Achilles, per site.

Every function runs Spark aggregates and brings back only their small results (bins, top-N
lists, percentiles). Sites: the published tables carry no site column, so the person ->
site map comes from the crosswalk in `restricted/` (table `person`). Only aggregates per
site reach the report; a site id is an organisation, not a person identifier. Without a
crosswalk every person counts under one site, `ALL_SITES`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from omopflow.frames import union_all
from omopflow.report.dictionary import release_tables

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame, SparkSession

ALL_SITES = "all sites"
UNKNOWN_SITE = "(no site)"
NO_MATCHING_CONCEPT = 0
NO_SOURCE_CONCEPT = "(no source concept)"
# The concept column of each event table that says what the record is, by its stem:
# `<stem>_concept_id`, `<stem>_source_concept_id`, `<stem>_source_value`.
MAIN_CONCEPT = {
    "condition_occurrence": "condition",
    "drug_exposure": "drug",
    "procedure_occurrence": "procedure",
    "measurement": "measurement",
    "observation": "observation",
    "device_exposure": "device",
    "visit_occurrence": "visit",
    "specimen": "specimen",
    "death": "cause",
}
# Bins of observation period length in years: [low, high) with its label.
PERIOD_BINS = ((0, 1, "<1"), (1, 2, "1-2"), (2, 5, "2-5"), (5, 10, "5-10"), (10, 20, "10-20"))
PERIOD_OPEN_BIN = (20, "20+")
DAYS_PER_YEAR = 365.25


@dataclass
class Release:
    """A release's tables, the person -> site map and concept names, all as DataFrames."""

    tables: dict[str, DataFrame]
    person_site: DataFrame  # person_id, site
    concept: DataFrame | None  # concept_id, concept_name, vocabulary_id
    sites: list[str] = field(default_factory=list)

    def has(self, table: str) -> bool:
        return table in self.tables


def open_release(
    spark: SparkSession,
    release_dir: Path,
    crosswalk: Path | None = None,
    concept: DataFrame | None = None,
) -> Release:
    from pyspark.sql import functions as F

    tables = {
        t: spark.read.parquet(str(Path(release_dir) / t)) for t in release_tables(release_dir)
    }
    persons = tables.get("person")
    if persons is None:
        persons = spark.createDataFrame([], "person_id long")
    if crosswalk is not None and Path(crosswalk).is_dir():
        sites = (
            spark.read.parquet(str(crosswalk))
            .where(F.col("omop_table") == "person")
            .select(F.col("omop_id").alias("person_id"), "site")
        )
        person_site = persons.select("person_id").join(sites, "person_id", "left")
        person_site = person_site.fillna({"site": UNKNOWN_SITE})
    else:
        person_site = persons.select("person_id", F.lit(ALL_SITES).alias("site"))
    person_site = person_site.dropDuplicates(["person_id"]).cache()
    if concept is None and "concept" in tables:
        concept = tables["concept"]
    if concept is not None:
        concept = concept.select("concept_id", "concept_name", "vocabulary_id")
    site_rows = person_site.select("site").distinct().orderBy("site").collect()
    return Release(tables, person_site, concept, [r["site"] for r in site_rows])


def close_release(release: Release) -> None:
    release.person_site.unpersist()


def concept_names(release: Release, concept_ids: list[int]) -> dict[int, str]:
    """Names of a handful of concepts (a top-N list); unknown ids read `concept <id>`."""
    from pyspark.sql import functions as F

    names = {i: f"concept {i}" for i in concept_ids}
    if release.concept is None or not concept_ids:
        return names
    found = release.concept.where(F.col("concept_id").isin(concept_ids)).collect()
    names.update({int(r["concept_id"]): str(r["concept_name"]) for r in found})
    return names


# --- persons ---------------------------------------------------------------------------


def persons_by_site(release: Release) -> dict[str, int]:
    rows = release.person_site.groupBy("site").count().collect()
    return {r["site"]: int(r["count"]) for r in rows}


@dataclass
class BirthGender:
    """Persons per decade of birth (rows) and gender concept (series), for one site."""

    decades: list[str]
    genders: dict[str, list[int]]


def birth_decade_by_gender(release: Release) -> dict[str, BirthGender]:
    """Per site (and all sites): persons by decade of birth and gender.

    Decades rather than single years: the same picture with far fewer small cells.
    """
    from pyspark.sql import functions as F

    if not release.has("person"):
        return {}
    person = release.tables["person"].join(release.person_site, "person_id")
    decade = (F.floor(F.col("year_of_birth") / 10) * 10).cast("int")
    counted = person.groupBy("site", decade.alias("decade"), "gender_concept_id").count().collect()
    genders = sorted({int(r["gender_concept_id"] or 0) for r in counted})
    names = concept_names(release, genders)
    decades = sorted({r["decade"] for r in counted if r["decade"] is not None})
    result = {}
    for site in [ALL_SITES, *[s for s in release.sites if s != ALL_SITES]]:
        rows = [r for r in counted if site == ALL_SITES or r["site"] == site]
        series = {}
        for gender in genders:
            series[names[gender]] = [
                sum(
                    int(r["count"])
                    for r in rows
                    if r["decade"] == d and int(r["gender_concept_id"] or 0) == gender
                )
                for d in decades
            ]
        result[site] = BirthGender([f"{d}s" for d in decades], series)
    return result


# --- records per person ----------------------------------------------------------------


@dataclass(frozen=True)
class PerPerson:
    table: str
    records: int
    persons: int
    percentiles: tuple[float, float, float, float, float]  # 10, 25, 50, 75, 90
    persons_by_site: dict[str, int]


def records_per_person(release: Release) -> list[PerPerson]:
    """For each table with a person_id: records, persons with records, and the spread.

    One query for all tables (one per table and site list took a second or two each on a
    five-patient release, in planning and scheduling rather than counting): a rollup gives
    each table's summary and its persons per site from one pass."""
    from pyspark.sql import functions as F

    frames = [
        df.where(F.col("person_id").isNotNull()).select(F.lit(table).alias("table"), "person_id")
        for table, df in sorted(release.tables.items())
        if "person_id" in df.columns and table != "person"
    ]
    if not frames:
        return []
    per_person = union_all(frames).groupBy("table", "person_id").count()
    rows = (
        per_person.join(release.person_site, "person_id", "left")
        .rollup("table", "site")
        .agg(
            F.grouping("site").alias("all_sites"),
            F.sum("count").alias("records"),
            F.count(F.lit(1)).alias("persons"),
            F.percentile_approx("count", [0.1, 0.25, 0.5, 0.75, 0.9]).alias("p"),
        )
        .where(F.col("table").isNotNull())  # not the rollup's grand total
        .collect()
    )
    persons_by_site: dict[str, dict[str, int]] = {}
    for r in rows:
        if not r["all_sites"]:
            persons_by_site.setdefault(r["table"], {})[r["site"]] = int(r["persons"])
    return [
        PerPerson(
            table=r["table"],
            records=int(r["records"]),
            persons=int(r["persons"]),
            percentiles=tuple(float(v) for v in r["p"]),  # type: ignore[arg-type]
            persons_by_site=persons_by_site[r["table"]],
        )
        for r in sorted(rows, key=lambda r: r["table"])
        if r["all_sites"]
    ]


# --- observation periods ---------------------------------------------------------------


def period_bin(years: Column) -> Column:
    from pyspark.sql import functions as F

    label = F.lit(PERIOD_OPEN_BIN[1])
    for low, high, name in reversed(PERIOD_BINS):
        label = F.when((years >= low) & (years < high), F.lit(name)).otherwise(label)
    return label


def period_bin_labels() -> list[str]:
    return [name for _, _, name in PERIOD_BINS] + [PERIOD_OPEN_BIN[1]]


def observation_period_lengths(release: Release) -> dict[str, dict[str, int]]:
    """Per site: number of observation periods per length bin (years)."""
    from pyspark.sql import functions as F

    if not release.has("observation_period"):
        return {}
    periods = release.tables["observation_period"].join(release.person_site, "person_id", "left")
    years = F.datediff("observation_period_end_date", "observation_period_start_date") / (
        DAYS_PER_YEAR
    )
    rows = periods.groupBy("site", period_bin(years).alias("bin")).count().collect()
    result: dict[str, dict[str, int]] = {}
    for site in [ALL_SITES, *[s for s in release.sites if s != ALL_SITES]]:
        result[site] = {
            label: sum(
                int(r["count"])
                for r in rows
                if r["bin"] == label and (site == ALL_SITES or r["site"] == site)
            )
            for label in period_bin_labels()
        }
    return result


# --- top concepts ----------------------------------------------------------------------


@dataclass(frozen=True)
class ConceptCount:
    concept_id: int
    name: str
    records: int
    persons: int
    records_by_site: dict[str, int]


def top_concepts(release: Release, table: str, top: int) -> list[ConceptCount]:
    """The `top` most frequent standard concepts of a table (concept 0 left out)."""
    from pyspark.sql import functions as F

    if not release.has(table):
        return []
    column = f"{MAIN_CONCEPT[table]}_concept_id"
    events = release.tables[table].where(F.col(column) != NO_MATCHING_CONCEPT)
    ranked = (
        events.groupBy(column)
        .agg(F.count(F.lit(1)).alias("records"), F.count_distinct("person_id").alias("persons"))
        .orderBy(F.col("records").desc(), column)
        .limit(top)
        .collect()
    )
    ids = [int(r[column]) for r in ranked]
    if not ids:
        return []
    by_site = (
        events.where(F.col(column).isin(ids))
        .join(release.person_site, "person_id", "left")
        .groupBy(column, "site")
        .count()
        .collect()
    )
    names = concept_names(release, ids)
    return [
        ConceptCount(
            concept_id=int(r[column]),
            name=names[int(r[column])],
            records=int(r["records"]),
            persons=int(r["persons"]),
            records_by_site={
                s["site"]: int(s["count"]) for s in by_site if int(s[column]) == int(r[column])
            },
        )
        for r in ranked
    ]


# --- mapping coverage ------------------------------------------------------------------


@dataclass(frozen=True)
class Coverage:
    table: str
    vocabulary_id: str
    records: int
    mapped: int


def coverage_by_vocabulary(release: Release) -> list[Coverage]:
    """Per event table and source vocabulary: records, and those with a standard concept
    (one query for all tables)."""
    from pyspark.sql import functions as F

    frames = []
    for table, stem in MAIN_CONCEPT.items():
        df = release.tables.get(table)
        if df is None or f"{stem}_source_concept_id" not in df.columns:
            continue
        frames.append(
            _with_source_vocabulary(release, df, stem).select(
                F.lit(table).alias("table"),
                "source_vocabulary",
                (F.col(f"{stem}_concept_id") != NO_MATCHING_CONCEPT).cast("long").alias("mapped"),
            )
        )
    if not frames:
        return []
    rows = (
        union_all(frames)
        .groupBy("table", "source_vocabulary")
        .agg(F.count(F.lit(1)).alias("records"), F.sum("mapped").alias("mapped"))
        .collect()
    )
    order = list(MAIN_CONCEPT)
    return [
        Coverage(r["table"], r["source_vocabulary"], int(r["records"]), int(r["mapped"] or 0))
        for r in sorted(rows, key=lambda r: (order.index(r["table"]), r["source_vocabulary"]))
    ]


def _with_source_vocabulary(release: Release, df: DataFrame, stem: str) -> DataFrame:
    from pyspark.sql import functions as F

    source = f"{stem}_source_concept_id"
    if release.concept is None:
        return df.withColumn("source_vocabulary", F.lit(NO_SOURCE_CONCEPT))
    vocabularies = release.concept.select(
        F.col("concept_id").alias(source), F.col("vocabulary_id").alias("_vocabulary")
    )
    return df.join(F.broadcast(vocabularies), source, "left").withColumn(
        "source_vocabulary",
        F.when(F.col(source) == NO_MATCHING_CONCEPT, F.lit(NO_SOURCE_CONCEPT)).otherwise(
            F.coalesce("_vocabulary", F.lit(NO_SOURCE_CONCEPT))
        ),
    )


@dataclass(frozen=True)
class UnmappedCode:
    table: str
    vocabulary_id: str
    source_value: str
    records: int


def top_unmapped(release: Release, top: int) -> list[UnmappedCode]:
    """Source codes that reached no standard concept, most frequent first, over all tables."""
    from pyspark.sql import functions as F

    frames = []
    for table, stem in MAIN_CONCEPT.items():
        df = release.tables.get(table)
        if df is None or f"{stem}_source_value" not in df.columns:
            continue
        unmapped = df.where(
            (F.col(f"{stem}_concept_id") == NO_MATCHING_CONCEPT)
            & F.col(f"{stem}_source_value").isNotNull()
        )
        if f"{stem}_source_concept_id" in df.columns:
            unmapped = _with_source_vocabulary(release, unmapped, stem)
        else:
            unmapped = unmapped.withColumn("source_vocabulary", F.lit(NO_SOURCE_CONCEPT))
        frames.append(
            unmapped.select(
                F.lit(table).alias("table"),
                "source_vocabulary",
                F.col(f"{stem}_source_value").alias("source_value"),
            )
        )
    if not frames:
        return []
    rows = (
        union_all(frames)
        .groupBy("table", "source_vocabulary", "source_value")
        .count()
        .orderBy(F.col("count").desc(), "table", "source_value")
        .limit(top)
        .collect()
    )
    return [
        UnmappedCode(r["table"], r["source_vocabulary"], r["source_value"], int(r["count"]))
        for r in rows
    ]
