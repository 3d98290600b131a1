"""FHIR to OMOP: flattening views, one module per OMOP target table, derived tables."""
