"""A tiny clean CDM release (two persons) and a vocabulary of a dozen concepts.

Tests take `clean_rows()`, seed one fault, and run the gate on the result.
"""

from __future__ import annotations

import copy
from datetime import date, datetime
from typing import Any

AS_OF = date(2026, 6, 1)

MALE, FEMALE = 8507, 8532
WHITE, NOT_HISPANIC = 8527, 38003564
OUTPATIENT = 9202
EHR = 32817
TYPE_2_DIABETES = 201826
ICD10_E11 = 45576876  # non-standard source concept of type 2 diabetes
HBA1C = 3004410
PERCENT = 8554
SERUM_CREATININE = 37392176  # DQD range 10..200 umol/L
MICROMOLE_PER_LITER = 8749

CONCEPTS = [
    (MALE, "Gender", "Gender", "S"),
    (FEMALE, "Gender", "Gender", "S"),
    (WHITE, "Race", "Race", "S"),
    (NOT_HISPANIC, "Ethnicity", "Ethnicity", "S"),
    (OUTPATIENT, "Visit", "Visit", "S"),
    (EHR, "Type Concept", "Type Concept", "S"),
    (TYPE_2_DIABETES, "Condition", "Clinical Finding", "S"),
    (ICD10_E11, "Condition", "4-char billing code", None),
    (HBA1C, "Measurement", "Lab Test", "S"),
    (PERCENT, "Unit", "Unit", "S"),
    (SERUM_CREATININE, "Measurement", "Observable Entity", "S"),
    (MICROMOLE_PER_LITER, "Unit", "Unit", "S"),
]


def clean_rows() -> dict[str, list[dict[str, Any]]]:
    """Rows of a release that passes every error check (a fresh copy each call)."""
    person = {"gender_concept_id": FEMALE, "race_concept_id": WHITE}
    person |= {"ethnicity_concept_id": NOT_HISPANIC}
    rows: dict[str, list[dict[str, Any]]] = {
        "person": [
            {
                **person,
                "person_id": 1,
                "year_of_birth": 1960,
                "birth_datetime": datetime(1960, 3, 1),
            },
            {**person, "person_id": 2, "year_of_birth": 1975, "gender_concept_id": MALE},
        ],
        "observation_period": [
            {"observation_period_id": 1, "person_id": 1, "period_type_concept_id": EHR}
            | {"observation_period_start_date": date(2020, 1, 1)}
            | {"observation_period_end_date": date(2021, 1, 1)},
            {"observation_period_id": 2, "person_id": 2, "period_type_concept_id": EHR}
            | {"observation_period_start_date": date(2020, 5, 1)}
            | {"observation_period_end_date": date(2020, 6, 1)},
        ],
        "visit_occurrence": [
            {"visit_occurrence_id": 10, "person_id": 1, "visit_concept_id": OUTPATIENT}
            | {"visit_start_date": date(2020, 2, 1), "visit_end_date": date(2020, 2, 1)}
            | {"visit_type_concept_id": EHR, "visit_source_value": "AMB"},
            {"visit_occurrence_id": 20, "person_id": 2, "visit_concept_id": OUTPATIENT}
            | {"visit_start_date": date(2020, 5, 1), "visit_end_date": date(2020, 5, 2)}
            | {"visit_type_concept_id": EHR, "visit_source_value": "AMB"},
        ],
        "condition_occurrence": [
            {"condition_occurrence_id": 100, "person_id": 1, "visit_occurrence_id": 10}
            | {"condition_concept_id": TYPE_2_DIABETES, "condition_source_concept_id": ICD10_E11}
            | {"condition_start_date": date(2020, 2, 1), "condition_type_concept_id": EHR}
            | {"condition_source_value": "E11"},
        ],
        "measurement": [
            {"measurement_id": 1000, "person_id": 2, "visit_occurrence_id": 20}
            | {"measurement_concept_id": SERUM_CREATININE, "unit_concept_id": MICROMOLE_PER_LITER}
            | {"measurement_date": date(2020, 5, 1), "measurement_type_concept_id": EHR}
            | {"value_as_number": 80.0, "measurement_source_value": "2160-0"},
        ],
    }
    return copy.deepcopy(rows)


def concept_rows() -> list[dict[str, Any]]:
    return [
        {
            "concept_id": concept_id,
            "concept_name": f"concept {concept_id}",
            "domain_id": domain,
            "vocabulary_id": "test",
            "concept_class_id": concept_class,
            "standard_concept": standard,
            "concept_code": str(concept_id),
            "valid_start_date": date(1970, 1, 1),
            "valid_end_date": date(2099, 12, 31),
            "invalid_reason": None,
        }
        for concept_id, domain, concept_class, standard in CONCEPTS
    ]
