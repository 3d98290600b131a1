"""Fixtures of the gate tests: CDM DataFrames from rows, and the test vocabulary."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from gate_fixtures import concept_rows


@pytest.fixture(scope="session")
def cdm_frames(spark: Any) -> Callable[[dict[str, list[dict[str, Any]]]], dict[str, Any]]:
    """Turn rows by table into DataFrames with the CDM schema (nullable, to seed nulls)."""
    from pyspark.sql import types as T

    from omopflow import cdm

    def build(rows_by_table: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
        frames = {}
        for table, rows in rows_by_table.items():
            schema = T.StructType(
                [T.StructField(f.name, f.dataType, True) for f in cdm.schema(table).fields]
            )
            values = [tuple(row.get(f.name) for f in schema.fields) for row in rows]
            frames[table] = spark.createDataFrame(values, schema)
        return frames

    return build


@pytest.fixture(scope="session")
def concept(cdm_frames: Callable[..., dict[str, Any]]) -> Any:
    return cdm_frames({"concept": concept_rows()})["concept"]
