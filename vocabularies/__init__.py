"""OMOP vocabularies: Athena release loading, source-to-standard map, domain routing."""
