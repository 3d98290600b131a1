"""End to end on the shipped sample, with broken lines mixed in, run twice (the session's
`sample_runs`, shared with the query-docs tests)."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from omopflow.cli import SAMPLE_INPUT, SAMPLE_VOCAB
from tests.conftest import table_bytes


def _input_resource_bodies(folder: Path, resource_type: str) -> list[dict]:
    """The resources of one type in the sample (one per id), read with plain Python."""
    found = {}
    for path in folder.rglob("*.gz"):
        text = gzip.decompress(path.read_bytes()).decode("utf-8")
        if path.name.endswith(".ndjson.gz"):
            resources = [json.loads(line) for line in text.splitlines() if line.strip()]
        else:
            resources = [e["resource"] for e in json.loads(text)["entry"]]
        found.update({r["id"]: r for r in resources if r["resourceType"] == resource_type})
    return list(found.values())


def _input_resources(folder: Path, resource_type: str) -> set[str]:
    """Ids of one type in the sample, read with plain Python as an independent count."""
    return {r["id"] for r in _input_resource_bodies(folder, resource_type)}


@pytest.fixture(scope="module")
def runs(sample_runs):
    return sample_runs.config, sample_runs.first, sample_runs.first_tables, sample_runs.second


def test_every_patient_becomes_a_person(runs, spark):
    config, first, _, _ = runs
    people = spark.read.parquet(str(config.out_dir / "current" / "person"))
    assert people.count() == len(_input_resources(SAMPLE_INPUT, "Patient")) == first.rows["person"]


def _omb_codes(patient: dict, url: str) -> list[str]:
    """The ombCategory codes of a Patient's US Core extension `url`, read with plain Python."""
    return [
        part["valueCoding"]["code"]
        for ext in patient.get("extension", [])
        if ext["url"] == url
        for part in ext.get("extension", [])
        if part["url"] == "ombCategory"
    ][:1]


def test_race_and_ethnicity_come_from_the_us_core_extensions(runs, spark):
    from collections import Counter

    from transforms.person import US_CORE_ETHNICITY, US_CORE_RACE

    config, _, _, _ = runs
    patients = _input_resource_bodies(SAMPLE_INPUT, "Patient")
    people = spark.read.parquet(str(config.out_dir / "current" / "person")).collect()
    # White (OMB 2106-3) and Not Hispanic or Latino (2186-5) are in every Synthea sample.
    checks = (
        (US_CORE_RACE, "race", "2106-3", 8527),
        (US_CORE_ETHNICITY, "ethnicity", "2186-5", 38003564),
    )
    for url, column, code, concept_id in checks:
        expected = Counter(c for p in patients for c in _omb_codes(p, url))
        found = Counter(r[f"{column}_source_value"] for r in people if r[f"{column}_source_value"])
        assert found == expected and expected[code] > 0, column
        concepts = {
            r[f"{column}_concept_id"] for r in people if r[f"{column}_source_value"] == code
        }
        assert concepts == {concept_id}, column


def test_every_encounter_is_a_visit_or_an_exclusion(runs):
    _, first, _, _ = runs
    encounters = len(_input_resources(SAMPLE_INPUT, "Encounter"))
    by_type = first.ledger["mapping"]["by_type"]["Encounter"]
    assert by_type["in"] == encounters
    assert first.rows["visit_occurrence"] == by_type["mapped"]
    assert by_type["mapped"] + sum(by_type["excluded"].values()) == encounters


def test_ledger_adds_up_and_counts_broken_lines(runs):
    _, first, _, _ = runs
    staging = first.ledger["staging"]
    assert first.ledger["ledger_problems"] == []
    assert staging["items"] + staging["file_problems"] == staging["staged"] + staging["quarantined"]
    assert staging["quarantined_by_reason"] == {
        "malformed JSON": 1,
        "missing id": 1,
        "not a JSON object: array": 1,
    }


