"""omopflow: FHIR R4 exports to a pseudonymised, validated OMOP CDM v5.4 warehouse."""

__version__ = "0.1.0"
