"""Stage: every input item becomes a typed FHIR resource or a quarantine entry with a reason.

An *item* is an NDJSON line, a JSON file holding one resource, or one entry of a Bundle
(Bundles are expanded one level; `urn:uuid:` references between entries are rewritten to
`Type/id`). Items are validated on a small header (resourceType, id, meta.lastUpdated) and
written once, partitioned by resource type; written Bundles are then replaced by their
entries. Each type is parsed with its explicit R4 schema and merged into the site's staging:
the latest version of each (site, type, id) wins, by `meta.lastUpdated`, and Bundle
`DELETE` entries leave tombstones that hide the resource.

Staged tables keep the original JSON (`_json`), so nothing the hospital sent is lost even
when an element is unknown to R4, and a later schema can re-parse it.
"""

from __future__ import annotations

import shutil
from collections.abc import Collection
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from omopflow.fhir_schema import RESOURCE_TYPES, resource_schema
from omopflow.frames import union_all
from omopflow.landing import Discovery
from omopflow.records import read_records
from omopflow.spark import interpreted

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame, SparkSession
    from pyspark.sql.types import StructType

LINEAGE = ("_site", "_export", "_file", "_line", "_entry")
STAGED_META = (*LINEAGE, "_resource_type", "id", "_last_updated", "_deleted", "_json")
QUARANTINE_COLUMNS = (*LINEAGE, "reason", "detail", "raw")
QUARANTINE_BUCKET = "_quarantine"
BUNDLE_BUCKET = "Bundle"  # valid Bundles, until their entries replace them
SCHEMA_FAILURE = "does not match the FHIR R4 schema"
EXTENSION = "extension"  # a resource's own extensions: staged as JSON text, one per extension
INVALID_BYTES = "invalid UTF-8 bytes"
BYTE_ORDER_MARK = "\ufeff"

HEADER_SCHEMA = "resourceType string, id string, meta struct<lastUpdated:string>, _corrupt string"
BUNDLE_SCHEMA = (
    "type string, timestamp string, meta struct<lastUpdated:string>, "
    "entry array<struct<fullUrl:string, resource:string, "
    "request:struct<method:string, url:string>>>, _corrupt string"
)
PARALLEL_TYPES = 4
# Longest resource text staged (characters). Longer ones are quarantined with their raw
# text: the typed parse would fail on them anyway (Jackson caps a JSON string at 20 M
# characters), and a clear reason beats a schema mismatch. Bundles are exempt: their
# entries are checked one by one.
MAX_ITEM_CHARS = 16 * 1024 * 1024
TOO_LONG = "line too long"
CORRUPT = {"mode": "PERMISSIVE", "columnNameOfCorruptRecord": "_corrupt"}


@dataclass(frozen=True)
class StagingResult:
    resource_types: tuple[str, ...]
    counts: dict[str, int]
    quarantine_path: Path


def _header(json_col: Column) -> Column:
    from pyspark.sql import functions as F

    return F.from_json(json_col, HEADER_SCHEMA, CORRUPT)


def _item_reason(
    json_col: Column, header: Column, declared: Column, invalid_bytes: Column
) -> Column:
    """Why an item cannot be staged, or null when it can. The first failing rule wins.

    Each rule reads the text as little as it can: a full pass over every line costs about
    as much as the header parse (the byte length is known without one, and counting
    characters is only needed past it).
    """
    from pyspark.sql import functions as F

    trimmed = F.ltrim(json_col)
    known = F.array(*[F.lit(t) for t in sorted(RESOURCE_TYPES)])
    is_bundle = F.coalesce(header["resourceType"] == "Bundle", F.lit(False))
    too_long = (F.octet_length(json_col) > MAX_ITEM_CHARS) & (F.length(json_col) > MAX_ITEM_CHARS)
    return (
        F.when(too_long & ~is_bundle, F.lit(TOO_LONG))
        .when(trimmed == "", F.lit("blank line"))  # Spark trims spaces only, as before
        .when(invalid_bytes, F.lit(INVALID_BYTES))
        .when(trimmed.startswith("["), F.lit("not a JSON object: array"))
        .when(~trimmed.startswith("{"), F.lit("not a JSON object: scalar or text"))
        .when(header["_corrupt"].isNotNull(), F.lit("malformed JSON"))
        .when(header["resourceType"].isNull(), F.lit("missing resourceType"))
        .when(~F.array_contains(known, header["resourceType"]), F.lit("unknown resourceType"))
        .when(
            declared.isNotNull() & (header["resourceType"] != declared),
            F.lit("resourceType does not match the file's type"),
        )
        .when(
            (header["resourceType"] != "Bundle")
            & (header["id"].isNull() | (F.trim(header["id"]) == "")),
            F.lit("missing id"),
        )
    )