def test_duckdb_catalog_answers_queries(runs):
    import duckdb

    config, first, _, _ = runs
    with duckdb.connect(str(config.out_dir / "omop.duckdb"), read_only=True) as con:
        persons = con.execute("SELECT count(*) FROM person").fetchone()[0]
        visits_per_person = con.execute(
            "SELECT count(*) FROM visit_occurrence v JOIN person p USING (person_id)"
        ).fetchone()[0]
    assert persons == first.rows["person"]
    assert visits_per_person == first.rows["visit_occurrence"]


def test_no_source_identifier_reaches_the_published_person_table(runs, spark):
    config, _, _, _ = runs
    patient_ids = _input_resources(SAMPLE_INPUT, "Patient")
    values = {
        r[0]
        for r in spark.read.parquet(str(config.out_dir / "current" / "person"))
        .select("person_source_value")
        .collect()
    }
    assert values and not values & patient_ids


def test_second_run_on_the_same_input_gives_identical_tables(runs):
    _, first, first_tables, second = runs
    assert second.release != first.release
    for table in first.rows:
        assert table_bytes(second.release, table) == first_tables[table], table


def test_previous_release_stays_readable(runs):
    config, first, _, second = runs
    assert (config.out_dir / "current").resolve() == second.release
    assert (first.release / "person").is_dir()


def test_coverage_report_and_usagi_file_are_published(runs):
    _, first, _, _ = runs
    coverage = {(c["resource_type"], c["vocabulary_id"]): c for c in first.ledger["coverage"]}
    snomed_conditions = coverage[("Condition", "SNOMED")]
    assert 0 < snomed_conditions["mapped_records"] <= snomed_conditions["records"]
    usagi = first.release / "report" / "unmapped_codes_usagi.csv"
    assert usagi.read_text(encoding="utf-8").splitlines()[0].startswith("sourceCode,sourceName")


def test_the_release_carries_its_report_and_data_dictionary(runs):
    import csv

    _, _, _, second = runs
    html = (second.release / "report.html").read_text(encoding="utf-8")
    assert second.run_id in html and "Observation periods" in html
    with (second.release / "data_dictionary.csv").open(encoding="utf-8") as handle:
        described = {row["table"] for row in csv.DictReader(handle)}
    assert described == set(second.rows)


def test_the_report_of_the_sample_renders_in_a_browser(runs, tmp_path):
    from tests.report.browser import find_browser, open_page, png_pixels

    browser = find_browser()
    if browser is None:
        pytest.skip("chromium is not installed (make setup installs it where apt-get can)")
    _, _, _, second = runs
    messages = open_page(browser, second.release / "report.html", tmp_path / "report.png")
    assert messages == []
    assert png_pixels(tmp_path / "report.png").std() > 20  # charts and tables, not blank


def test_the_vocabulary_is_published_beside_the_clinical_tables(runs):
    import duckdb

    config, _, _, _ = runs
    with duckdb.connect(str(config.out_dir / "omop.duckdb"), read_only=True) as con:
        named = con.execute(
            "SELECT count(*) FROM condition_occurrence co "
            "JOIN concept c ON c.concept_id = co.condition_concept_id "
            "JOIN concept_ancestor ca ON ca.descendant_concept_id = c.concept_id"
        ).fetchone()[0]
    assert named > 0


def test_every_run_scans_its_release_for_identifiers(runs):
    _, first, _, _ = runs
    scan = first.ledger["leak_scan"]
    assert scan["clean"] and scan["findings"] == 0
    assert scan["needles_by_kind"]["name"] > 0 and scan["needles_by_kind"]["resource id"] > 0


def test_no_unmapped_code_is_one_the_vocabulary_could_map(runs):
    from vocabularies.ceiling import lost_mappings

    _, first, _, _ = runs
    usagi = first.release / "report" / "unmapped_codes_usagi.csv"
    assert lost_mappings(usagi, [SAMPLE_VOCAB]) == []
