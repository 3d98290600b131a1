"""Tiny fake releases written straight to Parquet with the CDM schema (no pipeline run)."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Any

from omopflow import cdm
from omopflow.ids import CROSSWALK_SCHEMA

MALE, FEMALE = 8507, 8532
T2_DIABETES = 201826  # SNOMED 44054006, standard
HYPERTENSION = 320128
ASPIRIN = 1112807
GLUCOSE = 3004501
EHR = 32817
UNMAPPED_CODE = "X123-local"

CONCEPTS = [
    (MALE, "MALE", "Gender", "Gender", "Gender", "S", "M"),
    (FEMALE, "FEMALE", "Gender", "Gender", "Gender", "S", "F"),
    (
        T2_DIABETES,
        "Type 2 diabetes mellitus",
        "Condition",
        "SNOMED",
        "Clinical Finding",
        "S",
        "44054006",
    ),
    (
        HYPERTENSION,
        "Essential hypertension",
        "Condition",
        "SNOMED",
        "Clinical Finding",
        "S",
        "59621000",
    ),
    (ASPIRIN, "aspirin", "Drug", "RxNorm", "Ingredient", "S", "1191"),
    (GLUCOSE, "Glucose [Mass/volume] in Blood", "Measurement", "LOINC", "Lab Test", "S", "2339-0"),
]


def nullable_schema(table: str) -> Any:
    from pyspark.sql import types as T

    return T.StructType([T.StructField(f.name, f.dataType, True) for f in cdm.schema(table)])


def write_rows(spark: Any, release: Path, table: str, rows: list[dict[str, Any]]) -> None:
    schema = nullable_schema(table)
    tuples = [tuple(row.get(f.name) for f in schema.fields) for row in rows]
    frame = spark.createDataFrame(tuples, schema)
    frame.coalesce(1).write.mode("overwrite").parquet(str(release / table))


def concept_rows() -> list[dict[str, Any]]:
    return [
        {
            "concept_id": cid,
            "concept_name": name,
            "domain_id": domain,
            "vocabulary_id": vocabulary,
            "concept_class_id": klass,
            "standard_concept": standard,
            "concept_code": code,
            "valid_start_date": date(1970, 1, 1),
            "valid_end_date": date(2099, 12, 31),
        }
        for cid, name, domain, vocabulary, klass, standard, code in CONCEPTS
    ]


def person(pid: int, gender: int, year: int) -> dict[str, Any]:
    return {
        "person_id": pid,
        "gender_concept_id": gender,
        "year_of_birth": year,
        "race_concept_id": 0,
        "ethnicity_concept_id": 0,
        "person_source_value": f"warehouse-pseudonym-{pid}",
    }


def condition(cid: int, pid: int, concept: int, source: str, day: date) -> dict[str, Any]:
    return {
        "condition_occurrence_id": cid,
        "person_id": pid,
        "condition_concept_id": concept,
        "condition_start_date": day,
        "condition_type_concept_id": EHR,
        "condition_source_value": source,
        "condition_source_concept_id": 0,
    }


def period(pid: int, start: date, end: date) -> dict[str, Any]:
    return {
        "observation_period_id": pid,
        "person_id": pid,
        "observation_period_start_date": start,
        "observation_period_end_date": end,
        "period_type_concept_id": EHR,
    }


def build_release(spark: Any, release: Path, extra_conditions: int = 0) -> None:
    """Six persons at site A, one at site B; conditions, a drug, a measurement, periods.

    `extra_conditions` adds that many diabetes records (for a "next release").
    """
    persons = [person(i, MALE if i % 2 else FEMALE, 1950 + 3 * i) for i in range(1, 7)]
    persons.append(person(7, FEMALE, 1990))
    write_rows(spark, release, "person", persons)
    conditions = [condition(i, i, T2_DIABETES, "44054006", date(2020, 1, i)) for i in range(1, 7)]
    conditions += [
        condition(7, 1, 0, UNMAPPED_CODE, date(2020, 2, 1)),
        condition(8, 2, 0, UNMAPPED_CODE, date(2020, 2, 2)),
        condition(9, 7, HYPERTENSION, "59621000", date(2020, 2, 3)),
    ]
    conditions += [
        condition(100 + i, 1 + i % 6, T2_DIABETES, "44054006", date(2021, 1, 1))
        for i in range(extra_conditions)
    ]
    write_rows(spark, release, "condition_occurrence", conditions)
    write_rows(
        spark,
        release,
        "drug_exposure",
        [
            {
                "drug_exposure_id": i,
                "person_id": i,
                "drug_concept_id": ASPIRIN,
                "drug_exposure_start_date": date(2020, 3, 1),
                "drug_exposure_end_date": date(2020, 3, 2),
                "drug_type_concept_id": EHR,
                "drug_source_value": "1191",
                "drug_source_concept_id": 0,
            }
            for i in range(1, 7)
        ],
    )
    write_rows(
        spark,
        release,
        "measurement",
        [
            {
                "measurement_id": i,
                "person_id": 1,
                "measurement_concept_id": GLUCOSE,
                "measurement_date": date(2020, 4, i),
                "measurement_type_concept_id": EHR,
                "value_as_number": 5.0 + i,
                "measurement_source_value": "2339-0",
            }
            for i in range(1, 6)
        ],
    )
    periods = [period(i, date(2015, 1, 1), date(2020, 6, 30)) for i in range(1, 7)]
    periods.append(period(7, date(2020, 1, 1), date(2020, 3, 1)))
    write_rows(spark, release, "observation_period", periods)
    write_rows(spark, release, "concept", concept_rows())


def write_crosswalk(spark: Any, folder: Path) -> None:
    rows = [("person", "site-a", "Patient", f"patient-fhir-{i}", i) for i in range(1, 7)]
    rows.append(("person", "site-b", "Patient", "patient-fhir-7", 7))
    spark.createDataFrame(rows, CROSSWALK_SCHEMA).write.mode("overwrite").parquet(str(folder))


LEDGER = {
    "run_id": "20260101T000000000000Z",
    "software": "omopflow 0.1.0",
    "staging": {
        "lines_read": 120,
        "items": 130,
        "file_problems": 0,
        "staged": 127,
        "quarantined": 3,
        "quarantined_by_reason": {"malformed JSON": 2, "missing id": 1},
    },
    "mapping": {
        "resources_in": 127,
        "resources_mapped": 100,
        "resources_excluded": 27,
        "excluded_by_reason": {"not mapped": 20, "entered-in-error": 7},
        "by_type": {
            "Patient": {"in": 7, "mapped": 7, "excluded": {}},
            "Condition": {"in": 16, "mapped": 9, "excluded": {"entered-in-error": 7}},
        },
    },
    "rows": {"person": 7, "condition_occurrence": 9, "observation_period": 7},
}
