"""The run report on a tiny fake release: content, small cells, privacy, and how it renders."""

from __future__ import annotations

import re

import pytest

from omopflow.report import write_report
from omopflow.report.report import REPORT_FILE
from tests.report.browser import find_browser, open_page, png_pixels
from tests.report.release_fixtures import LEDGER, UNMAPPED_CODE, build_release, write_crosswalk


@pytest.fixture(scope="module")
def report(spark, tmp_path_factory) -> str:
    root = tmp_path_factory.mktemp("report")
    previous, release = root / "releases" / "r1", root / "releases" / "r2"
    build_release(spark, previous)
    build_release(spark, release, extra_conditions=6)
    write_crosswalk(spark, root / "restricted" / "crosswalk")
    gate = {
        "passed": False,
        "data_docs_index": str(release / "data_docs" / "index.html"),
        "errors": ["person.year_of_birth.plausible"],
        "warnings": [],
        "checks": [
            {
                "name": "person.year_of_birth.plausible",
                "severity": "error",
                "failed_rows": 2,
                "total_rows": 7,
                "failed_share": 2 / 7,
                "threshold": 0.0,
                "passed": False,
            }
        ],
        "skipped": {},
    }
    path = write_report(
        spark,
        release,
        LEDGER,
        previous_release=previous,
        gate=lambda: gate,  # as a run passes it: the gate may still be running
        crosswalk=root / "restricted" / "crosswalk",
    )
    assert path == release / REPORT_FILE
    return path.read_text(encoding="utf-8")


def _row(html: str, first_cell: str) -> list[str]:
    """The cells of the first table row starting with `first_cell`."""
    match = re.search(rf"<tr><td>{re.escape(first_cell)}</td>(.*?)</tr>", html)
    assert match, f"no row for {first_cell!r}"
    return re.findall(r"<td[^>]*>(.*?)</td>", match.group(1))


def test_a_site_with_one_person_shows_below_threshold(report):
    assert _row(report, "site-a") == ["6"]
    assert _row(report, "site-b") == ["&lt;5"]


def test_top_conditions_carry_vocabulary_names_and_per_site_counts(report):
    # concept id, name, records, persons, records at site-a, records at site-b
    assert _row(report, "201826") == ["Type 2 diabetes mellitus", "12", "6", "12", "0"]


def test_a_concept_seen_once_is_suppressed_everywhere(report):
    assert _row(report, "320128") == ["Essential hypertension", "&lt;5", "&lt;5", "0", "&lt;5"]


def test_unmapped_codes_are_listed_with_their_table(report):
    unmapped = report.split("unmapped source codes")[1].split("</table>")[0]
    assert _row(unmapped, "condition_occurrence") == ["(no source concept)", UNMAPPED_CODE, "&lt;5"]


def test_coverage_counts_records_with_a_standard_concept(report):
    coverage = report.split("Coverage by OMOP table")[1].split("</table>")[0]
    # 15 condition records, 2 of them unmapped (their source concept is 0)
    assert _row(coverage, "condition_occurrence") == ["(no source concept)", "15", "13", "86.7%"]


def test_changes_count_rows_added_since_the_previous_release(report):
    changes = report.split('id="changes"')[1]
    # previous rows, current rows, added, removed
    assert _row(changes, "condition_occurrence") == ["9", "15", "6", "0"]


def test_blocked_gate_shows_its_failed_check_and_links_data_docs(report):
    assert "Blocked: at least one error check failed." in report
    assert "person.year_of_birth.plausible" in report
    assert '<a href="data_docs/index.html">Data Docs</a>' in report


def test_ledger_flow_shows_quarantine_reasons(report):
    flow = report.split('id="flow"')[1].split("</section>")[0]
    assert "malformed JSON" in flow and "quarantined" in flow


def test_no_site_level_identifier_or_source_id_is_published(report):
    assert "patient-fhir-" not in report


def test_page_needs_no_network_and_runs_no_script(report):
    assert "<script" not in report
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", report)
    assert "<style>" in report


def test_missing_gate_result_is_stated(spark, tmp_path):
    build_release(spark, tmp_path / "r")
    html = write_report(spark, tmp_path / "r", {"run_id": "r"}).read_text(encoding="utf-8")
    assert "No validation result was recorded for this run" in html
    assert "No previous release." in html
    # without a crosswalk, everyone counts under one site
    assert _row(html, "all sites") == ["7"]


def test_threshold_below_one_is_refused(spark, tmp_path):
    with pytest.raises(ValueError, match="at least 1"):
        write_report(spark, tmp_path, {}, min_cell=0)


@pytest.fixture(scope="module")
def browser() -> str:
    found = find_browser()
    if found is None:
        pytest.skip("chromium is not installed (apt-get install -y chromium)")
    return found


def test_report_renders_without_console_messages(report, browser, tmp_path):
    page = tmp_path / "report.html"
    page.write_text(report, encoding="utf-8")
    messages = open_page(browser, page, tmp_path / "report.png")
    assert messages == []
    pixels = png_pixels(tmp_path / "report.png")
    assert pixels.std() > 20  # charts and tables, not a blank page


def test_browser_check_catches_a_console_error_and_a_blank_page(browser, tmp_path):
    # The check above must be able to fail: the same checks on a faulty and a blank page.
    faulty = tmp_path / "faulty.html"
    faulty.write_text('<!DOCTYPE html><script>console.error("boom")</script>', encoding="utf-8")
    assert any("boom" in m for m in open_page(browser, faulty, tmp_path / "faulty.png"))
    assert png_pixels(tmp_path / "faulty.png").std() == 0


def test_records_per_person_count_each_table_and_its_persons_by_site(spark, tmp_path):
    from omopflow.report.characterise import close_release, open_release, records_per_person

    build_release(spark, tmp_path / "release")
    write_crosswalk(spark, tmp_path / "crosswalk")
    release = open_release(spark, tmp_path / "release", tmp_path / "crosswalk")
    try:
        found = {p.table: p for p in records_per_person(release)}
    finally:
        close_release(release)
    assert sorted(found) == [
        "condition_occurrence",
        "drug_exposure",
        "measurement",
        "observation_period",
    ]
    conditions = found["condition_occurrence"]
    assert (conditions.records, conditions.persons) == (9, 7)
    assert conditions.persons_by_site == {"site-a": 6, "site-b": 1}
    assert found["drug_exposure"].persons_by_site == {"site-a": 6}
    measurement = found["measurement"]
    assert (measurement.records, measurement.persons, measurement.percentiles) == (
        5,
        1,
        (5.0, 5.0, 5.0, 5.0, 5.0),
    )
