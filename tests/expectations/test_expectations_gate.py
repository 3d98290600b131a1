"""The gate blocks each seeded fault by its named check, and lets a clean release through.

A gate run costs seconds of Spark planning, so the faults are seeded together into one
release, each in its own row (or person), and every test asserts that its own check caught
its own row.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from gate_fixtures import (
    AS_OF,
    EHR,
    HBA1C,
    ICD10_E11,
    MICROMOLE_PER_LITER,
    SERUM_CREATININE,
    clean_rows,
)

from expectations.flags import Counts
from expectations.gate import CheckResult, GateResult, ledger_sums, run_gate

BALANCED_LEDGER = {
    "staging": {"arrived": 10, "staged": 9, "quarantined": 1},
    "mapping": {"resources_in": 9, "resources_mapped": 8, "resources_excluded": 1},
}
UNBALANCED_LEDGER = {
    "staging": {"arrived": 10, "staged": 8, "quarantined": 1},
    "mapping": BALANCED_LEDGER["mapping"],
}

Rows = dict[str, list[dict[str, Any]]]
Gate = Callable[..., GateResult]


@pytest.fixture(scope="module")
def gate(
    spark: Any,
    cdm_frames: Callable[[Rows], dict[str, Any]],
    concept: Any,
    tmp_path_factory: pytest.TempPathFactory,
) -> Gate:
    def run(rows: Rows, ledger: Any = BALANCED_LEDGER) -> GateResult:
        report_dir = tmp_path_factory.mktemp("report")
        return run_gate(spark, cdm_frames(rows), concept, report_dir, ledger, as_of=AS_OF)

    return run


def condition(condition_id: int, **changes: Any) -> dict[str, Any]:
    """A copy of the clean condition row under a new id, with changes."""
    row = clean_rows()["condition_occurrence"][0]
    return row | {"condition_occurrence_id": condition_id, **changes}


def measurement(measurement_id: int, **changes: Any) -> dict[str, Any]:
    row = clean_rows()["measurement"][0]
    return row | {"measurement_id": measurement_id, **changes}


def faulty_rows() -> Rows:
    rows = clean_rows()
    rows["condition_occurrence"] += [
        condition(101, person_id=None),
        condition(100),  # the clean row's id again
        condition(102, condition_concept_id=ICD10_E11),
        condition(103, condition_concept_id=HBA1C),
        condition(104, visit_occurrence_id=999),
        condition(105, condition_type_concept_id=999_999_999),
    ]
    rows["visit_occurrence"].append(
        rows["visit_occurrence"][0]
        | {"visit_occurrence_id": 30, "visit_start_date": date(2020, 3, 1)}
        | {"visit_end_date": date(2020, 2, 28)}
    )
    rows["person"].append(rows["person"][1] | {"person_id": 3, "year_of_birth": AS_OF.year + 2})
    rows["death"] = [{"person_id": 3, "death_date": date(2000, 1, 1), "death_type_concept_id": EHR}]
    rows["measurement"] += [
        measurement(1001, person_id=99),
        measurement(1002, value_as_number=5000.0),  # creatinine; DQD high is 200 umol/L
        measurement(1003, measurement_date=date(2030, 1, 1)),
    ]
    rows["observation_period"].append(
        rows["observation_period"][0]
        | {"observation_period_id": 3, "observation_period_start_date": date(2021, 1, 2)}
        | {"observation_period_end_date": date(2022, 1, 1)}
    )
    return rows


@pytest.fixture(scope="module")
def clean(gate: Gate) -> GateResult:
    return gate(clean_rows())


@pytest.fixture(scope="module")
def faulty(gate: Gate) -> GateResult:
    return gate(faulty_rows(), ledger=UNBALANCED_LEDGER)


def blocking(result: GateResult, name: str) -> CheckResult:
    """The failed error-level check of that name (fails the test if it did not block)."""
    found = {check.name: check for check in result.errors}
    assert name in found, f"{name} did not block; errors: {sorted(found)}"
    return found[name]


def test_clean_release_passes(clean: GateResult) -> None:
    assert clean.errors == []
    assert clean.passed
    assert clean.to_json()["passed"] is True
    assert clean.seconds > 0


def test_clean_release_has_data_docs(clean: GateResult) -> None:
    assert clean.data_docs_index is not None
    assert clean.data_docs_index.name == "index.html"
    assert clean.data_docs_index.parent.name == "data_docs"
    assert clean.data_docs_index.is_file()


def test_faulty_release_is_blocked(faulty: GateResult) -> None:
    assert not faulty.passed
    assert not faulty.to_json()["passed"]


def test_null_person_id_blocks(faulty: GateResult) -> None:
    check = blocking(faulty, "isRequired.condition_occurrence.person_id")
    assert check.failed_rows == 1


def test_duplicate_primary_key_blocks(faulty: GateResult) -> None:
    check = blocking(faulty, "isPrimaryKey.condition_occurrence.condition_occurrence_id")
    assert check.failed_rows == 1


def test_visit_ending_before_it_starts_blocks(faulty: GateResult) -> None:
    check = blocking(faulty, "plausibleStartBeforeEnd.visit_occurrence.visit_start_date")
    assert (check.failed_rows, check.total_rows) == (1, 3)


def test_death_before_birth_blocks(faulty: GateResult) -> None:
    assert blocking(faulty, "plausibleAfterBirth.death.death_date").failed_rows == 1


def test_birth_in_the_future_blocks(faulty: GateResult) -> None:
    assert blocking(faulty, "plausibleValueHigh.person.year_of_birth").failed_rows == 1


def test_non_standard_concept_blocks(faulty: GateResult) -> None:
    name = "isStandardValidConcept.condition_occurrence.condition_concept_id"
    assert blocking(faulty, name).failed_rows == 1


def test_concept_of_wrong_domain_blocks(faulty: GateResult) -> None:
    name = "fkDomain.condition_occurrence.condition_concept_id"
    assert blocking(faulty, name).failed_rows == 1


def test_concept_missing_from_vocabulary_blocks(faulty: GateResult) -> None:
    name = "isForeignKey.condition_occurrence.condition_type_concept_id"
    assert blocking(faulty, name).failed_rows == 1


def test_orphan_person_id_blocks(faulty: GateResult) -> None:
    assert blocking(faulty, "isForeignKey.measurement.person_id").failed_rows == 1


def test_orphan_visit_occurrence_id_blocks(faulty: GateResult) -> None:
    name = "isForeignKey.condition_occurrence.visit_occurrence_id"
    assert blocking(faulty, name).failed_rows == 1


def test_implausible_measurement_value_blocks(faulty: GateResult) -> None:
    name = (
        f"plausibleValueHigh.measurement.value_as_number.{SERUM_CREATININE}.{MICROMOLE_PER_LITER}"
    )
    assert blocking(faulty, name).failed_rows == 1


def test_measurement_in_the_future_blocks(faulty: GateResult) -> None:
    assert blocking(faulty, "plausibleValueHigh.measurement.measurement_date").failed_rows == 1


def test_overlapping_observation_periods_block(faulty: GateResult) -> None:
    check = blocking(faulty, "measureObservationPeriodOverlap.observation_period")
    assert (check.failed_rows, check.total_rows) == (1, 2)  # persons, as DQD counts


def test_ledger_that_does_not_add_up_blocks(faulty: GateResult) -> None:
    check = blocking(faulty, "ledgerSum.ledger.staging")
    assert (check.failed_rows, check.total_rows) == (1, 10)
    assert "ledgerSum.ledger.mapping" not in {c.name for c in faulty.errors}


def test_concept_zero_is_not_a_vocabulary_failure(gate: Gate) -> None:
    rows = clean_rows()
    rows["condition_occurrence"][0]["condition_concept_id"] = 0
    result = gate(rows)
    assert result.passed
    warned = {c.name for c in result.warnings}
    assert "standardConceptRecordCompleteness.condition_occurrence.condition_concept_id" in warned
    assert "sourceValueCompleteness.condition_occurrence.condition_source_value" in warned


def test_missing_required_table_blocks(gate: Gate) -> None:
    rows = {"person": clean_rows()["person"]}
    result = gate(rows)
    assert blocking(result, "cdmTable.observation_period").failed_rows == 1


def test_ledger_without_counts_is_skipped_with_a_note() -> None:
    counts, skipped = ledger_sums({"staging": {"arrived": 10}})
    assert counts == {}
    assert "quarantined" in skipped["ledgerSum.ledger.staging"]
    assert "ledgerSum.ledger.mapping" in skipped


def test_no_ledger_skips_both_sums() -> None:
    counts, skipped = ledger_sums(None)
    assert counts == {}
    assert set(skipped) == {"ledgerSum.ledger.staging", "ledgerSum.ledger.mapping"}


def test_concept_table_without_needed_columns_is_refused(
    spark: Any, cdm_frames: Callable[[Rows], dict[str, Any]], concept: Any, tmp_path: Path
) -> None:
    with pytest.raises(ValueError, match="standard_concept"):
        run_gate(spark, cdm_frames(clean_rows()), concept.drop("standard_concept"), tmp_path)


def test_distinct_value_checks_count_values_and_persons_not_rows(
    cdm_frames: Callable[[Rows], dict[str, Any]], concept: Any
) -> None:
    """Keys, source values and persons are counted once each however many rows hold them;
    a null is no value."""
    from expectations.flags import build_lookups, count_failures, plan_table
    from expectations.gate import suite_checks

    rows = clean_rows()
    rows["condition_occurrence"] = [
        condition(100),  # E11, mapped
        condition(101, condition_concept_id=0),  # E11 again, unmapped here
        condition(102, condition_concept_id=0, condition_source_value="X99"),
        condition(103, condition_concept_id=0, condition_source_value="X99"),
        condition(103, condition_concept_id=0, condition_source_value=None),  # id repeated
    ]
    tables = cdm_frames(rows)
    lookups = build_lookups(concept, tables, AS_OF)
    lookups.person_count = 2
    table = "condition_occurrence"
    plan = plan_table(table, tables[table], suite_checks(table), lookups)
    total_rows, counts = count_failures(table, tables[table], plan.runnable, lookups)
    assert total_rows == 5
    # One row beyond the first of id 103, out of all rows.
    assert counts[f"isPrimaryKey.{table}.condition_occurrence_id"] == Counts(1, 5)
    # Source values E11 and X99 both have an unmapped row; there are two values.
    assert counts[f"sourceValueCompleteness.{table}.condition_source_value"] == Counts(2, 2)
    # Person 2 has no condition: one of the two persons.
    assert counts[f"measurePersonCompleteness.{table}"] == Counts(1, 2)
