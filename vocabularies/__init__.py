"""OMOP vocabularies: Athena release loading, source-to-standard map, domain routing.

- `athena`: `load_release(spark, dirs, cache_dir)` reads Athena folders (merged, cached as Parquet).
- `mapping`: `build_maps(spark, release)`, then `map_codings` / `map_code` add concept ids and the
  target domain (for routing) to any DataFrame of FHIR codings.
- `concepts`: every constant concept id by name; `supplement/` ships the ones partial releases lack.
- `coverage`: mapped shares for the run report and the unmapped codes as a Usagi import file.
- `subset`: cut a small release for the codes of an input; `sample/` is the one the project ships.

Importing this package imports no Spark; every function takes the session or DataFrames.
"""
