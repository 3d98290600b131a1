"""Generated Spark schemas of FHIR R4 resources (`python -m omopflow.fhir_schema --write`)."""
