"""Every constant OMOP concept id the pipeline writes, by name.

Each id was checked against the Athena subset in ../shared/data/vocab, the HL7 FHIR-to-OMOP
IG source or the OHDSI CDM v5.4 docs; ids absent from the subset ship in
`vocabularies/supplement/CONCEPT.csv` (see its SOURCE.txt for the evidence per id).
Transforms import names from here and never write a bare number.
"""

from __future__ import annotations

# No matching concept: the OMOP convention for unmapped codes (IG f2o-031..033).
NO_MATCHING_CONCEPT = 0

# Type concepts (v5.4 'Type Concept' vocabulary): where a record came from.
EHR = 32817
EHR_ADMINISTRATION_RECORD = 32818
EHR_ENCOUNTER_RECORD = 32827
EHR_PRESCRIPTION = 32838
GOVERNMENT_REPORT = 32848
LAB = 32856
PATIENT_SELF_REPORT = 32865

# Observation period type (legacy 'Obs Period Type' vocabulary, still the usual choice).
PERIOD_COVERING_HEALTHCARE_ENCOUNTERS = 44814724

# Visit concepts ('Visit' vocabulary).
INPATIENT_VISIT = 9201
OUTPATIENT_VISIT = 9202
EMERGENCY_ROOM_VISIT = 9203
EMERGENCY_ROOM_AND_INPATIENT_VISIT = 262
HOME_VISIT = 581476
PHARMACY_VISIT = 581458
AMBULANCE_VISIT = 581478
LABORATORY_VISIT = 32036
TELEHEALTH_VISIT = 5083
CASE_MANAGEMENT_VISIT = 38004193
NON_HOSPITAL_INSTITUTION_VISIT = 42898160

# Gender ('Gender' vocabulary). The IG maps FHIR 'other' to 44814653 (PCORNet 'Unknown').
MALE = 8507
FEMALE = 8532
GENDER_UNKNOWN = 8551
GENDER_OTHER_PCORNET = 44814653

# Race ('Race' vocabulary).
WHITE = 8527
BLACK_OR_AFRICAN_AMERICAN = 8516
ASIAN = 8515
AMERICAN_INDIAN_OR_ALASKA_NATIVE = 8657
NATIVE_HAWAIIAN_OR_OTHER_PACIFIC_ISLANDER = 8557
MORE_THAN_ONE_RACE = 1546847

# Ethnicity ('Ethnicity' vocabulary).
HISPANIC_OR_LATINO = 38003563
NOT_HISPANIC_OR_LATINO = 38003564

# Language of CONCEPT_SYNONYM rows holding Korean names (EDI/KCD7 load scripts).
KOREAN_LANGUAGE = 4175771

# Relationship ids the source-to-standard map follows.
MAPS_TO = "Maps to"
MAPS_TO_VALUE = "Maps to value"
STANDARD = "S"
