"""The source-to-standard map and the joins every clinical transform uses.

The map (built once per release, cached as Parquet beside it) has one row per source
concept and standard target:

- a source concept is found by (vocabulary_id, normalised concept_code);
- its targets are the valid (`invalid_reason` null) `Maps to` relationships to valid
  standard concepts (`standard_concept = 'S'`); relationships to concepts absent from
  CONCEPT are ignored;
- a standard concept without such a row maps to itself (standard CVX in the development
  subset has no self `Maps to` row);
- a source concept with no target keeps one row with target 0 (IG f2o-031..033:
  unmapped is not dropped, the source concept id is kept);
- `Maps to value` targets become `value_concept_id` (for observations that need a value).

`map_codings` policy, for a FHIR CodeableConcept (a list of Codings):

1. Each coding's system URI is resolved through `code_systems.tsv`. A system listed for
   several vocabularies (HIRA EDI drugs: EDI, then KDC) takes the vocabulary where the code
   reaches a standard concept, else where it is known, else the lower `priority`.
2. Codes are normalised per vocabulary before the lookup (`code_normalisation`):
   `exact` trims spaces; `upper` also upper-cases; `icd` also drops dots, so KCD `E11.9`
   and hospital-style `E119` find the same concept (see the Korean ETL conventions).
   UCUM stays `exact` because unit codes are case-sensitive.
3. Among several codings the first (in FHIR order) that reaches a standard concept wins;
   else the first with a known source concept; else the first with a code. The chosen
   coding alone fills every output column, so source and target always agree.
4. A code mapping to several standard concepts gives one output row per target (sorted by
   concept id), as OMOP expects one record per standard concept.
5. `{prefix}_source_value` is the chosen coding's code alone (the CDM's source_value holds
   the code; the system is in `{prefix}_system` and the vocabulary in
   `{prefix}_vocabulary_id`). Unknown systems and codes give concept ids 0.

Implementation: the distinct (system, code) pairs of the input are resolved with joins
against the (small) map, then folded into one map-typed lookup row that is broadcast to
every input row; higher-order functions pick the coding per row. This keeps the
per-row preference rule without a row id, a self-join or a Python UDF. The lookup holds
only the codes present in the input, so it stays small even on a full Athena release.
"""

from __future__ import annotations

import csv
import hashlib
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from vocabularies.athena import VocabularyError, VocabularyRelease, build_once
from vocabularies.concepts import MAPS_TO, MAPS_TO_VALUE, NO_MATCHING_CONCEPT, STANDARD

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame, SparkSession

CODE_SYSTEMS_FILE = Path(__file__).resolve().parent / "code_systems.tsv"
NORMALISATIONS = ("exact", "upper", "icd")
MAP_COMPLETE_MARKER = "_MAP_COMPLETE"
LOOKUP_COL = "__vocab_lookup"
KEY_SEPARATOR = "\u0001"  # cannot occur in a URI or a code


@dataclass(frozen=True)
class VocabularyMaps:
    """What the transforms join against, built once per run from a release."""

    source_to_standard: DataFrame
    code_systems: DataFrame
    concept: DataFrame
    release: VocabularyRelease


