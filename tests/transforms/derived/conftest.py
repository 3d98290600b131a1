"""Tiny hand-made OMOP tables for the derived-table tests."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

# With the finder-based editable install, `tests/transforms` (a folder without __init__.py,
# on sys.path through tests/conftest.py) shadows the real `transforms` package as a namespace
# package. Putting the repository root on sys.path lets the regular package win. The lasting
# fix is `pythonpath = ["."]` in pyproject's pytest options (asked of the lead).
REPO = str(Path(__file__).resolve().parents[3])
if REPO not in sys.path:
    sys.path.insert(0, REPO)


@pytest.fixture
def omop_table(spark: Any) -> Callable[[str, list[dict[str, Any]]], Any]:
    """omop_table("condition_occurrence", [{...}, ...]): CDM-typed rows; absent columns null."""
    from pyspark.sql import types as T

    from omopflow import cdm

    def build(table: str, rows: list[dict[str, Any]]) -> Any:
        # All nullable: the derived builders must cope with nulls in required columns too.
        schema = T.StructType([T.StructField(f.name, f.dataType) for f in cdm.schema(table)])
        names = [field.name for field in schema.fields]
        unknown = {key for row in rows for key in row} - set(names)
        assert not unknown, f"fixture typo: {unknown}"
        values = [tuple(row.get(name) for name in names) for row in rows]
        return spark.createDataFrame(values, schema=schema)

    return build