def validate(records: DataFrame, site: str) -> DataFrame:
    """Header-parse raw records; add `_reason` (null when fine) and the header fields."""
    from pyspark.sql import functions as F

    # Spark reads text as raw bytes: a line with invalid UTF-8 is quarantined with its bytes
    # replaced (the raw text must be storable), found with one byte test per line. A
    # byte-order mark is legal at the start of a UTF-8 file and not part of the JSON.
    valid = F.col("_valid_utf8")
    text = F.when(valid, F.col("value")).otherwise(F.make_valid_utf8("value"))
    value = F.when(text.startswith(BYTE_ORDER_MARK), F.substring(text, 2, 2**31 - 1)).otherwise(
        text
    )
    items = (
        records.withColumn("_valid_utf8", F.is_valid_utf8("value"))
        .withColumn("value", value)
        .withColumn("_h", _header(F.col("value")))
    )
    reason = _item_reason(F.col("value"), F.col("_h"), F.col("_declared_type"), ~valid)
    return items.select(
        F.lit(site).alias("_site"),
        "_export",
        "_file",
        "_line",
        F.lit(None).cast("int").alias("_entry"),
        F.col("value").alias("_json"),
        F.col("_h.resourceType").alias("_resource_type"),
        F.col("_h.id").alias("id"),
        F.col("_h.meta.lastUpdated").alias("_last_updated_text"),
        F.lit(False).alias("_deleted"),
        reason.alias("_reason"),
    )


def is_valid_bundle() -> Column:
    from pyspark.sql import functions as F

    return (F.col("_resource_type") == "Bundle") & F.col("_reason").isNull()


def expand_bundles(bundles: DataFrame) -> DataFrame:
    """The items inside valid Bundles (one level), with references resolved; a Bundle
    without entries becomes a quarantined item itself."""
    from pyspark.sql import functions as F

    bundles = bundles.withColumn("_b", F.from_json("_json", BUNDLE_SCHEMA, CORRUPT))
    empty = bundles.where(F.coalesce(F.size("_b.entry"), F.lit(0)) <= 0).withColumn(
        "_reason", F.lit("Bundle without entries")
    )
    entries = bundles.select(
        *[c for c in bundles.columns if c not in ("_entry", "_json", "_b")],
        F.coalesce("_b.meta.lastUpdated", "_b.timestamp").alias("_bundle_time"),
        F.posexplode("_b.entry").alias("_pos", "_e"),
    )
    entries = entries.select(
        "_site",
        "_export",
        "_file",
        "_line",
        (F.col("_pos") + 1).cast("int").alias("_entry"),
        F.col("_e.fullUrl").alias("_full_url"),
        F.col("_e.resource").alias("_json"),
        F.upper("_e.request.method").alias("_method"),
        F.col("_e.request.url").alias("_request_url"),
        "_bundle_time",
    )
    entries = _resolve_urn_references(entries)
    return empty.drop("_b").unionByName(_entry_items(entries))


def with_bundles_expanded(items: DataFrame) -> DataFrame:
    """Validated items with each valid Bundle replaced by its entries (for in-memory use:
    `stage` expands the Bundles it has written, so the input text is parsed once)."""
    valid = is_valid_bundle()
    return items.where(~valid).unionByName(expand_bundles(items.where(valid)))


