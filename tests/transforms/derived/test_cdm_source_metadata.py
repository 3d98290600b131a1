"""CDM_SOURCE and METADATA: the rows that tell tools what this release is."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Any

import pytest

from omopflow import __version__
from transforms.derived.cdm_source import CDM_VERSION_5_4, build_cdm_source
from transforms.derived.metadata import (
    IG_VERSION,
    INPUT_EXPORT,
    METADATA_CONCEPT,
    build_metadata,
    read_ig_version,
    run_metadata,
)

SOURCE = {
    "cdm_source_name": "Example Hospital FHIR export",
    "cdm_source_abbreviation": "EXH",
    "cdm_holder": "Example Hospital",
    "source_description": "Synthetic test data",
}


def test_cdm_source_row(spark: Any) -> None:
    frame = build_cdm_source(spark, SOURCE, "v5.0 29-FEB-24", date(2024, 3, 1))
    [row] = frame.collect()
    assert row.cdm_source_abbreviation == "EXH"
    assert row.cdm_version == "5.4"
    assert row.cdm_version_concept_id == CDM_VERSION_5_4 == 756265
    assert row.vocabulary_version == "v5.0 29-FEB-24"
    assert row.cdm_etl_reference == f"omopflow {__version__}"
    assert row.source_release_date == row.cdm_release_date == date(2024, 3, 1)
    assert row.source_documentation_reference is None


def test_cdm_source_keeps_a_configured_etl_reference_and_release_date(spark: Any) -> None:
    source = {**SOURCE, "cdm_etl_reference": "https://example.org/omopflow/v0.1.0"}
    frame = build_cdm_source(spark, source, "v5", date(2024, 3, 1), date(2024, 3, 2))
    [row] = frame.collect()
    assert row.cdm_etl_reference == "https://example.org/omopflow/v0.1.0"
    assert row.cdm_release_date == date(2024, 3, 2)


def test_cdm_source_without_holder_is_refused(spark: Any) -> None:
    source = {key: value for key, value in SOURCE.items() if key != "cdm_holder"}
    with pytest.raises(ValueError, match="needs a value for: cdm_holder"):
        build_cdm_source(spark, source, "v5", date(2024, 3, 1))


def test_cdm_source_abbreviation_too_long_is_refused_not_cut(spark: Any) -> None:
    source = {**SOURCE, "cdm_source_abbreviation": "X" * 26}
    with pytest.raises(ValueError, match="cdm_source_abbreviation is 26 characters"):
        build_cdm_source(spark, source, "v5", date(2024, 3, 1))


def test_cdm_source_unknown_setting_is_refused(spark: Any) -> None:
    with pytest.raises(ValueError, match="unknown cdm_source setting"):
        build_cdm_source(spark, {**SOURCE, "cdm_holer": "typo"}, "v5", date(2024, 3, 1))


def test_cdm_source_without_vocabulary_version_is_refused(spark: Any) -> None:
    with pytest.raises(ValueError, match="vocabulary version"):
        build_cdm_source(spark, SOURCE, " ", date(2024, 3, 1))


def test_ig_version_is_read_from_sushi_config(shared_data: Path) -> None:
    config = shared_data / "spec" / "hl7-fhir-omop-ig" / "sushi-config.yaml"
    assert read_ig_version(config) == "2.0.0-ballot"


def test_ig_version_missing_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "sushi-config.yaml"
    config.write_text("id: x\n", encoding="utf-8")
    with pytest.raises(ValueError, match="has no 'version'"):
        read_ig_version(config)


def test_metadata_has_one_row_per_fact_and_export(spark: Any) -> None:
    run = run_metadata("v5.0 29-FEB-24", ["site-a/export-1", "site-a/export-2"], "2.0.0-ballot")
    frame = build_metadata(spark, run, metadata_date=date(2024, 3, 1))
    rows = frame.collect()
    facts = sorted((row.name, row.value_as_string) for row in rows)
    assert (INPUT_EXPORT, "site-a/export-1") in facts
    assert (INPUT_EXPORT, "site-a/export-2") in facts
    assert (IG_VERSION, "2.0.0-ballot") in facts
    assert len(facts) == 5
    assert {row.metadata_concept_id for row in rows} == {METADATA_CONCEPT}
    assert {row.metadata_date for row in rows} == {date(2024, 3, 1)}
    assert sorted(row.metadata_id for row in rows) == [1, 2, 3, 4, 5]
    again = build_metadata(spark, run, metadata_date=date(2024, 3, 1))
    assert sorted(again.collect()) == sorted(rows)


def test_metadata_value_too_long_is_refused(spark: Any) -> None:
    with pytest.raises(ValueError, match="longer than 250 characters for: note"):
        build_metadata(spark, {"note": "x" * 251})
