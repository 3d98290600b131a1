"""Great Expectations suites per OMOP table and the validation gate.

- `expectations.gate.run_gate(spark, tables, concept, report_dir, ledger=None)` validates a
  candidate release and returns a `GateResult` (`passed`, `errors`, `warnings`, `checks`,
  `skipped`, `data_docs_index`, `seconds`, `to_json()`).
- `python -m expectations.generate` writes `expectations/suites/<table>.json` from the CDM
  spec and the DQD control files in `expectations/dqd/`.

See docs/quality.md. Importing this package imports neither pyspark nor great_expectations.
"""