def _entry_items(entries: DataFrame) -> DataFrame:
    """Bundle entries as items: resources validated like lines, DELETEs as tombstones."""
    from pyspark.sql import functions as F

    h = _header(F.col("_json"))
    delete_target = F.split(F.regexp_replace("_request_url", r"^.*?([A-Za-z]+/[^/?]+)$", "$1"), "/")
    is_delete = F.coalesce(F.col("_method") == "DELETE", F.lit(False))
    reason = (
        F.when(is_delete & (F.size(delete_target) != 2), F.lit("DELETE entry without Type/id url"))
        .when(is_delete, F.lit(None))
        .when(F.col("_json").isNull(), F.lit("Bundle entry without resource"))
        .when(h["resourceType"] == "Bundle", F.lit("Bundle inside a Bundle"))
        # The entries' text comes from a Bundle line that passed the UTF-8 test.
        .otherwise(_item_reason(F.col("_json"), h, F.lit(None).cast("string"), F.lit(False)))
    )
    return entries.select(
        "_site",
        "_export",
        "_file",
        "_line",
        "_entry",
        F.when(is_delete, F.to_json(F.struct("_method", "_request_url")))
        .otherwise(F.col("_json"))
        .alias("_json"),
        F.when(is_delete, delete_target[0]).otherwise(h["resourceType"]).alias("_resource_type"),
        F.when(is_delete, delete_target[1]).otherwise(h["id"]).alias("id"),
        F.when(is_delete, F.col("_bundle_time"))
        .otherwise(h["meta"]["lastUpdated"])
        .alias("_last_updated_text"),
        is_delete.alias("_deleted"),
        reason.alias("_reason"),
    )


def _resolve_urn_references(entries: DataFrame) -> DataFrame:
    """Rewrite `"reference": "urn:uuid:..."` to `Type/id` using the Bundle's fullUrls.

    Built from joins and a fold of `replace` over the (few) references of each entry, so no
    Python runs per row. References to fullUrls not in the Bundle stay as they are and are
    counted later as unresolved links.
    """
    from pyspark.sql import functions as F

    bundle_key = ["_site", "_export", "_file", "_line"]
    targets = entries.where(F.col("_full_url").startswith("urn:")).select(
        *bundle_key,
        F.col("_full_url").alias("urn"),
        F.concat_ws(
            "/",
            F.get_json_object("_json", "$.resourceType"),
            F.get_json_object("_json", "$.id"),
        ).alias("target"),
    )
    found = F.regexp_extract_all("_json", F.lit(r'"reference"\s*:\s*"(urn:[^"]+)"'), 1)
    refs = entries.select(*bundle_key, "_entry", F.explode(found).alias("urn")).distinct()
    swaps = (
        refs.join(targets, [*bundle_key, "urn"])
        .groupBy(*bundle_key, "_entry")
        .agg(F.collect_list(F.struct("urn", "target")).alias("_swaps"))
    )
    resolved = entries.join(swaps, [*bundle_key, "_entry"], "left")
    folded = F.aggregate(
        F.coalesce("_swaps", F.array().cast("array<struct<urn:string,target:string>>")),
        F.col("_json"),
        lambda acc, s: F.replace(
            acc,
            F.concat(F.lit('"'), s["urn"], F.lit('"')),
            F.concat(F.lit('"'), s["target"], F.lit('"')),
        ),
    )
    return resolved.withColumn("_json", folded).drop("_swaps")


def quarantine_file_problems(spark: SparkSession, discovery: Discovery, site: str) -> DataFrame:
    rows = [
        (site, p.export_id, p.path, 0, None, p.reason, p.detail, None) for p in discovery.problems
    ]
    schema = (
        "_site string, _export string, _file string, _line long, _entry int, "
        "reason string, detail string, raw string"
    )
    return spark.createDataFrame(rows, schema)


