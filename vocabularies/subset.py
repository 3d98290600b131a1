"""Cut a small Athena-layout vocabulary out of a full release, for the codes an input uses.

What the subset keeps:
- the source concepts of every (system, code) pair found in the input (systems resolved
  through `code_systems.tsv`, codes normalised as the map does), with their valid
  `Maps to` / `Maps to value` targets;
- CONCEPT_ANCESTOR rows whose descendant is one of those targets, and the ancestor
  concepts (this covers the RxNorm Ingredient ancestors that drug eras need);
- whole small vocabularies the transforms write constants from (type concepts, visits,
  gender, race, ethnicity, UCUM units);
- `Maps to` / `Maps to value` rows of the kept concepts, even when their target is not in
  the release (harmless, and they keep the release's shape); `Mapped from` rows only
  between kept concepts; synonyms and drug strengths
  of the kept concepts; VOCABULARY, DOMAIN, CONCEPT_CLASS and RELATIONSHIP whole.

Files are written tab-separated, unquoted, YYYYMMDD dates, like Athena; a file over 1 MB is
gzipped (deterministically, no timestamp) so a shipped sample stays small.

Rebuild the shipped sample: see `vocabularies/sample/SOURCE.txt` for the exact command
(`python -m vocabularies.subset ...` until the CLI has `omopflow vocab subset`).
"""

from __future__ import annotations

import argparse
import gzip
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from vocabularies.athena import TABLE_KEYS, load_release
from vocabularies.concepts import MAPS_TO, MAPS_TO_VALUE, NO_MATCHING_CONCEPT
from vocabularies.coverage import write_single_csv
from vocabularies.mapping import build_source_to_standard, code_systems, normalised_code

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

WHOLE_VOCABULARIES = (
    "None",
    "Type Concept",
    "Visit",
    "Gender",
    "Race",
    "Ethnicity",
    "UCUM",
    "Condition Type",
    "Drug Type",
    "Meas Type",
    "Observation Type",
    "Obs Period Type",
    "Procedure Type",
    "Visit Type",
    "Death Type",
    "Device Type",
)
FORWARD_MAPS = (MAPS_TO, MAPS_TO_VALUE)
REVERSE_MAPS = ("Mapped from", "Value mapped from")
WHOLE_TABLES = ("vocabulary", "domain", "concept_class", "relationship")
GZIP_ABOVE_BYTES = 1_000_000
FHIR_SUFFIXES = (".ndjson", ".ndjson.gz", ".json", ".json.gz")


def fhir_files(inputs: Iterable[Path]) -> Iterator[Path]:
    for root in inputs:
        candidates = [root] if root.is_file() else sorted(root.rglob("*"))
        for path in candidates:
            if path.is_file() and path.name.endswith(FHIR_SUFFIXES):
                yield path


def json_documents(path: Path) -> Iterator[Any]:
    raw = gzip.decompress(path.read_bytes()) if path.name.endswith(".gz") else path.read_bytes()
    if ".ndjson" in path.name:
        for line in raw.splitlines():
            if line.strip():
                yield orjson.loads(line)
    else:
        yield orjson.loads(raw)


def codings_in(node: Any, found: set[tuple[str | None, str]]) -> None:
    """Every object with a string `code` and a `system` key: Codings and Quantities."""
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            code, system = item.get("code"), item.get("system")
            if isinstance(code, str) and "system" in item and isinstance(system, str | None):
                found.add((system, code))
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def scan_codes(inputs: Iterable[Path]) -> set[tuple[str | None, str]]:
    """The distinct (system, code) pairs in NDJSON / Bundle JSON files under `inputs`.

    orjson rather than Spark: the walk goes to any depth of any resource, which a Spark
    schema cannot express, and this is an offline tool run on sample-sized inputs.
    """
    found: set[tuple[str | None, str]] = set()
    for path in fhir_files(inputs):
        for document in json_documents(path):
            codings_in(document, found)
    return found


def codes_frame(spark: SparkSession, pairs: Iterable[tuple[str | None, str]]) -> DataFrame:
    return spark.createDataFrame(sorted(pairs, key=repr), "system string, code string")


def concept_ids_for_codes(codes: DataFrame, source_map: DataFrame, systems: DataFrame) -> DataFrame:
    """(concept_id, role) for the codes' source concepts, targets and value targets."""
    from pyspark.sql import functions as F

    keyed = codes.join(F.broadcast(systems), "system").withColumn(
        "_key", normalised_code(F.col("code"), F.col("code_normalisation"))
    )
    hits = keyed.join(
        source_map,
        (keyed["vocabulary_id"] == source_map["source_vocabulary_id"])
        & (keyed["_key"] == source_map["source_code_key"]),
    )
    sources = hits.select(
        F.col("source_concept_id").alias("concept_id"), F.lit("source").alias("role")
    )
    targets = hits.select(
        F.col("target_concept_id").alias("concept_id"), F.lit("target").alias("role")
    )
    values = hits.select(
        F.col("value_concept_id").alias("concept_id"), F.lit("target").alias("role")
    )
    return (
        sources.unionByName(targets)
        .unionByName(values)
        .where(F.col("concept_id").isNotNull() & (F.col("concept_id") != NO_MATCHING_CONCEPT))
        .distinct()
    )


