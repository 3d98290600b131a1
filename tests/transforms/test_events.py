"""Clinical events: what the golden cases cannot show one case at a time (id stability over
runs, one build per run) and the small column helpers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.transforms.test_golden import golden_vocab  # noqa: F401 (shared session fixture)

PATIENT = {"resourceType": "Patient", "id": "p1", "birthDate": "1970-01-01"}
CONDITION = {
    "resourceType": "Condition",
    "id": "c1",
    "subject": {"reference": "Patient/p1"},
    "code": {"coding": [{"system": "http://snomed.info/sct", "code": "GOLD-MULTI"}]},
    "onsetDateTime": "2020-03-01",
}
PANEL = {
    "resourceType": "Observation",
    "id": "o1",
    "status": "final",
    "category": [
        {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                    "code": "vital-signs",
                }
            ]
        }
    ],
    "code": {"coding": [{"system": "http://loinc.org", "code": "85354-9"}]},
    "subject": {"reference": "Patient/p1"},
    "effectiveDateTime": "2020-03-01",
    "component": [
        {
            "code": {"coding": [{"system": "http://loinc.org", "code": "8480-6"}]},
            "valueQuantity": {"value": 120},
        },
        {
            "code": {"coding": [{"system": "http://loinc.org", "code": "8462-4"}]},
            "valueQuantity": {"value": 80},
        },
    ],
}
KEY = b"events-test-key-0123456789"


def _context(spark: Any, vocab: Any, crosswalk: Path | None, work: Path) -> Any:
    from omopflow.config import RunConfig
    from omopflow.ids import IdAllocator
    from omopflow.staging import stage_in_memory
    from transforms.base import MappingContext

    staged, _ = stage_in_memory(spark, [json.dumps(r) for r in (PATIENT, CONDITION, PANEL)])
    config = RunConfig(input_dir=work, vocab_dirs=(work,), out_dir=work)
    ids = IdAllocator.open(spark, crosswalk)
    return MappingContext(spark, config, [], ids, KEY, vocab, _staged=staged)


def _clinical_ids(ctx: Any) -> dict[str, list[tuple[str, int]]]:
    from transforms import condition_occurrence, measurement, observation, person

    ctx.outputs["person"] = person.build(ctx).rows
    result = {}
    for module in (condition_occurrence, measurement, observation):
        rows = module.build(ctx).rows.select("_fhir_id", f"{module.TABLE}_id").collect()
        result[module.TABLE] = sorted((r[0], r[1]) for r in rows)
    return result


def test_ids_are_stable_across_runs_and_distinct_per_row(
    spark: Any,
    golden_vocab: Any,  # noqa: F811
    tmp_path: Path,
) -> None:
    """Second run over the same input, with the first run's crosswalk: the same ids. A
    resource with two components, or a code with two targets, gets one id per row."""
    first = _context(spark, golden_vocab, None, tmp_path)
    first_ids = _clinical_ids(first)
    first.ids.write(tmp_path / "crosswalk")
    second = _context(spark, golden_vocab, tmp_path / "crosswalk", tmp_path)
    assert _clinical_ids(second) == first_ids
    components = [i for _, i in first_ids["measurement"]]
    assert len(components) == 2 and len(set(components)) == 2
    assert len(first_ids["condition_occurrence"]) == 1 and len(first_ids["observation"]) == 1


def test_events_are_built_once_per_run(
    spark: Any,
    golden_vocab: Any,  # noqa: F811
    tmp_path: Path,
) -> None:
    from transforms import person
    from transforms.events import EVENTS_KEY, clinical_events

    ctx = _context(spark, golden_vocab, None, tmp_path)
    person.build(ctx)  # assigns the person ids events look up
    built = clinical_events(ctx).rows
    assert ctx.outputs[EVENTS_KEY] is built
    assert clinical_events(ctx).rows is built


def test_days_reads_days_and_weeks_only(spark: Any) -> None:
    from pyspark.sql import functions as F

    from transforms.events import days

    rows = [(3.0, "d"), (2.0, "wk"), (1.0, "mo"), (None, "d")]
    df = spark.createDataFrame(rows, "value double, code string").select(
        days(F.struct("value", "code", F.lit(None).cast("string").alias("unit"))).alias("n")
    )
    assert [r["n"] for r in df.collect()] == [3, 14, None, None]


def test_first_datetime_skips_values_that_do_not_parse(spark: Any) -> None:
    from pyspark.sql import functions as F

    from transforms.events import first_datetime

    df = spark.createDataFrame([("soon", None, "2020-02-03")], "a string, b string, c string")
    got = df.select(first_datetime(F.array("a", "b", "c"), "UTC").alias("t")).first()
    assert got is not None and str(got["t"]) == "2020-02-03 00:00:00"