def write_items(items: DataFrame, path: Path, mode: str = "overwrite") -> StructType:
    """Persist validated items once, partitioned by type, so the text is read only once.

    Returns the written schema: reading it back with it works even when nothing was written
    (an empty export), where Spark could not infer one.
    """
    from pyspark.sql import functions as F

    bucket = F.when(F.col("_reason").isNull(), F.col("_resource_type")).otherwise(
        F.lit(QUARANTINE_BUCKET)
    )
    bucketed = items.withColumn("_bucket", bucket)
    bucketed.write.mode(mode).partitionBy("_bucket").parquet(str(path))
    return bucketed.schema


def write_bundle_entries(spark: SparkSession, path: Path, schema: StructType) -> None:
    """Replace the written Bundles by their entries, added to the items beside them.

    Done on the written items, not the text: expanding on the fly would parse every input
    line again for each of the several passes that Bundle expansion makes.
    """
    from pyspark.sql import functions as F

    folder = path / f"_bucket={BUNDLE_BUCKET}"
    if not folder.is_dir():
        return  # a Bulk Data export: NDJSON of resources, no Bundles
    items = spark.read.schema(schema).parquet(str(path))
    bundles = items.where(F.col("_bucket") == BUNDLE_BUCKET).drop("_bucket")
    # Appended: an overwrite would replace (dynamically) the type folders written before.
    write_items(expand_bundles(bundles), path, mode="append")
    shutil.rmtree(folder)


def bucket_names(path: Path) -> tuple[str, ...]:
    """Resource types present, read off the partition folders (no data is collected)."""
    prefix = "_bucket="
    return tuple(
        sorted(
            p.name[len(prefix) :]
            for p in path.glob(f"{prefix}*")
            if p.is_dir() and p.name != f"{prefix}{QUARANTINE_BUCKET}"
        )
    )


def typed(items: DataFrame, resource_type: str) -> DataFrame:
    """Parse `_json` with the explicit R4 schema of `resource_type`; flag what does not fit."""
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    schema = resource_schema(resource_type)
    with_corrupt = T.StructType([*schema.fields, T.StructField("_corrupt", T.StringType())])
    parsed = F.from_json("_json", with_corrupt, CORRUPT)
    reason = F.when(
        ~F.col("_deleted") & F.col("_p._corrupt").isNotNull(),
        F.lit(SCHEMA_FAILURE),
    )
    # One parse per row. Spark pushes a filter on the parse (staged or misfit) below a plain
    # projection, which parsed every row twice (once to filter, once to stage it); it
    # keeps such a filter above a generator, hence the explode of a one-element array.
    return items.withColumn("_p", F.explode(F.array(parsed))).withColumn("_reason", reason)


def latest_versions(items: DataFrame) -> DataFrame:
    """Keep the newest version of each (site, type, id); tombstones compete like versions.

    Order: meta.lastUpdated (a DELETE without a time wins), then export, file, line, entry,
    so ties break the same way on every run.
    """
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    when = F.coalesce(
        F.col("_last_updated"),
        F.when(F.col("_deleted"), F.lit("9999-12-31").cast("timestamp")),
    )
    order = Window.partitionBy("_site", "_resource_type", "id").orderBy(
        when.desc_nulls_last(),
        F.col("_export").desc(),
        F.col("_file").desc(),
        F.col("_line").desc(),
        F.col("_entry").desc_nulls_last(),
    )
    return items.withColumn("_rank", F.row_number().over(order)).where("_rank = 1").drop("_rank")


def types_with_repeated_ids(keys: DataFrame) -> set[str]:
    """Resource types where some (site, type, id) comes more than once, so versions must be
    merged; `keys` has those three columns.

    A first load of an export usually has one version per id; finding that out from the id
    columns alone is far cheaper than the merge, which sorts whole rows (text and all). One
    query answers for every type (one per type cost a few Spark jobs each).
    """
    repeated = keys.groupBy("_site", "_resource_type", "id").count().where("count > 1")
    return {row["_resource_type"] for row in repeated.select("_resource_type").distinct().collect()}


