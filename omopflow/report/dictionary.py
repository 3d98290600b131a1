"""The data dictionary of a release: every published column with its CDM description, type,
share of nulls and number of distinct values, as `data_dictionary.csv` and `.md`.

Counts come from one Spark query for the whole release (the only values brought to the driver are
those summary numbers). Vocabulary tables (CONCEPT, CONCEPT_ANCESTOR, ...) are listed but
not profiled: they are the Athena release as loaded, can hold hundreds of millions of rows,
and their contents are documented by Athena itself.
"""

from __future__ import annotations

import csv
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING

from omopflow import cdm
from omopflow.frames import union_all
from vocabularies.athena import TABLE_KEYS

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

DICTIONARY_CSV = "data_dictionary.csv"
DICTIONARY_MD = "data_dictionary.md"
VOCABULARY_TABLES = frozenset(TABLE_KEYS)
NOT_IN_SPEC = "(not in the OMOP CDM v5.4 spec)"


@dataclass(frozen=True)
class ColumnProfile:
    table: str
    column: str
    cdm_datatype: str
    parquet_type: str
    required: bool
    rows: int
    null_share: float | None  # None: not profiled (vocabulary table)
    distinct: int | None
    description: str


def release_tables(release_dir: Path) -> list[str]:
    """Folders of a release that hold Parquet files, i.e. its published tables."""
    return sorted(
        p.name
        for p in Path(release_dir).iterdir()
        if p.is_dir() and not p.name.startswith((".", "_")) and any(p.rglob("*.parquet"))
    )


def data_dictionary(spark: SparkSession, release_dir: Path) -> list[ColumnProfile]:
    """Every column of every table of the release, profiled (vocabulary tables only
    counted)."""
    frames = {
        table: spark.read.parquet(str(Path(release_dir) / table))
        for table in release_tables(release_dir)
    }
    counts = _column_counts(
        {table: df for table, df in frames.items() if table not in VOCABULARY_TABLES}
    )
    profiles = []
    for table, df in frames.items():
        spec = _spec(table)
        profiled = table not in VOCABULARY_TABLES
        rows, non_null, distinct = counts.get(table, (0, {}, {}))
        if not profiled:
            rows = df.count()
        for i, column in enumerate(df.schema.fields):
            field = spec.get(column.name)
            profiles.append(
                ColumnProfile(
                    table=table,
                    column=column.name,
                    cdm_datatype=field.datatype if field else "",
                    parquet_type=column.dataType.simpleString(),
                    required=bool(field and field.required),
                    rows=rows,
                    null_share=_null_share(rows, non_null.get(i, 0)) if profiled else None,
                    distinct=distinct.get(i, 0) if profiled else None,
                    description=_one_line(field.description) if field else NOT_IN_SPEC,
                )
            )
    return profiles


Counts = tuple[int, dict[int, int], dict[int, int]]


def _column_counts(frames: dict[str, DataFrame]) -> dict[str, Counts]:
    """Rows, and non-null and distinct values by column index, of every table, in one
    Spark query (one per table cost a second each on a five-patient release, most of it
    planning and scheduling, not counting).

    Each row becomes one narrow (table, column, value) triple per column, grouped by
    triple: a distinct count per column in one aggregation would make Spark copy every whole
    row once per column (its Expand), which took a minute for MEASUREMENT at 10,000
    patients. Values are compared as text, so that one triple fits every column: the text
    of a value is unique to it, once -0.0 is made 0.0 as Spark's own grouping does. The
    expressions are SQL text: one call to the JVM per table, not several per column.
    """
    from pyspark.sql import functions as F

    if not frames:
        return {}
    triples = [
        df.select(F.lit(table).alias("table"), F.expr(f"inline(array({_pairs_sql(df)}))"))
        for table, df in frames.items()
    ]
    triple = ["table", "column", "value"]
    per_value = union_all(triples).groupBy(*triple).agg(F.count(F.lit(1)).alias("n"))
    known = F.col("value").isNotNull()
    per_column = per_value.groupBy("table", "column").agg(
        F.sum("n").alias("rows"),
        F.sum(F.when(known, F.col("n")).otherwise(0)).alias("non_null"),
        F.count(F.when(known, 1)).alias("distinct"),
    )
    counts: dict[str, Counts] = {}
    for r in per_column.collect():
        _, non_null, distinct = counts.setdefault(r["table"], (int(r["rows"]), {}, {}))
        non_null[r["column"]] = int(r["non_null"])
        distinct[r["column"]] = int(r["distinct"])
    return counts


def _pairs_sql(df: DataFrame) -> str:
    """`struct(i AS column, <value as text> AS value), ...` for every column of `df`."""
    from pyspark.sql import types as T

    pairs = []
    for i, field in enumerate(df.schema.fields):
        value = "`" + field.name.replace("`", "``") + "`"
        if isinstance(field.dataType, (T.FloatType, T.DoubleType)):
            value = f"CASE WHEN {value} = 0 THEN 0.0D ELSE {value} END"
        pairs.append(f"struct({i} AS column, CAST({value} AS STRING) AS value)")
    return ", ".join(pairs)


def _spec(table: str) -> dict[str, cdm.CdmField]:
    try:
        return {f.name: f for f in cdm.table_fields(table)}
    except KeyError:
        return {}


def _null_share(rows: int, non_null: int) -> float:
    return round((rows - non_null) / rows, 4) if rows else 0.0


def _one_line(text: str) -> str:
    return " ".join(text.split())


def write_data_dictionary(spark: SparkSession, release_dir: Path) -> Path:
    """Write `data_dictionary.csv` and `data_dictionary.md` into the release; return the CSV."""
    release_dir = Path(release_dir)
    profiles = data_dictionary(spark, release_dir)
    target = release_dir / DICTIONARY_CSV
    with target.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, [f.name for f in fields(ColumnProfile)])
        writer.writeheader()
        for profile in profiles:
            writer.writerow(asdict(profile))
    (release_dir / DICTIONARY_MD).write_text(to_markdown(profiles), encoding="utf-8")
    return target


def read_data_dictionary(path: Path) -> list[ColumnProfile]:
    """Read back a `data_dictionary.csv` (for the report, without recounting)."""
    with Path(path).open(encoding="utf-8") as handle:
        return [
            ColumnProfile(
                table=row["table"],
                column=row["column"],
                cdm_datatype=row["cdm_datatype"],
                parquet_type=row["parquet_type"],
                required=row["required"] == "True",
                rows=int(row["rows"]),
                null_share=float(row["null_share"]) if row["null_share"] else None,
                distinct=int(row["distinct"]) if row["distinct"] else None,
                description=row["description"],
            )
            for row in csv.DictReader(handle)
        ]


def to_markdown(profiles: list[ColumnProfile]) -> str:
    lines = ["# Data dictionary", ""]
    table = None
    for p in profiles:
        if p.table != table:
            table = p.table
            lines += [
                "",
                f"## {table} ({p.rows:,} rows)",
                "",
                "| column | CDM type | Parquet type | required | null share | distinct | "
                "description |",
                "|---|---|---|---|---|---|---|",
            ]
        null = "" if p.null_share is None else f"{p.null_share:.2%}"
        distinct = "" if p.distinct is None else f"{p.distinct:,}"
        text = p.description.replace("|", "\\|")
        lines.append(
            f"| {p.column} | {p.cdm_datatype} | {p.parquet_type} | "
            f"{'yes' if p.required else ''} | {null} | {distinct} | {text} |"
        )
    return "\n".join(lines) + "\n"
