"""The suite files: generated from the spec, up to date, with DQD thresholds and severities."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from expectations.checks import ERROR, WARNING, checks_for_table
from expectations.gate import load_suite, suite_checks
from expectations.generate import main


def test_suite_files_are_up_to_date() -> None:
    assert main(["--check"]) == 0, "run python -m expectations.generate"


def test_generate_writes_one_suite_per_table(tmp_path: Path) -> None:
    assert main(["--out", str(tmp_path)]) == 0
    names = {p.stem for p in tmp_path.glob("*.json")}
    assert {"person", "visit_occurrence", "measurement", "death", "ledger"} <= names
    assert "concept" not in names  # vocabulary tables come from Athena, not the ETL


def test_suite_round_trips_to_checks() -> None:
    assert suite_checks("person") == checks_for_table("person")


def test_dqd_percent_threshold_becomes_a_share() -> None:
    checks = {c.name: c for c in checks_for_table("condition_occurrence")}
    name = "standardConceptRecordCompleteness.condition_occurrence.condition_concept_id"
    assert checks[name].threshold == 0.05  # DQD: 5 (percent)


def test_wrong_concepts_block_and_unmapped_concepts_warn() -> None:
    checks = {c.name: c for c in checks_for_table("condition_occurrence")}
    field = "condition_occurrence.condition_concept_id"
    assert checks[f"isStandardValidConcept.{field}"].severity == ERROR
    assert checks[f"fkDomain.{field}"].severity == ERROR
    assert checks[f"standardConceptRecordCompleteness.{field}"].severity == WARNING


def test_early_dates_warn_but_future_dates_block() -> None:
    checks = {c.name: c for c in checks_for_table("visit_occurrence")}
    assert checks["plausibleValueLow.visit_occurrence.visit_start_date"].severity == WARNING
    assert checks["plausibleValueHigh.visit_occurrence.visit_start_date"].severity == ERROR


def test_end_dates_after_today_only_warn() -> None:
    # A prescription written yesterday for 90 days ends in the future; that is not wrong.
    checks = {c.name: c for c in checks_for_table("drug_exposure")}
    assert checks["plausibleValueHigh.drug_exposure.drug_exposure_end_date"].severity == WARNING
    assert checks["plausibleValueHigh.drug_exposure.drug_exposure_start_date"].severity == ERROR


def test_unusual_drug_supply_only_warns() -> None:
    # ETL-Synthea's own output has half its days_supply above DQD's 365: unusual, not wrong.
    checks = {c.name: c for c in checks_for_table("drug_exposure")}
    assert checks["plausibleValueHigh.drug_exposure.days_supply"].severity == WARNING


def test_expectations_carry_gx_severity_and_name() -> None:
    expectation = load_suite("person")["expectations"][0]
    assert expectation["type"] == "expect_column_max_to_be_between"
    assert expectation["severity"] in {"critical", "warning"}
    assert expectation["kwargs"]["column"] == expectation["description"].split(" ")[0]


def test_importing_the_gate_imports_neither_spark_nor_gx() -> None:
    # The CLI and Airflow DAGs import the gate at top level; GX alone costs seconds.
    code = (
        "import sys, expectations.gate; "
        "print(sorted(m for m in ('pyspark', 'great_expectations') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
