"""Coverage shares and the Usagi import file."""

from __future__ import annotations

import csv

from vocabularies.coverage import NO_VOCABULARY, coverage, unmapped_codes, write_usagi_csv

SNOMED = "http://snomed.info/sct"
LOCAL = "http://example.org/local"
COLUMNS = (
    "resource_type string, code_system string, code_vocabulary_id string, "
    "code_source_value string, code_display string, code_concept_id long, "
    "code_source_concept_id long"
)


def records(spark):
    return spark.createDataFrame(
        [
            ("Condition", SNOMED, "SNOMED", "111", "mapped", 1001, 1001),
            ("Condition", SNOMED, "SNOMED", "111", "mapped", 1001, 1001),
            ("Condition", SNOMED, "SNOMED", "777", "known, unmapped", 0, 1012),
            ("Condition", LOCAL, None, "X1", 'local "quoted", with comma', 0, 0),
            ("Condition", LOCAL, None, "X1", 'local "quoted", with comma', 0, 0),
            ("Procedure", SNOMED, "SNOMED", "999", None, 0, 0),
        ],
        COLUMNS,
    )


def test_coverage_gives_mapped_share_per_resource_type_and_vocabulary(spark):
    rows = {
        (r.resource_type, r.vocabulary_id): (r.records, r.mapped_records, r.mapped_share)
        for r in coverage(records(spark), "code").collect()
    }
    assert rows == {
        ("Condition", "SNOMED"): (3, 2, 0.6667),
        ("Condition", NO_VOCABULARY): (2, 0, 0.0),
        ("Procedure", "SNOMED"): (1, 0, 0.0),
    }


def test_unmapped_codes_are_counted_most_frequent_first(spark):
    rows = unmapped_codes(records(spark), "code").collect()
    assert [(r.system, r.code, r["count"]) for r in rows] == [
        (LOCAL, "X1", 2),
        (SNOMED, "777", 1),
        (SNOMED, "999", 1),
    ]


def test_usagi_csv_is_one_quoted_file_with_usagi_columns(spark, tmp_path):
    path = write_usagi_csv(records(spark), tmp_path / "usagi" / "unmapped.csv", "code")

    assert sorted(p.name for p in path.parent.iterdir()) == ["unmapped.csv"]
    with path.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == [
        "sourceCode",
        "sourceName",
        "sourceFrequency",
        "sourceAutoAssignedConceptIds",
        "ADD_INFO:system",
        "ADD_INFO:vocabulary_id",
        "ADD_INFO:source_concept_id",
    ]
    first = rows[0]
    assert (first["sourceCode"], first["sourceName"], first["sourceFrequency"]) == (
        "X1",
        'local "quoted", with comma',
        "2",
    )
    no_display = next(r for r in rows if r["sourceCode"] == "999")
    assert no_display["sourceName"] == "999"  # Usagi needs a name to match on
    assert {r["sourceCode"] for r in rows} == {"X1", "777", "999"}