def staged_columns(parsed: DataFrame, resource_type: str) -> list[Column]:
    """The staged table's columns from a frame with the parsed resource in `_p`."""
    from pyspark.sql import functions as F

    elements = []
    for field in resource_schema(resource_type).fields:
        element = F.col(f"_p.`{field.name}`")
        if field.name == EXTENSION:
            element = F.transform(element, lambda e: F.to_json(e))
        if field.name != "id":
            elements.append(element.alias(field.name))
    return [F.col(c) for c in STAGED_META] + elements


def staged_schema(resource_type: str) -> StructType:
    """The columns of a type's staged table (`staged_columns`) and their types."""
    from pyspark.sql import types as T

    meta = T.StructType(
        [
            T.StructField("_site", T.StringType()),
            T.StructField("_export", T.StringType()),
            T.StructField("_file", T.StringType()),
            T.StructField("_line", T.LongType()),
            T.StructField("_entry", T.IntegerType()),
            T.StructField("_resource_type", T.StringType()),
            T.StructField("id", T.StringType()),
            T.StructField("_last_updated", T.TimestampType()),
            T.StructField("_deleted", T.BooleanType()),
            T.StructField("_json", T.StringType()),
        ]
    )
    elements = [
        T.StructField(f.name, T.ArrayType(T.StringType())) if f.name == EXTENSION else f
        for f in resource_schema(resource_type).fields
        if f.name != "id"
    ]
    return T.StructType(meta.fields + elements)


@dataclass(frozen=True)
class StagingPaths:
    work: Path  # scratch for this run's items
    previous: Path | None  # the site's staging of the last published run, if any
    target: Path  # where this run's staging of the site is written
    quarantine: Path


def stage(
    spark: SparkSession,
    discovery: Discovery,
    site: str,
    paths: StagingPaths,
    parsed_types: Collection[str] | None = None,
) -> dict:
    """Stage one site's input; returns the ledger's staging section.

    Only `parsed_types` (default: all) are parsed with their R4 schema. Other types are
    staged as their JSON and header alone: nothing reads their elements, and parsing them is
    costly (Claim and ExplanationOfBenefit are over half of a Synthea export's bytes). A
    later run that maps them re-parses every staged version from `_json`.
    """
    from pyspark.sql import functions as F

    items_path = paths.work / "items"
    records = read_records(spark, discovery.files)
    schema = write_items(validate(records, site), items_path)
    write_bundle_entries(spark, items_path, schema)
    items = spark.read.schema(schema).parquet(str(items_path))
    # An item without an entry number is a line of its own; the others share their Bundle's.
    by_bucket = items.groupBy("_bucket").agg(
        F.count("*").alias("n"), F.count(F.when(F.col("_entry").isNull(), 1)).alias("lines")
    )
    counted = by_bucket.collect()
    arrived = {row["_bucket"]: row["n"] for row in counted}
    bundles = items.where(F.col("_entry").isNotNull()).select("_file", "_line").distinct().count()
    lines = sum(row["lines"] for row in counted) + bundles
    header_rejects = items.where(F.col("_bucket") == QUARANTINE_BUCKET).select(
        *LINEAGE,
        F.col("_reason").alias("reason"),
        F.lit(None).cast("string").alias("detail"),
        F.col("_json").alias("raw"),
    )
    header_rejects.unionByName(quarantine_file_problems(spark, discovery, site)).coalesce(
        1
    ).write.mode("overwrite").parquet(str(paths.quarantine / "items"))
    types = _types_to_stage(items_path, paths.previous)
    repeated = types_with_repeated_ids(_version_keys(spark, items, types, paths.previous))

    def stage_type(resource_type: str) -> None:
        parse = parsed_types is None or resource_type in parsed_types
        repeats = resource_type in repeated
        _stage_type(
            spark, items, resource_type, paths, parse, repeats, arrived.get(resource_type, 0)
        )

    # Types are independent: submitting their Spark jobs from a few threads keeps the
    # cluster busy while the driver plans the next one (most types are small).
    with interpreted(spark), ThreadPoolExecutor(max_workers=PARALLEL_TYPES) as pool:
        list(pool.map(stage_type, types))
    quarantine = spark.read.parquet(str(paths.quarantine / "*"))
    by_reason = {
        row["reason"]: row["n"]
        for row in quarantine.groupBy("reason").agg(F.count("*").alias("n")).collect()
    }
    quarantined = sum(by_reason.values())
    header_ok = sum(n for bucket, n in arrived.items() if bucket != QUARANTINE_BUCKET)
    schema_failures = by_reason.get(SCHEMA_FAILURE, 0)
    return {
        "files": len(discovery.files),
        "exports": sorted({f.export_id for f in discovery.files}),
        "skipped_files": list(discovery.skipped),
        "export_error_files": list(discovery.error_files),
        "lines_read": lines,
        "bundles_expanded": bundles,
        "items": sum(arrived.values()),
        "file_problems": len(discovery.problems),
        "arrived": sum(arrived.values()) + len(discovery.problems),
        "staged": header_ok - schema_failures,
        "quarantined": quarantined,
        "quarantined_by_reason": dict(sorted(by_reason.items())),
        "items_by_type": dict(sorted((k, v) for k, v in arrived.items() if k != QUARANTINE_BUCKET)),
    }


