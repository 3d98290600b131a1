"""Concept ids the clinical-event transforms write that `vocabularies/concepts.py` lacks.

Each is named once here; transforms never write a bare number. Sources: the HL7 FHIR-to-OMOP
IG ConceptMaps (input/fsh/ConceptMaps/AllergyConceptMaps.fsh) and the OMOP 'Meas Value
Operator' and SNOMED 'Meas Value' concepts used by OHDSI ETLs.
"""

from __future__ import annotations

# Quantity.comparator -> operator_concept_id ('Meas Value Operator' vocabulary).
LESS_THAN = 4171756
LESS_THAN_OR_EQUAL = 4171754
GREATER_THAN = 4172704
GREATER_THAN_OR_EQUAL = 4171755
COMPARATOR_CONCEPTS = {
    "<": LESS_THAN,
    "<=": LESS_THAN_OR_EQUAL,
    ">": GREATER_THAN,
    ">=": GREATER_THAN_OR_EQUAL,
}

# valueBoolean -> value_as_concept_id (SNOMED qualifier values, domain 'Meas Value').
YES = 4188539
NO = 4188540

# AllergyIntolerance category -> observation_concept_id (IG ConceptMaps AllergyType and
# IntoleranceType), keyed by (type, category).
ALLERGY_TO_FOOD = 4188027
ALLERGY_TO_DRUG = 439224
ENVIRONMENTAL_ALLERGY = 4144450
ALLERGIC_DISPOSITION = 43530807
INTOLERANCE_TO_FOOD = 4340252
INTOLERANCE_TO_DRUG = 4240582
PROPENSITY_TO_ADVERSE_REACTION = 4172024
INTOLERANCE_TO_SUBSTANCE = 36684107
ALLERGY_CATEGORY_CONCEPTS = {
    ("allergy", "food"): ALLERGY_TO_FOOD,
    ("allergy", "medication"): ALLERGY_TO_DRUG,
    ("allergy", "environment"): ENVIRONMENTAL_ALLERGY,
    ("allergy", "biologic"): ALLERGIC_DISPOSITION,
    ("intolerance", "food"): INTOLERANCE_TO_FOOD,
    ("intolerance", "medication"): INTOLERANCE_TO_DRUG,
    ("intolerance", "environment"): PROPENSITY_TO_ADVERSE_REACTION,
    ("intolerance", "biologic"): INTOLERANCE_TO_SUBSTANCE,
}

# OMOP domains a clinical event can be routed to, and the table each fills.
DOMAIN_TABLES = {
    "Condition": "condition_occurrence",
    "Drug": "drug_exposure",
    "Procedure": "procedure_occurrence",
    "Measurement": "measurement",
    "Observation": "observation",
    "Device": "device_exposure",
}
# Standard concepts of any other domain (e.g. 'Spec Anatomic Site', 'Meas Value') land here.
FALLBACK_DOMAIN = "Observation"