def subset_tables(
    tables: dict[str, DataFrame], codes: DataFrame, systems: DataFrame
) -> dict[str, DataFrame]:
    """The subset of each vocabulary table, as described in the module docstring."""
    from pyspark.sql import functions as F

    concept = tables["concept"]
    source_map = build_source_to_standard(concept, tables["concept_relationship"], systems)
    # Small, and reused by every table below: computed once instead of once per table.
    coded = concept_ids_for_codes(codes, source_map, systems).cache()
    targets = coded.where(F.col("role") == "target").select(
        F.col("concept_id").alias("descendant_concept_id")
    )
    ancestor = tables["concept_ancestor"].join(targets.distinct(), "descendant_concept_id")
    wanted = (
        coded.select("concept_id")
        .unionByName(ancestor.select(F.col("ancestor_concept_id").alias("concept_id")))
        .unionByName(
            concept.where(F.col("vocabulary_id").isin(*WHOLE_VOCABULARIES)).select("concept_id")
        )
        .distinct()
        .cache()
    )
    # Forward maps of kept concepts are kept even when dangling; the reverse rows only
    # when both ends are kept, or every source code of a kept target would come along.
    relationship = tables["concept_relationship"].join(
        wanted.withColumnRenamed("concept_id", "concept_id_1"), "concept_id_1", "left_semi"
    )
    forward = relationship.where(F.col("relationship_id").isin(*FORWARD_MAPS))
    reverse = relationship.where(F.col("relationship_id").isin(*REVERSE_MAPS)).join(
        wanted.withColumnRenamed("concept_id", "concept_id_2"), "concept_id_2", "left_semi"
    )
    result = {
        "concept": concept.join(wanted, "concept_id", "left_semi"),
        "concept_relationship": forward.unionByName(reverse),
        "concept_ancestor": ancestor.select(*tables["concept_ancestor"].columns),
        "concept_synonym": tables["concept_synonym"].join(wanted, "concept_id", "left_semi"),
        "drug_strength": tables["drug_strength"].join(
            wanted.withColumnRenamed("concept_id", "drug_concept_id"),
            "drug_concept_id",
            "left_semi",
        ),
    }
    result.update({name: tables[name] for name in WHOLE_TABLES})
    return result


def write_athena_table(df: DataFrame, out_dir: Path, table: str) -> Path:
    """One Athena file, rows sorted on the table key; gzipped when over 1 MB."""
    for stale in (out_dir / f"{table.upper()}.csv", out_dir / f"{table.upper()}.csv.gz"):
        stale.unlink(missing_ok=True)
    ordered = df.repartition(1).sortWithinPartitions(*TABLE_KEYS[table])
    staging = tempfile.mkdtemp(prefix=f".{table}-", dir=out_dir)
    written = write_athena_csv(ordered, Path(staging) / "table.csv")
    path = out_dir / f"{table.upper()}.csv"
    written.replace(path)
    shutil.rmtree(staging, ignore_errors=True)
    if path.stat().st_size > GZIP_ABOVE_BYTES:
        zipped = path.with_name(path.name + ".gz")
        zipped.write_bytes(gzip.compress(path.read_bytes(), compresslevel=9, mtime=0))
        path.unlink()
        path = zipped
    return path


def write_athena_csv(df: DataFrame, path: Path) -> Path:
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    # Dates as YYYYMMDD text, like Athena; everything else as Spark writes it.
    columns = [
        F.date_format(F.col(f.name), "yyyyMMdd").alias(f.name)
        if isinstance(f.dataType, T.DateType)
        else F.col(f.name)
        for f in df.schema.fields
    ]
    return write_single_csv(df.select(*columns), path, sep="\t", quote="")


def build_subset(
    spark: SparkSession,
    athena_dirs: Path | Sequence[Path],
    inputs: Path | Sequence[Path] | DataFrame,
    out_dir: Path,
    cache_dir: Path | None = None,
) -> Path:
    """Write the subset of `athena_dirs` needed by `inputs` (FHIR folders or a codes frame)."""
    from pyspark.sql import DataFrame as SparkDataFrame

    if isinstance(inputs, SparkDataFrame):
        codes = inputs.select("system", "code")
    else:
        folders = [inputs] if isinstance(inputs, Path) else list(inputs)
        codes = codes_frame(spark, scan_codes(folders))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="vocab-subset-") as scratch:
        release = load_release(
            spark, athena_dirs, Path(cache_dir or scratch), with_supplement=False
        )
        tables = {name: release.table(name) for name in TABLE_KEYS}
        for table, df in subset_tables(tables, codes, code_systems(spark)).items():
            write_athena_table(df, out_dir, table)
    return out_dir


def main(argv: Sequence[str] | None = None) -> int:
    from omopflow.spark import get_session

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--athena", type=Path, action="append", required=True)
    parser.add_argument("--input", type=Path, action="append", required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    spark = get_session(app_name="omopflow-vocab-subset")
    print(build_subset(spark, args.athena, args.input, args.out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
