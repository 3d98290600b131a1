"""Staging: every line staged or quarantined with its reason, file and line number."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from omopflow.landing import discover
from omopflow.staging import SCHEMA_FAILURE, STAGED_META, StagingPaths, read_staged, stage
from tests.fhir_fixtures import bundle, encounter, patient, write_ndjson

BROKEN_PATIENT_LINES: list[object] = [
    "\ufeff" + json.dumps(patient("bom")),  # 1: byte-order mark: staged
    '{"resourceType": "Patient", "id": "cut"',  # 2
    "[1, 2]",  # 3
    "42",  # 4
    {"id": "no-type"},  # 5
    {"resourceType": "Nonsense", "id": "x"},  # 6
    encounter("wrong-file", "bom"),  # 7
    {"resourceType": "Patient"},  # 8
    "   ",  # 9
    b'{"resourceType": "Patient", "id": "bad-bytes", "gender": "f\xff"}',  # 10
    {"resourceType": "Patient", "id": "not-r4", "gender": {"nested": True}, "name": "Ann"},  # 11
    patient("twice", meta={"lastUpdated": "2021-01-01T00:00:00Z"}, gender="male"),  # 12
    patient("twice", meta={"lastUpdated": "2022-01-01T00:00:00Z"}, gender="female"),  # 13
    patient("good"),  # 14
]

EXPECTED_REASONS = {
    2: "malformed JSON",
    3: "not a JSON object: array",
    4: "not a JSON object: scalar or text",
    5: "missing resourceType",
    6: "unknown resourceType",
    7: "resourceType does not match the file's type",
    8: "missing id",
    9: "blank line",
    10: "invalid UTF-8 bytes",
    11: "does not match the FHIR R4 schema",
}


@pytest.fixture(scope="module")
def staged_run(spark, tmp_path_factory):
    root = tmp_path_factory.mktemp("staging")
    data = root / "in"
    write_ndjson(data / "Patient.000.ndjson", BROKEN_PATIENT_LINES)
    write_ndjson(data / "Encounter.000.ndjson.gz", [encounter("e1", "good")])
    transaction = bundle(
        [
            {"fullUrl": "urn:uuid:p-b", "resource": patient("p-b")},
            {
                "fullUrl": "urn:uuid:e-b",
                "resource": encounter("e-b", "x", subject={"reference": "urn:uuid:p-b"}),
            },
            {"request": {"method": "DELETE", "url": "Patient/good"}},
            {"fullUrl": "urn:uuid:inner", "resource": bundle([])},
            {"fullUrl": "urn:uuid:empty"},
        ]
    )
    (data / "bundle.json").write_text(json.dumps(transaction))
    paths = StagingPaths(root / "work", None, root / "staged", root / "quarantine")
    section = stage(spark, discover(data), "s1", paths)
    quarantine = spark.read.parquet(str(root / "quarantine" / "*"))
    return section, quarantine, paths


def test_every_item_is_staged_or_quarantined(staged_run):
    section, _, _ = staged_run
    assert section["items"] == section["staged"] + section["quarantined"]
    # 14 Patient lines + 1 Encounter line + 5 Bundle entries
    assert section["items"] == 20
    assert section["lines_read"] == 16
    assert section["bundles_expanded"] == 1


@pytest.mark.parametrize(("line", "reason"), sorted(EXPECTED_REASONS.items()))
def test_broken_line_is_quarantined_with_its_line_and_reason(staged_run, line, reason):
    _, quarantine, _ = staged_run
    rows = quarantine.where(f"_file like '%Patient.000.ndjson' and _line = {line}").collect()
    assert [r["reason"] for r in rows] == [reason]
    assert rows[0]["raw"] is not None, "the raw line is kept so nothing is lost"


def test_bundle_entry_problems_are_quarantined_by_entry(staged_run):
    _, quarantine, _ = staged_run
    rows = quarantine.where("_file like '%bundle.json'").orderBy("_entry").collect()
    assert [(r["_entry"], r["reason"]) for r in rows] == [
        (4, "Bundle inside a Bundle"),
        (5, "Bundle entry without resource"),
    ]


def test_byte_order_mark_is_not_part_of_the_json(spark, staged_run):
    _, _, paths = staged_run
    ids = {r["id"] for r in read_staged(spark, [paths.target], "Patient").collect()}
    assert "bom" in ids


def test_a_replacement_character_sent_as_valid_utf8_is_staged(spark):
    """U+FFFD is a legal character: only bytes that are not UTF-8 quarantine a line."""
    from omopflow.staging import stage_in_memory

    text = json.dumps(
        patient("fffd", gender="unknown", name=[{"text": "\ufffd"}]), ensure_ascii=False
    )
    staged, quarantined = stage_in_memory(spark, [text])
    assert quarantined.count() == 0
    [row] = staged["Patient"].select("id", "name").collect()
    assert (row["id"], row["name"][0]["text"]) == ("fffd", "\ufffd")


def test_latest_version_by_last_updated_wins(spark, staged_run):
    _, _, paths = staged_run
    twice = read_staged(spark, [paths.target], "Patient").where("id = 'twice'").collect()
    assert [r["gender"] for r in twice] == ["female"]


def test_bundle_delete_hides_the_resource(spark, staged_run):
    _, _, paths = staged_run
    ids = {r["id"] for r in read_staged(spark, [paths.target], "Patient").collect()}
    assert "good" not in ids
    assert {"bom", "twice", "p-b"} <= ids


def test_urn_references_resolve_to_type_and_id(spark, staged_run):
    _, _, paths = staged_run
    encounter_row = read_staged(spark, [paths.target], "Encounter").where("id = 'e-b'").first()
    assert encounter_row["subject"]["reference"] == "Patient/p-b"
    assert encounter_row["_entry"] == 2


def test_gzipped_ndjson_is_read_with_lineage(spark, staged_run):
    _, _, paths = staged_run
    row = read_staged(spark, [paths.target], "Encounter").where("id = 'e1'").first()
    assert row["_file"].endswith("Encounter.000.ndjson.gz")
    assert (row["_line"], row["_site"]) == (1, "s1")


def test_line_numbers_hold_when_a_file_is_split(spark, tmp_path):
    """Spark splits big files into byte ranges; numbering must continue across them."""
    lines = [patient(f"p{i:04d}") for i in range(400)]
    write_ndjson(tmp_path / "in" / "Patient.ndjson", lines)
    paths = StagingPaths(tmp_path / "w", None, tmp_path / "s", tmp_path / "q")
    spark.conf.set("spark.sql.files.maxPartitionBytes", "4096")
    try:
        stage(spark, discover(tmp_path / "in"), "s", paths)
    finally:
        spark.conf.unset("spark.sql.files.maxPartitionBytes")
    staged = read_staged(spark, [paths.target], "Patient").select("id", "_line").collect()
    assert {(r["id"], r["_line"]) for r in staged} == {(f"p{i:04d}", i + 1) for i in range(400)}


def test_a_misfit_is_found_where_no_id_repeats_and_a_fitting_type_is_parsed_once(spark, tmp_path):
    """Misfits are looked for (a second parse) only when fewer rows were staged than came."""
    misfit = encounter("bad", "p", subject="Patient/p")  # a Reference is an object
    write_ndjson(tmp_path / "in" / "Encounter.ndjson", [encounter("ok", "p"), misfit])
    write_ndjson(tmp_path / "in" / "Patient.ndjson", [patient("p")])
    paths = StagingPaths(tmp_path / "w", None, tmp_path / "s", tmp_path / "q")
    section = stage(spark, discover(tmp_path / "in"), "s", paths)
    assert section["quarantined_by_reason"] == {SCHEMA_FAILURE: 1}
    found = spark.read.parquet(str(paths.quarantine / "schema-Encounter")).collect()
    assert [(r["_line"], r["reason"]) for r in found] == [(2, SCHEMA_FAILURE)]
    assert not (paths.quarantine / "schema-Patient").exists()
    staged = read_staged(spark, [paths.target], "Encounter").select("id").collect()
    assert [r["id"] for r in staged] == ["ok"]


def test_staged_rows_are_parsed_once_when_split_from_the_misfits(spark):
    """The plan of a type's staged rows holds one typed parse, not one for the filter and
    one for the columns (Spark pushes a filter below a plain projection)."""
    from omopflow.staging import staged_columns, typed

    items = spark.createDataFrame([("{}", False)], "_json string, _deleted boolean")
    good = typed(items, "Encounter").where("_reason is null")
    plan = good.select(*staged_columns(good, "Encounter")[-3:])._jdf.queryExecution()
    assert plan.executedPlan().toString().count("from_json(") == 1


def test_manifest_problems_are_quarantined_as_files(spark, tmp_path):
    data = tmp_path / "in"
    write_ndjson(data / "Patient.ndjson", [patient("m1")])
    manifest = {
        "transactionTime": "2024-01-01T00:00:00Z",
        "output": [
            {"type": "Patient", "url": "Patient.ndjson"},
            {"type": "Patient", "url": "gone.ndjson"},
            {"type": "Patient", "url": "../../etc/passwd"},
        ],
    }
    (data / "manifest.json").write_text(json.dumps(manifest))
    paths = StagingPaths(tmp_path / "w", None, tmp_path / "s", tmp_path / "q")
    section = stage(spark, discover(data), "s", paths)
    assert section["quarantined_by_reason"] == {
        "manifest names a missing file": 1,
        "manifest url outside the export folder": 1,
    }
    assert section["staged"] == 1


def test_second_export_merges_into_the_site_staging(spark, tmp_path):
    first, second = tmp_path / "e1", tmp_path / "e2"
    write_ndjson(first / "Patient.ndjson", [patient("a"), patient("b", gender="male")])
    write_ndjson(
        second / "Patient.ndjson",
        [patient("b", gender="female", meta={"lastUpdated": "2030-01-01T00:00:00Z"})],
    )
    run1 = StagingPaths(tmp_path / "w1", None, tmp_path / "s1", tmp_path / "q1")
    stage(spark, discover(first), "s", run1)
    run2 = StagingPaths(tmp_path / "w2", run1.target, tmp_path / "s2", tmp_path / "q2")
    stage(spark, discover(second), "s", run2)
    rows = read_staged(spark, [run2.target], "Patient").select("id", "gender").collect()
    assert sorted((r["id"], r["gender"]) for r in rows) == [("a", "female"), ("b", "female")]


def test_missing_input_folder_is_a_clear_error(tmp_path):
    from omopflow.errors import UsageError

    with pytest.raises(UsageError, match="input folder not found"):
        discover(tmp_path / "nope")


def test_exporter_log_and_hidden_files_are_not_staged(tmp_path):
    write_ndjson(tmp_path / "log.ndjson", [{"eventId": "kickoff"}])
    write_ndjson(tmp_path / ".partial-x" / "Patient.ndjson", [patient("p")])
    (tmp_path / "_state.json").write_text("{}")
    found = discover(tmp_path)
    assert found.files == ()
    assert any(Path(p).name == "log.ndjson" for p in found.skipped)


def test_an_empty_export_stages_nothing_and_keeps_the_previous_staging(spark, tmp_path):
    write_ndjson(tmp_path / "e1" / "Patient.ndjson", [patient("kept")])
    (tmp_path / "empty").mkdir()
    run1 = StagingPaths(tmp_path / "w1", None, tmp_path / "s1", tmp_path / "q1")
    stage(spark, discover(tmp_path / "e1"), "s", run1)
    run2 = StagingPaths(tmp_path / "w2", run1.target, tmp_path / "s2", tmp_path / "q2")
    section = stage(spark, discover(tmp_path / "empty"), "s", run2)
    assert (section["items"], section["staged"], section["quarantined"]) == (0, 0, 0)
    ids = [r["id"] for r in read_staged(spark, [run2.target], "Patient").collect()]
    assert ids == ["kept"]


def test_a_type_outside_parsed_types_is_staged_as_its_json(spark, tmp_path):
    """Unmapped types skip the R4 parse: their JSON is kept, a misfit is not quarantined, the
    latest version still wins, and a later run that parses them re-reads the JSON."""
    claims = [
        {"resourceType": "Claim", "id": "c1", "item": "not a list of items"},
        {"resourceType": "Claim", "id": "c2", "meta": {"lastUpdated": "2020-01-01T00:00:00Z"}},
        {"resourceType": "Claim", "id": "c2", "meta": {"lastUpdated": "2021-01-01T00:00:00Z"}},
    ]
    write_ndjson(tmp_path / "in" / "Claim.ndjson", claims)
    write_ndjson(tmp_path / "in" / "Patient.ndjson", [patient("p")])
    run1 = StagingPaths(tmp_path / "w1", None, tmp_path / "s1", tmp_path / "q1")
    section = stage(spark, discover(tmp_path / "in"), "s", run1, parsed_types={"Patient"})
    assert (section["staged"], section["quarantined"]) == (4, 0)
    staged = read_staged(spark, [run1.target], "Claim", parsed=False)
    assert tuple(staged.columns) == STAGED_META
    rows = staged.select("id", "_last_updated", "_json").orderBy("id").collect()
    assert [r["id"] for r in rows] == ["c1", "c2"]
    assert str(rows[1]["_last_updated"]).startswith("2021-01-01")
    assert json.loads(rows[0]["_json"]) == claims[0]

    (tmp_path / "none").mkdir()
    run2 = StagingPaths(tmp_path / "w2", run1.target, tmp_path / "s2", tmp_path / "q2")
    section = stage(spark, discover(tmp_path / "none"), "s", run2)
    assert section["quarantined_by_reason"] == {"does not match the FHIR R4 schema": 1}
    assert {r["id"] for r in read_staged(spark, [run2.target], "Claim").collect()} == {"c2"}


def test_reading_a_type_that_staging_does_not_parse_is_refused(spark):
    from transforms.base import MappingContext

    ctx = MappingContext(spark, None, [], None, b"k")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"Claim is read but missing from registry\.MAPPED_TYPES"):
        ctx.staged("Claim")


def test_versions_are_merged_only_when_an_id_repeats_within_a_site_and_type(spark):
    from omopflow.staging import types_with_repeated_ids

    def repeated(*keys):
        keys_frame = spark.createDataFrame(
            list(keys), "_site string, _resource_type string, id string"
        )
        return types_with_repeated_ids(keys_frame)

    assert repeated(("s1", "Patient", "a"), ("s2", "Patient", "a")) == set()
    assert repeated(("s1", "Patient", "a"), ("s1", "Encounter", "a")) == set()
    assert repeated(("s1", "Patient", "a"), ("s1", "Patient", "a"), ("s1", "Encounter", "b")) == {
        "Patient"
    }


def test_a_resources_own_extensions_are_staged_as_json_text(spark, tmp_path):
    """Typed, `extension` is over half of a resource's columns; as text it is one column,
    and what the hospital sent is still all there."""
    race = {
        "url": "http://hl7.org/fhir/us/core/StructureDefinition/us-core-race",
        "extension": [{"url": "text", "valueString": "Asian"}],
    }
    write_ndjson(tmp_path / "in" / "Patient.ndjson", [patient("p", extension=[race])])
    run = StagingPaths(tmp_path / "w", None, tmp_path / "s", tmp_path / "q")
    stage(spark, discover(tmp_path / "in"), "s", run)
    stored = spark.read.parquet(str(run.target / "Patient"))
    assert stored.schema["extension"].dataType.simpleString() == "array<string>"
    (row,) = read_staged(spark, [run.target], "Patient").select("extension").collect()
    assert [json.loads(text) for text in row["extension"]] == [race]


def test_a_site_staging_with_other_columns_is_parsed_again_from_its_json(spark, tmp_path):
    """Another site's staging written by an earlier release (here: header and JSON only)
    reads with this release's columns, alongside a site staged now."""
    write_ndjson(tmp_path / "a" / "Patient.ndjson", [patient("pa", gender="male")])
    write_ndjson(tmp_path / "b" / "Patient.ndjson", [patient("pb", gender="female")])
    site_a = StagingPaths(tmp_path / "wa", None, tmp_path / "sa", tmp_path / "qa")
    site_b = StagingPaths(tmp_path / "wb", None, tmp_path / "sb", tmp_path / "qb")
    stage(spark, discover(tmp_path / "a"), "a", site_a)
    stage(spark, discover(tmp_path / "b"), "b", site_b)
    older = tmp_path / "older"
    staged_b = spark.read.parquet(str(site_b.target / "Patient")).select(*STAGED_META)
    staged_b.write.parquet(str(older / "Patient"))
    both = read_staged(spark, [site_a.target, older], "Patient")
    rows = both.select("_site", "id", "gender").collect()
    assert sorted(tuple(r) for r in rows) == [("a", "pa", "male"), ("b", "pb", "female")]
