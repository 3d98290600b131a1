"""The gate blocks each seeded fault by its named check, and lets a clean release through."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from gate_fixtures import (
    AS_OF,
    HBA1C,
    ICD10_E11,
    MICROMOLE_PER_LITER,
    SERUM_CREATININE,
    clean_rows,
)

from expectations.gate import GateResult, run_gate

BALANCED_LEDGER = {
    "staging": {"lines_read": 10, "staged": 9, "quarantined": 1},
    "mapping": {"resources_in": 9, "resources_mapped": 8, "resources_excluded": 1},
}

Rows = dict[str, list[dict[str, Any]]]


@pytest.fixture
def gate(
    spark: Any, cdm_frames: Callable[[Rows], dict[str, Any]], concept: Any, tmp_path: Path
) -> Callable[..., GateResult]:
    def run(rows: Rows, ledger: Any = BALANCED_LEDGER) -> GateResult:
        return run_gate(spark, cdm_frames(rows), concept, tmp_path, ledger, as_of=AS_OF)

    return run


def blocked_by(result: GateResult) -> set[str]:
    return {check.name for check in result.errors}


def test_clean_release_passes_with_data_docs(gate: Callable[..., GateResult]) -> None:
    result = gate(clean_rows())
    assert result.errors == []
    assert result.passed
    assert result.data_docs_index is not None and result.data_docs_index.is_file()
    assert result.data_docs_index.name == "index.html"
    assert result.to_json()["passed"] is True


def test_null_person_id_blocks(gate: Callable[..., GateResult]) -> None:
    rows = clean_rows()
    rows["condition_occurrence"][0]["person_id"] = None
    result = gate(rows)
    assert not result.passed
    assert "isRequired.condition_occurrence.person_id" in blocked_by(result)


def test_duplicate_primary_key_blocks(gate: Callable[..., GateResult]) -> None:
    rows = clean_rows()
    rows["condition_occurrence"].append(dict(rows["condition_occurrence"][0]))
    result = gate(rows)
    assert "isPrimaryKey.condition_occurrence.condition_occurrence_id" in blocked_by(result)
    check = next(c for c in result.checks if c.check_type == "isPrimaryKey" and not c.passed)
    assert (check.failed_rows, check.total_rows) == (1, 2)


def test_visit_ending_before_it_starts_blocks(gate: Callable[..., GateResult]) -> None:
    rows = clean_rows()
    rows["visit_occurrence"][1]["visit_end_date"] = date(2020, 4, 30)
    assert "plausibleStartBeforeEnd.visit_occurrence.visit_start_date" in blocked_by(gate(rows))


def test_death_before_birth_blocks(gate: Callable[..., GateResult]) -> None:
    rows = clean_rows()
    rows["death"] = [{"person_id": 2, "death_date": date(1970, 1, 1)}]
    assert "plausibleAfterBirth.death.death_date" in blocked_by(gate(rows))


def test_events_long_after_death_block(gate: Callable[..., GateResult]) -> None:
    rows = clean_rows()
    rows["death"] = [{"person_id": 1, "death_date": date(2019, 1, 1)}]
    assert "plausibleBeforeDeath.condition_occurrence.condition_start_date" in blocked_by(
        gate(rows)
    )


def test_birth_in_the_future_blocks(gate: Callable[..., GateResult]) -> None:
    rows = clean_rows()
    rows["person"][1]["year_of_birth"] = AS_OF.year + 2
    assert "plausibleValueHigh.person.year_of_birth" in blocked_by(gate(rows))


def test_non_standard_concept_blocks(gate: Callable[..., GateResult]) -> None:
    rows = clean_rows()
    rows["condition_occurrence"][0]["condition_concept_id"] = ICD10_E11
    errors = blocked_by(gate(rows))
    assert "isStandardValidConcept.condition_occurrence.condition_concept_id" in errors


def test_concept_of_wrong_domain_blocks(gate: Callable[..., GateResult]) -> None:
    rows = clean_rows()
    rows["condition_occurrence"][0]["condition_concept_id"] = HBA1C
    assert "fkDomain.condition_occurrence.condition_concept_id" in blocked_by(gate(rows))


def test_concept_missing_from_vocabulary_blocks(gate: Callable[..., GateResult]) -> None:
    rows = clean_rows()
    rows["condition_occurrence"][0]["condition_type_concept_id"] = 999_999_999
    assert "isForeignKey.condition_occurrence.condition_type_concept_id" in blocked_by(gate(rows))


def test_orphan_person_id_blocks(gate: Callable[..., GateResult]) -> None:
    rows = clean_rows()
    rows["measurement"][0]["person_id"] = 3
    assert "isForeignKey.measurement.person_id" in blocked_by(gate(rows))


def test_orphan_visit_occurrence_id_blocks(gate: Callable[..., GateResult]) -> None:
    rows = clean_rows()
    rows["condition_occurrence"][0]["visit_occurrence_id"] = 99
    assert "isForeignKey.condition_occurrence.visit_occurrence_id" in blocked_by(gate(rows))


def test_implausible_measurement_value_blocks(gate: Callable[..., GateResult]) -> None:
    rows = clean_rows()
    rows["measurement"][0]["value_as_number"] = 5000.0  # creatinine, DQD high is 200 umol/L
    name = (
        f"plausibleValueHigh.measurement.value_as_number.{SERUM_CREATININE}.{MICROMOLE_PER_LITER}"
    )
    assert name in blocked_by(gate(rows))


def test_measurement_in_the_future_blocks(gate: Callable[..., GateResult]) -> None:
    rows = clean_rows()
    rows["measurement"][0]["measurement_date"] = date(2030, 1, 1)
    assert "plausibleValueHigh.measurement.measurement_date" in blocked_by(gate(rows))


def test_overlapping_observation_periods_block(gate: Callable[..., GateResult]) -> None:
    rows = clean_rows()
    rows["observation_period"].append(
        {"observation_period_id": 3, "person_id": 1, "period_type_concept_id": 32817}
        | {"observation_period_start_date": date(2021, 1, 2)}
        | {"observation_period_end_date": date(2022, 1, 1)}
    )
    assert "measureObservationPeriodOverlap.observation_period" in blocked_by(gate(rows))


def test_missing_required_table_blocks(gate: Callable[..., GateResult]) -> None:
    rows = clean_rows()
    del rows["observation_period"]
    assert "cdmTable.observation_period" in blocked_by(gate(rows))


def test_unmapped_concept_zero_is_only_a_warning(gate: Callable[..., GateResult]) -> None:
    rows = clean_rows()
    rows["condition_occurrence"][0]["condition_concept_id"] = 0
    result = gate(rows)
    assert result.passed
    warned = {c.name for c in result.warnings}
    assert "standardConceptRecordCompleteness.condition_occurrence.condition_concept_id" in warned
    assert "sourceValueCompleteness.condition_occurrence.condition_source_value" in warned


def test_ledger_that_does_not_add_up_blocks(gate: Callable[..., GateResult]) -> None:
    ledger = {
        "staging": {"lines_read": 10, "staged": 8, "quarantined": 1},
        "mapping": BALANCED_LEDGER["mapping"],
    }
    result = gate(clean_rows(), ledger=ledger)
    assert blocked_by(result) == {"ledgerSum.ledger.staging"}
    staging = next(c for c in result.errors)
    assert (staging.failed_rows, staging.total_rows) == (1, 10)


def test_ledger_without_counts_is_skipped_with_a_note(gate: Callable[..., GateResult]) -> None:
    result = gate(clean_rows(), ledger={"staging": {"lines_read": 10}})
    assert result.passed
    assert "quarantined" in result.skipped["ledgerSum.ledger.staging"]
    assert "ledgerSum.ledger.mapping" in result.skipped


def test_concept_table_without_needed_columns_is_refused(
    spark: Any, cdm_frames: Callable[[Rows], dict[str, Any]], concept: Any, tmp_path: Path
) -> None:
    with pytest.raises(ValueError, match="standard_concept"):
        run_gate(spark, cdm_frames(clean_rows()), concept.drop("standard_concept"), tmp_path)
