"""The worked examples of docs/querying.md, run against the shipped sample.

Each ```sql block is followed by a ```text block with the result the docs promise. The
test runs every query in DuckDB (the catalog) and in Spark (the Python snippet of the docs,
reading `current/`) and compares both with the promised result.

The warehouse is the session's `sample_runs` (the demo's input, key and site); set
OMOPFLOW_SAMPLE_WAREHOUSE to the output folder of an `omopflow demo` run to use that instead.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from omopflow import publish

DOCS = Path(__file__).resolve().parent.parent / "docs" / "querying.md"
EXAMPLE = re.compile(r"```sql\n(?P<sql>.*?)```\s*\n+```text\n(?P<expected>.*?)```", re.S)
SPARK_SNIPPET = re.compile(r"```python\n(?P<code>[^`]*?createOrReplaceTempView.*?)```", re.S)
DOCS_WAREHOUSE = 'Path("out/demo")'

pytestmark = pytest.mark.slow


def examples() -> list[tuple[str, str]]:
    text = DOCS.read_text(encoding="utf-8")
    return [(m["sql"].strip(), m["expected"].strip()) for m in EXAMPLE.finditer(text)]


def as_text(columns: list[str], rows: list[tuple]) -> str:
    """A result as the docs print it: a header line, then one line per row, tab-separated."""
    lines = ["\t".join(columns)] + ["\t".join(_value(v) for v in row) for row in rows]
    return "\n".join(lines)


def _value(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.2f}"
    return "" if value is None else str(value)


@pytest.fixture(scope="module")
def warehouse(sample_runs) -> Path:
    reuse = os.environ.get("OMOPFLOW_SAMPLE_WAREHOUSE")
    if reuse:
        out = Path(reuse)
        assert publish.current_release(out) is not None, f"no current release in {out}"
        return out
    return sample_runs.config.out_dir


def test_docs_have_examples():
    assert len(examples()) >= 3


@pytest.mark.parametrize("index", range(len(examples())))
def test_example_in_duckdb(warehouse, index):
    import duckdb

    sql, expected = examples()[index]
    with duckdb.connect(str(warehouse / "omop.duckdb"), read_only=True) as con:
        result = con.sql(sql)
        assert as_text(result.columns, result.fetchall()) == expected


@pytest.fixture(scope="module")
def spark_sql(spark, warehouse):
    """Runs the docs' own Spark snippet (with the test's warehouse) and returns its `sql`."""
    snippet = SPARK_SNIPPET.search(DOCS.read_text(encoding="utf-8"))
    assert snippet, "docs/querying.md has no Spark snippet"
    code = snippet["code"].replace(DOCS_WAREHOUSE, f"Path({str(warehouse)!r})")
    code = code.replace("spark.sql(QUERY).show()", "")
    namespace: dict = {"spark": spark}
    exec(code, namespace)  # the snippet registers a view per table of current/
    return spark.sql


@pytest.mark.parametrize("index", range(len(examples())))
def test_example_in_spark(spark_sql, index):
    sql, expected = examples()[index]
    frame = spark_sql(sql)
    rows = [tuple(r) for r in frame.collect()]  # a handful of result rows
    assert as_text(frame.columns, rows) == expected
