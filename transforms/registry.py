"""The table modules in the order they run. Each table runs after the tables whose ids it
looks up: locations, care sites and providers before persons and visits; persons and visits
before every clinical table."""

from __future__ import annotations

from types import ModuleType

from transforms import (
    care_site,
    condition_occurrence,
    death,
    device_exposure,
    drug_exposure,
    location,
    measurement,
    observation,
    person,
    procedure_occurrence,
    provider,
    visit_detail,
    visit_occurrence,
)

TABLE_MODULES: tuple[ModuleType, ...] = (
    location,
    care_site,
    provider,
    person,
    death,
    visit_occurrence,
    visit_detail,
    condition_occurrence,
    drug_exposure,
    procedure_occurrence,
    measurement,
    observation,
    device_exposure,
)

# The resource types the table modules read (`MappingContext.staged` refuses any other):
# staging parses only these with their R4 schema and keeps the rest as JSON.
MAPPED_TYPES = frozenset(
    {
        "AllergyIntolerance",
        "Condition",
        "Device",
        "DiagnosticReport",
        "Encounter",
        "Immunization",
        "Location",
        "Medication",
        "MedicationAdministration",
        "MedicationDispense",
        "MedicationRequest",
        "MedicationStatement",
        "Observation",
        "Organization",
        "Patient",
        "Practitioner",
        "PractitionerRole",
        "Procedure",
    }
)

# Staged resource types no table module reads yet: counted as excluded with this reason.
NOT_MAPPED_REASON = "resource type not mapped to OMOP"
