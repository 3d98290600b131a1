"""Golden cases: FHIR in, expected OMOP rows out, one JSON file per mapping aspect.

Each `golden/<resource>--<table>--<aspect>.json` holds `description`, `input` (FHIR
resources), `expect` ({table: [rows]}, each row listing the columns the case asserts) and
`excluded` ([{resource: "Type/id", reason}]). Every clinical table a case does not list in
`expect` must stay empty for it, and its exclusions must be exactly the listed ones, so a
wrongly routed or silently lost record fails the case. `person_id` and
`visit_occurrence_id` are written as references ("Patient/p1") and resolved to the ids this
run assigned; a reference to nothing staged resolves to null.

All cases are staged in one in-memory pass, each as its own site (the file name), so their
ids cannot meet, and the table modules run once over all of them.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

GOLDEN = Path(__file__).resolve().parent / "golden"
CASE_FILES = sorted(GOLDEN.glob("*--*--*.json"))
CLINICAL_TABLES = (
    "condition_occurrence",
    "drug_exposure",
    "procedure_occurrence",
    "measurement",
    "observation",
    "device_exposure",
)
PSEUDONYM_KEY = b"golden-test-key-0123456789"  # 16+ bytes, as pseudonym requires
REFERENCE_COLUMNS = {"person_id": "person", "visit_occurrence_id": "visit_occurrence"}


@dataclass
class GoldenRun:
    rows: dict[str, list[dict[str, Any]]]  # table -> rows (with provenance)
    excluded: list[dict[str, Any]]  # provenance + reason, every table module
    ids: dict[tuple[str, str], int]  # (site, "Type/id") -> person/visit id
    staged: list[tuple[str, str, str]]  # (site, type, id) of every staged resource


def _stage_cases(spark: Any, cases: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """`omopflow.staging.stage_in_memory` for many sites at once: the site rides in `_export`
    through validation, so one pass stages every case."""
    from pyspark.sql import functions as F

    from omopflow import staging
    from omopflow.spark import interpreted

    rows = [
        (f"{site}.json", site, None, line, json.dumps(resource))
        for site, resources in cases.items()
        for line, resource in enumerate(resources, start=1)
    ]
    records = spark.createDataFrame(
        rows, "_file string, _export string, _declared_type string, _line long, value string"
    )
    items = staging.validate(records, "golden").withColumn("_site", F.col("_export"))
    items = staging.with_bundles_expanded(items).withColumn(
        "_last_updated", F.col("_last_updated_text").cast("timestamp")
    )
    bad = items.where("_reason is not null").select("_file", "_reason").collect()
    assert not bad, f"golden inputs that do not stage: {bad}"
    types = sorted(
        {r["_resource_type"] for r in items.select("_resource_type").distinct().collect()}
    )
    staged = {}
    for resource_type in types:
        of_type = items.where(F.col("_resource_type") == resource_type)
        # Materialised once, without code generation for the wide R4 schemas (as staging does).
        with interpreted(spark):
            parsed = staging.typed(of_type.select(*staging.STAGED_META), resource_type)
            parsed = parsed.localCheckpoint()
        failures = parsed.where("_reason is not null").select("_file", "id").collect()
        assert not failures, f"golden inputs off the R4 schema: {failures}"
        latest = staging.latest_versions(parsed)
        staged[resource_type] = latest.select(*staging.staged_columns(latest, resource_type))
    return staged


@pytest.fixture(scope="session")
def golden_vocab(spark: Any, request: pytest.FixtureRequest) -> Any:
    from vocabularies.athena import SAMPLE_DIR, load_release
    from vocabularies.mapping import build_maps

    # The shared test vocabulary cache (tests/conftest.py) outlives the session: the release
    # is loaded once per change of its files (load_release fingerprints them).
    cache = Path(os.environ["OMOPFLOW_VOCAB_CACHE"])
    release = load_release(spark, [SAMPLE_DIR, GOLDEN / "vocab"], cache)
    return build_maps(spark, release)


def _plain(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return value.isoformat()
    if isinstance(value, dt.date):
        return value.isoformat()
    return value


@pytest.fixture(scope="session")
def golden_run(spark: Any, golden_vocab: Any, tmp_path_factory: pytest.TempPathFactory) -> Any:
    from omopflow.config import RunConfig
    from omopflow.ids import IdAllocator
    from transforms.base import MappingContext
    from transforms.registry import TABLE_MODULES

    cases = {path.stem: json.loads(path.read_text())["input"] for path in CASE_FILES}
    staged = _stage_cases(spark, cases)
    work = tmp_path_factory.mktemp("golden-run")
    config = RunConfig(input_dir=work, vocab_dirs=(work,), out_dir=work)
    ids = IdAllocator.open(spark, None)
    ctx = MappingContext(spark, config, [], ids, PSEUDONYM_KEY, golden_vocab, _staged=staged)
    rows: dict[str, list[dict[str, Any]]] = {}
    excluded: list[dict[str, Any]] = []
    wanted = {"person", "visit_occurrence", *CLINICAL_TABLES}
    for module in [m for m in TABLE_MODULES if m.TABLE in wanted]:
        output = module.build(ctx)
        ctx.outputs[output.table] = output.rows
        rows[output.table] = [
            {k: _plain(v) for k, v in r.asDict().items()} for r in output.rows.collect()
        ]
        if output.excluded is not None:
            excluded += [r.asDict() for r in output.excluded.collect()]
    references = {}
    for table, prefix in (("person", "Patient"), ("visit_occurrence", "Encounter")):
        for row in rows.get(table, []):
            references[(row["_site"], f"{prefix}/{row['_fhir_id']}")] = row[f"{table}_id"]
    keys = [
        (r["_site"], r["_resource_type"], r["id"])
        for frame in staged.values()
        for r in frame.select("_site", "_resource_type", "id").collect()
    ]
    return GoldenRun(rows, excluded, references, keys)


def _resolved(site: str, row: dict[str, Any], ids: dict[tuple[str, str], int]) -> dict:
    return {
        column: ids.get((site, value)) if column in REFERENCE_COLUMNS and value else value
        for column, value in row.items()
    }


def _sorted(rows: list[dict[str, Any]]) -> list[str]:
    return sorted(json.dumps(r, sort_keys=True, default=str) for r in rows)


@pytest.mark.parametrize("path", CASE_FILES, ids=[p.stem for p in CASE_FILES])
def test_golden_case(golden_run: GoldenRun, path: Path) -> None:
    case = json.loads(path.read_text())
    site = path.stem
    expect = case.get("expect", {})
    for table in sorted(set(CLINICAL_TABLES) | set(expect)):
        wanted = [_resolved(site, row, golden_run.ids) for row in expect.get(table, [])]
        columns = sorted({c for row in wanted for c in row})
        got = [
            {c: row.get(c) for c in columns}
            for row in golden_run.rows.get(table, [])
            if row["_site"] == site
        ]
        assert _sorted(got) == _sorted(wanted), f"{table}: {case['description']}"
    got_excluded = [
        {"resource": f"{e['_resource_type']}/{e['_fhir_id']}", "reason": e["reason"]}
        for e in golden_run.excluded
        if e["_site"] == site
    ]
    assert _sorted(got_excluded) == _sorted(case.get("excluded", [])), case["description"]


def test_every_staged_resource_is_mapped_or_excluded(golden_run: GoldenRun) -> None:
    """The ledger's promise over all cases: a row somewhere or an exclusion, never nothing."""
    seen = {
        (row["_site"], row["_resource_type"], row["_fhir_id"])
        for rows in golden_run.rows.values()
        for row in rows
    }
    seen |= {(e["_site"], e["_resource_type"], e["_fhir_id"]) for e in golden_run.excluded}
    assert sorted(set(golden_run.staged) - seen) == []


def test_ids_are_unique_per_table(golden_run: GoldenRun) -> None:
    for table in CLINICAL_TABLES:
        ids = [row[f"{table}_id"] for row in golden_run.rows.get(table, [])]
        assert len(ids) == len(set(ids)), table


def test_there_are_enough_golden_cases() -> None:
    assert len(CASE_FILES) >= 80