def _types_to_stage(items_path: Path, previous: Path | None) -> list[str]:
    types = set(bucket_names(items_path))
    if previous is not None and previous.is_dir():
        types.update(p.name for p in previous.iterdir() if p.is_dir())
    return sorted(types)


def _version_keys(
    spark: SparkSession, items: DataFrame, types: list[str], previous: Path | None
) -> DataFrame:
    """(site, type, id) of every version that staging merges: this run's items of `types`
    and the site's previous staging of them."""
    from pyspark.sql import functions as F

    key = ("_site", "_resource_type", "id")
    folders = [previous / t for t in types] if previous else []
    earlier = [spark.read.parquet(str(f)).select(*key) for f in folders if f.is_dir()]
    return union_all([items.where(F.col("_bucket").isin(types)).select(*key), *earlier])


def _stage_type(
    spark: SparkSession,
    items: DataFrame,
    resource_type: str,
    paths: StagingPaths,
    parse: bool,
    repeats: bool,
    arrived: int,
) -> None:
    """Merge this run's items of one type (`arrived` of them) into the site's staging;
    quarantine misfits (when `parse`: a type staged unparsed keeps every version that passed
    the header). `repeats`: some id comes more than once, with the previous staging."""
    from pyspark.sql import functions as F

    target = paths.target / resource_type
    candidate_count = arrived
    previous_dir = paths.previous / resource_type if paths.previous else None
    meta = [c for c in STAGED_META if c != "_last_updated"]
    candidates = items.where(F.col("_bucket") == resource_type).select(
        *meta, F.col("_last_updated_text").cast("timestamp").alias("_last_updated")
    )
    if previous_dir is not None and previous_dir.is_dir():
        # Earlier versions are re-parsed from their JSON, so a newer schema applies to all.
        previous = spark.read.parquet(str(previous_dir))
        candidates = candidates.unionByName(previous.select(*STAGED_META))
        if parse and not repeats:
            candidate_count += previous.count()  # from the files' footers: no data read
    if not parse:
        latest = latest_versions(candidates) if repeats else candidates
        latest.select(*STAGED_META).write.mode("overwrite").parquet(str(target))
        return
    # Parsed once per write rather than cached: the parse is cheap next to the write (3 to
    # 4.5 s against 17 to 19 s for 1,000 patients' Observations), and a cache would build
    # a columnar copy of the wide rows on the heap.
    parsed = typed(candidates, resource_type)
    good = parsed.where("_reason is null")
    if repeats:
        good = latest_versions(good)
    good.select(*staged_columns(good, resource_type)).write.mode("overwrite").parquet(str(target))
    # Misfits take a second parse of the type to find. When no version was dropped (the
    # staged rows, counted from the files' footers, are all the candidates) there are none.
    if not repeats and spark.read.parquet(str(target)).count() == candidate_count:
        return
    rejected = parsed.where("_reason is not null").select(
        *LINEAGE,
        F.col("_reason").alias("reason"),
        F.col("_p._corrupt").alias("detail"),
        F.col("_json").alias("raw"),
    )
    # One file, gathered after the parse (a coalesce would parse the whole type in one task).
    rejected.repartition(1).write.mode("overwrite").parquet(
        str(paths.quarantine / f"schema-{resource_type}")
    )