def read_code_systems(path: Path = CODE_SYSTEMS_FILE) -> list[dict[str, str]]:
    """The URI table as rows, checked: known normalisations, one rule per vocabulary."""
    with path.open(encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    rules: dict[str, str] = {}
    for row in rows:
        rule = row["code_normalisation"]
        if rule not in NORMALISATIONS:
            raise VocabularyError(f"{path.name}: unknown code_normalisation {rule!r}")
        if rules.setdefault(row["vocabulary_id"], rule) != rule:
            raise VocabularyError(f"{path.name}: {row['vocabulary_id']} has two normalisations")
    return rows


def code_systems(spark: SparkSession, path: Path = CODE_SYSTEMS_FILE) -> DataFrame:
    """DataFrame[system, vocabulary_id, priority, code_normalisation]."""
    from pyspark.sql import types as T

    schema = T.StructType(
        [
            T.StructField("system", T.StringType(), False),
            T.StructField("vocabulary_id", T.StringType(), False),
            T.StructField("priority", T.IntegerType(), False),
            T.StructField("code_normalisation", T.StringType(), False),
        ]
    )
    rows = [
        (r["system"], r["vocabulary_id"], int(r["priority"]), r["code_normalisation"])
        for r in read_code_systems(path)
    ]
    return spark.createDataFrame(rows, schema)


def normalised_code(code: Column, rule: Column) -> Column:
    """The lookup key of a code under its vocabulary's normalisation rule."""
    from pyspark.sql import functions as F

    trimmed = F.trim(code)
    return (
        F.when(rule == "icd", F.regexp_replace(F.upper(trimmed), r"\.", ""))
        .when(rule == "upper", F.upper(trimmed))
        .otherwise(trimmed)
    )


def vocabulary_rules(systems: DataFrame) -> DataFrame:
    return systems.select("vocabulary_id", "code_normalisation").distinct()


def source_concepts(concept: DataFrame, systems: DataFrame) -> DataFrame:
    """One source concept per (vocabulary, normalised code); valid and standard ones first."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    rule = F.coalesce(F.col("code_normalisation"), F.lit("exact"))
    keyed = concept.join(F.broadcast(vocabulary_rules(systems)), "vocabulary_id", "left").select(
        F.col("vocabulary_id").alias("source_vocabulary_id"),
        F.col("concept_code").alias("source_code"),
        normalised_code(F.col("concept_code"), rule).alias("source_code_key"),
        F.col("concept_id").alias("source_concept_id"),
        F.col("domain_id").alias("source_domain_id"),
        F.col("standard_concept").alias("source_standard_concept"),
        F.col("invalid_reason").alias("source_invalid_reason"),
    )
    window = Window.partitionBy("source_vocabulary_id", "source_code_key").orderBy(
        F.col("source_invalid_reason").isNotNull(),
        F.when(F.col("source_standard_concept") == STANDARD, 0).otherwise(1),
        "source_concept_id",
    )
    return (
        keyed.where(F.col("source_code_key").isNotNull())
        .withColumn("_pick", F.row_number().over(window))
        .where("_pick = 1")
        .drop("_pick")
    )


def valid_relationships(relationship: DataFrame, concept: DataFrame, kind: str) -> DataFrame:
    """Valid `kind` rows whose target is a valid standard concept present in CONCEPT."""
    from pyspark.sql import functions as F

    standard = concept.where(
        (F.col("standard_concept") == STANDARD) & F.col("invalid_reason").isNull()
    ).select(
        F.col("concept_id").alias("concept_id_2"),
        F.col("domain_id").alias("target_domain_id"),
        F.col("vocabulary_id").alias("target_vocabulary_id"),
    )
    rows = relationship.where(
        (F.col("relationship_id") == kind) & F.col("invalid_reason").isNull()
    ).select("concept_id_1", "concept_id_2")
    return rows.join(standard, "concept_id_2").distinct()


def build_source_to_standard(
    concept: DataFrame, relationship: DataFrame, systems: DataFrame
) -> DataFrame:
    """The map table described in the module docstring; one row per source and target."""
    from pyspark.sql import functions as F

    sources = source_concepts(concept, systems)
    maps_to = valid_relationships(relationship, concept, MAPS_TO).select(
        F.col("concept_id_1").alias("source_concept_id"),
        F.col("concept_id_2").alias("target_concept_id"),
        "target_domain_id",
        "target_vocabulary_id",
    )
    # Standard concepts map to themselves when the release has no self 'Maps to' row.
    self_maps = (
        sources.where(
            (F.col("source_standard_concept") == STANDARD) & F.col("source_invalid_reason").isNull()
        )
        .join(maps_to.select("source_concept_id").distinct(), "source_concept_id", "left_anti")
        .select(
            "source_concept_id",
            F.col("source_concept_id").alias("target_concept_id"),
            F.col("source_domain_id").alias("target_domain_id"),
            F.col("source_vocabulary_id").alias("target_vocabulary_id"),
        )
    )
    values = valid_relationships(relationship, concept, MAPS_TO_VALUE).select(
        F.col("concept_id_1").alias("source_concept_id"),
        F.col("concept_id_2").alias("value_concept_id"),
    )
    targets = maps_to.unionByName(self_maps)
    return (
        sources.join(targets, "source_concept_id", "left")
        .join(values, "source_concept_id", "left")
        .select(
            "source_vocabulary_id",
            "source_code",
            "source_code_key",
            "source_concept_id",
            "source_domain_id",
            F.coalesce("target_concept_id", F.lit(NO_MATCHING_CONCEPT)).alias("target_concept_id"),
            "target_domain_id",
            "target_vocabulary_id",
            "value_concept_id",
        )
    )


def rules_digest(path: Path = CODE_SYSTEMS_FILE) -> str:
    rules = sorted({(r["vocabulary_id"], r["code_normalisation"]) for r in read_code_systems(path)})
    return hashlib.sha256(repr(rules).encode()).hexdigest()[:12]


def source_to_standard(
    spark: SparkSession, release: VocabularyRelease, systems: DataFrame
) -> DataFrame:
    """The map for `release`, built on first use and then read from its Parquet cache."""
    target = release.path / f"source_to_standard-{rules_digest()}"
    # Unlocked, a second builder replaced the folder while the first run read it.
    build_once(target / MAP_COMPLETE_MARKER, lambda: _write_map(release, systems, target))
    return spark.read.parquet(str(target))


def _write_map(release: VocabularyRelease, systems: DataFrame, target: Path) -> None:
    staging = target.with_name(target.name + ".tmp")
    shutil.rmtree(staging, ignore_errors=True)
    built = build_source_to_standard(
        release.table("concept"), release.table("concept_relationship"), systems
    )
    built.repartition(1).sortWithinPartitions(
        "source_vocabulary_id", "source_code_key", "target_concept_id"
    ).write.parquet(str(staging))
    (staging / MAP_COMPLETE_MARKER).touch()
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)


def build_maps(spark: SparkSession, release: VocabularyRelease) -> VocabularyMaps:
    """Build (or reuse) the map and keep the small lookup tables cached for the run."""
    systems = code_systems(spark).cache()
    concept = release.table("concept").select(
        "concept_id",
        "concept_name",
        "domain_id",
        "vocabulary_id",
        "concept_class_id",
        "standard_concept",
        "invalid_reason",
    )
    return VocabularyMaps(
        source_to_standard=source_to_standard(spark, release, systems).cache(),
        code_systems=systems,
        concept=concept.cache(),
        release=release,
    )


def pair_key(system: Column, code: Column) -> Column:
    from pyspark.sql import functions as F

    return F.concat(F.coalesce(system, F.lit("")), F.lit(KEY_SEPARATOR), code)


def resolve_pairs(pairs: DataFrame, vocab: VocabularyMaps) -> DataFrame:
    """Per distinct (system, code): the chosen vocabulary, source concept and target list."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    mapped = vocab.source_to_standard
    resolved = (
        pairs.join(F.broadcast(vocab.code_systems), "system", "left")
        .withColumn("_key", normalised_code(F.col("code"), F.col("code_normalisation")))
        .join(
            F.broadcast(mapped),
            (F.col("vocabulary_id") == mapped["source_vocabulary_id"])
            & (F.col("_key") == mapped["source_code_key"]),
            "left",
        )
    )
    target = F.struct(
        "target_concept_id", "target_domain_id", "target_vocabulary_id", "value_concept_id"
    )
    per_vocabulary = resolved.groupBy("system", "code", "vocabulary_id", "priority").agg(
        F.max("source_concept_id").alias("source_concept_id"),
        F.max("source_domain_id").alias("source_domain_id"),
        F.array_sort(F.collect_set(F.when(F.col("target_concept_id").isNotNull(), target))).alias(
            "targets"
        ),
        F.max(F.col("target_concept_id") != NO_MATCHING_CONCEPT).alias("reaches_standard"),
    )
    best = Window.partitionBy("system", "code").orderBy(
        F.coalesce("reaches_standard", F.lit(False)).desc(),
        F.col("source_concept_id").isNull(),
        F.col("priority").asc_nulls_last(),
        F.col("vocabulary_id").asc_nulls_last(),
    )
    return (
        per_vocabulary.withColumn("_pick", F.row_number().over(best))
        .where("_pick = 1")
        .select(
            pair_key(F.col("system"), F.col("code")).alias("key"),
            F.struct(
                "vocabulary_id",
                F.coalesce("source_concept_id", F.lit(NO_MATCHING_CONCEPT)).alias(
                    "source_concept_id"
                ),
                "source_domain_id",
                "targets",
                F.coalesce("reaches_standard", F.lit(False)).alias("reaches_standard"),
            ).alias("hit"),
        )
    )


def lookup_row(df: DataFrame, codings_col: str, vocab: VocabularyMaps) -> DataFrame:
    """One row, one map column: (system, code) key -> resolution, for the input's codes."""
    from pyspark.sql import functions as F

    pairs = (
        df.select(F.explode(F.col(codings_col)).alias("c"))
        .select(F.col("c.system").alias("system"), F.col("c.code").alias("code"))
        .where(F.col("code").isNotNull())
        .distinct()
    )
    entries = resolve_pairs(pairs, vocab)
    return entries.agg(F.map_from_entries(F.collect_list(F.struct("key", "hit"))).alias(LOOKUP_COL))


def coding_fields(df: DataFrame, codings_col: str) -> set[str]:
    from pyspark.sql import types as T

    data_type = df.select(codings_col).schema.fields[0].dataType
    if not isinstance(data_type, T.ArrayType) or not isinstance(
        data_type.elementType, T.StructType
    ):
        raise TypeError(f"{codings_col} must be array<struct<system, code, ...>>, not {data_type}")
    return set(data_type.elementType.fieldNames())


def map_codings(
    df: DataFrame,
    codings_col: str,
    vocab: VocabularyMaps,
    prefix: str,
    lowest_target: bool = False,
) -> DataFrame:
    """Add `{prefix}_*` columns from the codings list, one row per standard target.

    Added: source_value, source_concept_id, concept_id, domain_id, vocabulary_id,
    value_concept_id, system, display, and `targets` (how many standard concepts the chosen
    coding maps to). Rows without a usable coding stay, with ids 0. `lowest_target`: one row
    per input row, with the target of the lowest concept id (for a value, a route or a
    unit, which must not multiply the rows of the record they describe).
    """
    from pyspark.sql import functions as F

    fields = coding_fields(df, codings_col)
    missing = {"system", "code"} - fields
    if missing:
        raise TypeError(f"{codings_col} codings lack {sorted(missing)}")
    lookup = F.col(LOOKUP_COL)

    def with_hit(c: Column) -> Column:
        display = c["display"] if "display" in fields else F.lit(None).cast("string")
        key = F.when(c["code"].isNotNull(), pair_key(c["system"], c["code"]))
        return F.struct(
            c["system"].alias("system"),
            c["code"].alias("code"),
            display.alias("display"),
            F.try_element_at(lookup, key).alias("hit"),
        )

    hits = F.transform(F.col(codings_col), with_hit)
    chosen = F.coalesce(
        F.try_element_at(F.filter(hits, lambda h: h["hit"]["reaches_standard"]), F.lit(1)),
        F.try_element_at(F.filter(hits, lambda h: h["hit"]["source_concept_id"] != 0), F.lit(1)),
        F.try_element_at(F.filter(hits, lambda h: h["code"].isNotNull()), F.lit(1)),
    )
    chosen_col, target_col = f"__{prefix}_chosen", f"__{prefix}_target"
    no_target = F.array(
        F.struct(
            F.lit(NO_MATCHING_CONCEPT).cast("long").alias("target_concept_id"),
            F.lit(None).cast("string").alias("target_domain_id"),
            F.lit(None).cast("string").alias("target_vocabulary_id"),
            F.lit(None).cast("long").alias("value_concept_id"),
        )
    )
    targets = F.col(chosen_col)["hit"]["targets"]
    usable = F.when(F.size(targets) > 0, targets).otherwise(no_target)
    # The targets are sorted by concept id (`resolve_pairs`): the first is the lowest.
    pick = usable[0] if lowest_target else F.explode(usable)
    hit = F.col(chosen_col)["hit"]
    target = F.col(target_col)
    return (
        df.crossJoin(F.broadcast(lookup_row(df, codings_col, vocab)))
        .withColumn(chosen_col, chosen)
        .withColumn(target_col, pick)
        .withColumn(f"{prefix}_targets", F.size(usable))
        .withColumn(f"{prefix}_source_value", F.col(chosen_col)["code"])
        .withColumn(
            f"{prefix}_source_concept_id",
            F.coalesce(hit["source_concept_id"], F.lit(NO_MATCHING_CONCEPT)).cast("long"),
        )
        .withColumn(f"{prefix}_concept_id", target["target_concept_id"].cast("long"))
        .withColumn(
            f"{prefix}_domain_id",
            F.coalesce(target["target_domain_id"], hit["source_domain_id"]),
        )
        .withColumn(f"{prefix}_vocabulary_id", hit["vocabulary_id"])
        .withColumn(f"{prefix}_value_concept_id", target["value_concept_id"].cast("long"))
        .withColumn(f"{prefix}_system", F.col(chosen_col)["system"])
        .withColumn(f"{prefix}_display", F.col(chosen_col)["display"])
        .drop(LOOKUP_COL, chosen_col, target_col)
    )


def map_code(
    df: DataFrame,
    system_col: str,
    code_col: str,
    vocab: VocabularyMaps,
    prefix: str,
    display_col: str | None = None,
    lowest_target: bool = False,
) -> DataFrame:
    """`map_codings` for one coding held in two (or three) plain columns, e.g. units."""
    from pyspark.sql import functions as F

    holder = f"__{prefix}_codings"
    display = F.col(display_col) if display_col else F.lit(None)
    coding = F.struct(
        F.col(system_col).cast("string").alias("system"),
        F.col(code_col).cast("string").alias("code"),
        display.cast("string").alias("display"),
    )
    mapped = map_codings(
        df.withColumn(holder, F.array(coding)), holder, vocab, prefix, lowest_target
    )
    return mapped.drop(holder)
