"""The OMOP CDM v5.4 field spec, read from the OHDSI CSV shipped in `omopflow/spec/`.

Every published table goes through `conform`, so column names, order and types are those
of the spec whatever a transform produced. Ids (`*_id`) are 64-bit integers, as DESIGN.md
asks; other integers stay 32-bit. Datetimes are wall-clock times in the run's one timezone,
stored without a zone (Spark TIMESTAMP_NTZ, Parquet isAdjustedToUTC=false), as OMOP's are.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pyspark.sql import DataFrame
    from pyspark.sql.types import DataType, StructType

CDM_VERSION = "5.4"


@dataclass(frozen=True)
class CdmField:
    table: str
    name: str
    datatype: str  # as written in the spec: integer, float, date, datetime, varchar(n)
    required: bool
    primary_key: bool
    fk_table: str | None
    fk_domain: str | None
    description: str

    @property
    def max_length(self) -> int | None:
        if self.datatype.startswith("varchar(") and self.datatype != "varchar(MAX)":
            return int(self.datatype[len("varchar(") : -1])
        return None


@cache
def fields() -> tuple[CdmField, ...]:
    """All CDM v5.4 fields, in spec order."""
    text = resources.files("omopflow.spec").joinpath("OMOP_CDMv5.4_Field_Level.csv")
    with text.open(encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))

    def na(value: str) -> str | None:
        return None if value in ("", "NA") else value

    return tuple(
        CdmField(
            table=row["cdmTableName"].lower(),
            name=row["cdmFieldName"].lower(),
            datatype=row["cdmDatatype"].lower().replace("varchar(max)", "varchar(MAX)"),
            required=row["isRequired"] == "Yes",
            primary_key=row["isPrimaryKey"] == "Yes",
            fk_table=(na(row["fkTableName"]) or "").lower() or None,
            fk_domain=na(row["fkDomain"]),
            description=row["userGuidance"],
        )
        for row in rows
    )


def table_fields(table: str) -> tuple[CdmField, ...]:
    found = tuple(f for f in fields() if f.table == table)
    if not found:
        raise KeyError(f"{table!r} is not an OMOP CDM v{CDM_VERSION} table")
    return found


def tables() -> tuple[str, ...]:
    return tuple(dict.fromkeys(f.table for f in fields()))


def spark_type(field: CdmField) -> DataType:
    from pyspark.sql import types as T

    if field.datatype == "integer":
        return T.LongType() if field.name.endswith("_id") else T.IntegerType()
    return {
        "bigint": T.LongType(),
        "float": T.DoubleType(),
        "date": T.DateType(),
        "datetime": T.TimestampNTZType(),
    }.get(field.datatype, T.StringType())


def schema(table: str) -> StructType:
    from pyspark.sql import types as T

    return T.StructType(
        [T.StructField(f.name, spark_type(f), not f.required) for f in table_fields(table)]
    )


def conform(df: DataFrame, table: str) -> DataFrame:
    """Select the table's spec columns in spec order, cast to spec types.

    Columns the transform did not produce become typed nulls; extra columns are dropped.
    Strings longer than the spec allows are cut, as OMOP loaders would otherwise fail.
    """
    from pyspark.sql import functions as F

    present = set(df.columns)
    columns = []
    for field in table_fields(table):
        value = F.col(field.name) if field.name in present else F.lit(None)
        value = value.cast(spark_type(field))
        if field.max_length is not None:
            value = F.substring(value, 1, field.max_length)
        columns.append(value.alias(field.name))
    return df.select(*columns)