def read_staged(
    spark: SparkSession, site_dirs: list[Path], resource_type: str, parsed: bool = True
) -> DataFrame:
    """Live (not deleted) staged resources of one type across sites; empty when none.

    `parsed`: with the R4 elements as columns (`staged_schema`); a site's staging that has
    other columns (written by another release of omopflow, or a type it did not parse) is
    parsed again from its JSON. Otherwise only the header and the JSON (`STAGED_META`).
    """
    from pyspark.sql import functions as F

    schema = staged_schema(resource_type) if parsed else None
    dirs = [d / resource_type for d in site_dirs if (d / resource_type).is_dir()]
    if not dirs:
        empty = spark.createDataFrame([], staged_schema(resource_type))
        return empty if parsed else empty.select(*STAGED_META)
    frames = [_site_staging(spark.read.parquet(str(d)), resource_type, schema) for d in dirs]
    return union_all(frames).where(~F.col("_deleted"))


def _site_staging(frame: DataFrame, resource_type: str, schema: StructType | None) -> DataFrame:
    """One site's staged table with the columns of `schema` (None: `STAGED_META`)."""
    from pyspark.sql import functions as F

    if schema is None:
        return frame.select(*STAGED_META)
    found = {f.name: f.dataType.simpleString() for f in frame.schema.fields}
    wanted = {f.name: f.dataType.simpleString() for f in schema.fields}
    if found != wanted:
        reparsed = frame.select(*STAGED_META).withColumn(
            "_p", F.from_json("_json", resource_schema(resource_type))
        )
        frame = reparsed.select(*staged_columns(reparsed, resource_type))
    return frame.select(*schema.fieldNames())


def stage_in_memory(
    spark: SparkSession, resources: list[str], site: str = "test"
) -> tuple[dict[str, DataFrame], DataFrame]:
    """Stage JSON texts (resources or Bundles) without touching disk: for fixtures and tests.

    Returns the staged frames by resource type (as `read_staged` gives them) and the
    quarantined items. Same rules as `stage`, minus the merge with earlier runs.
    """
    from pyspark.sql import functions as F

    rows = [("fixture", "fixture", None, i + 1, text) for i, text in enumerate(resources)]
    records = spark.createDataFrame(
        rows, "_file string, _export string, _declared_type string, _line long, value string"
    )
    items = with_bundles_expanded(validate(records, site)).withColumn(
        "_last_updated", F.col("_last_updated_text").cast("timestamp")
    )
    quarantined = items.where("_reason is not null").select(*LINEAGE, "_json", "_reason")
    staged: dict[str, DataFrame] = {}
    types = sorted(
        {
            r["_resource_type"]
            for r in items.where("_reason is null").select("_resource_type").distinct().collect()
        }
    )
    for resource_type in types:
        of_type = items.where(F.col("_resource_type") == resource_type).select(*STAGED_META)
        parsed = typed(of_type, resource_type)
        good = latest_versions(parsed.where("_reason is null"))
        staged[resource_type] = good.select(*staged_columns(good, resource_type)).where(
            ~F.col("_deleted")
        )
        quarantined = quarantined.unionByName(
            parsed.where("_reason is not null").select(*quarantined.columns),
            allowMissingColumns=True,
        )
    return staged, quarantined
