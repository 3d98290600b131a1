"""The bad-input catalogue: each kind is staged or quarantined with its reason, and every
other line of the same file still arrives. docs/governance.md lists the same catalogue.

One staging run over a folder that mixes most kinds (a Spark run costs ~a minute here);
the 50 MB line gets its own run. Kinds that only show after mapping (dangling references,
impossible and future dates) are checked by the mapping tests and the pipeline runs of
test_faults.py.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from omopflow import ledger
from omopflow.landing import discover
from omopflow.staging import StagingPaths, read_staged, stage
from tests.fhir_fixtures import bundle, encounter, patient, write_ndjson


def nested_extension(depth: int) -> str:
    """A Patient whose extension nests `depth` levels (written by hand: json.dumps recurses)."""
    inner = '{"url":"x","extension":[' * depth + '{"url":"x","valueString":"deep"}' + "]}" * depth
    return f'{{"resourceType":"Patient","id":"deep-{depth}","extension":[{inner}]}}'


PATIENT_LINES: list[object] = [
    patient("keep-1"),  # 1
    "\ufeff" + json.dumps(patient("bom")),  # 2
    '{"resourceType": "Patient", "id": "cut"',  # 3
    b'{"resourceType": "Patient", "id": "latin1", "gender": "m\xe4nnlich"}',  # 4
    "[" + json.dumps(patient("in-array")) + "]",  # 5
    '"just a string"',  # 6
    encounter("wrong-type", "keep-1"),  # 7
    {"resourceType": "Patientt", "id": "typo"},  # 8
    {"id": "no-type", "gender": "male"},  # 9
    {"resourceType": "Patient", "gender": "male"},  # 10
    patient("twice", gender="male"),  # 11
    patient("twice", gender="female"),  # 12
    patient("unknown-element", favouriteColour="teal"),  # 13
    patient("wrong-json-type", name="Ann Smith"),  # 14: a string where R4 has a list
    nested_extension(30),  # 15
    nested_extension(3000),  # 16
    "",  # 17
    patient("to-delete"),  # 18
    patient("keep-2"),  # 19
]

OUTSIDE = "manifest url outside the export folder"
# (kind, file suffix, line, Bundle entry or None) -> reason
QUARANTINED = {
    "malformed JSON": ("Patient.000.ndjson", 3, None, "malformed JSON"),
    "non-UTF-8 bytes": ("Patient.000.ndjson", 4, None, "invalid UTF-8 bytes"),
    "a line that is an array": ("Patient.000.ndjson", 5, None, "not a JSON object: array"),
    "a line that is a scalar": (
        "Patient.000.ndjson",
        6,
        None,
        "not a JSON object: scalar or text",
    ),
    "resourceType not the file's type": (
        "Patient.000.ndjson",
        7,
        None,
        "resourceType does not match the file's type",
    ),
    "unknown resourceType": ("Patient.000.ndjson", 8, None, "unknown resourceType"),
    "missing resourceType": ("Patient.000.ndjson", 9, None, "missing resourceType"),
    "missing id": ("Patient.000.ndjson", 10, None, "missing id"),
    "an element of the wrong JSON type": (
        "Patient.000.ndjson",
        14,
        None,
        "does not match the FHIR R4 schema",
    ),
    "nesting deeper than the JSON parser allows": (
        "Patient.000.ndjson",
        16,
        None,
        "malformed JSON",
    ),
    "blank line": ("Patient.000.ndjson", 17, None, "blank line"),
    "a Bundle inside a Bundle": ("transaction.json", 1, 3, "Bundle inside a Bundle"),
    "a DELETE entry without Type/id": (
        "transaction.json",
        1,
        4,
        "DELETE entry without Type/id url",
    ),
    "a Bundle entry without resource": ("transaction.json", 1, 5, "Bundle entry without resource"),
    "a truncated Bundle file": ("cut-bundle.json", 1, None, "malformed JSON"),
    "a JSON file holding a scalar": ("scalar.json", 1, None, "not a JSON object: scalar or text"),
    "a manifest naming a missing file": (
        "missing.ndjson",
        0,
        None,
        "manifest names a missing file",
    ),
    "a manifest url with ../": ("../ndjson/Patient.000.ndjson", 0, None, OUTSIDE),
    "a manifest url with an absolute path outside": ("/etc/hostname", 0, None, OUTSIDE),
    "an empty file": ("Condition.000.ndjson", 0, None, "empty file"),
    "a truncated gzip file": ("Patient.001.ndjson.gz", 0, None, "unreadable gzip file"),
    "a .gz file that is not gzip": ("Encounter.001.ndjson.gz", 0, None, "unreadable gzip file"),
}

# kind -> Patient id that must be staged (or, for a DELETE, must not be)
STAGED = {
    "byte-order mark": "bom",
    "elements unknown to R4 (kept in _json)": "unknown-element",
    "deeply nested extensions (within the parser's limit)": "deep-30",
    "CRLF line endings": "crlf",
    "a single resource in a .json file": "single",
    "a resource in a transaction Bundle": "in-bundle",
    "a file listed in a manifest": "listed",
}
EXPECTED_PATIENTS = {
    "keep-1",
    "keep-2",
    "twice",
    *STAGED.values(),
}


@pytest.fixture(scope="module")
def bad_run(spark, tmp_path_factory):
    root = tmp_path_factory.mktemp("bad-inputs")
    data = root / "in"
    write_ndjson(data / "ndjson" / "Patient.000.ndjson", PATIENT_LINES)
    crlf = (json.dumps(patient("crlf")) + "\r\n").encode()
    (data / "windows").mkdir()
    (data / "windows" / "Patient.ndjson").write_bytes(crlf * 2)  # same line twice: one patient
    (data / "ndjson" / "Condition.000.ndjson").write_bytes(b"")  # an empty file
    whole = gzip.compress(
        b"".join(json.dumps(patient(f"gz{i}")).encode() + b"\n" for i in range(50))
    )
    (data / "ndjson" / "Patient.001.ndjson.gz").write_bytes(whole[: len(whole) // 2])
    (data / "ndjson" / "Encounter.001.ndjson.gz").write_text(json.dumps(encounter("plain", "x")))
    transaction = bundle(
        [
            {"fullUrl": "urn:uuid:in-bundle", "resource": patient("in-bundle")},
            {"request": {"method": "DELETE", "url": "Patient/to-delete"}},
            {"fullUrl": "urn:uuid:inner", "resource": bundle([])},
            {"request": {"method": "DELETE", "url": "nonsense"}},
            {"fullUrl": "urn:uuid:empty"},
        ]
    )
    (data / "bundles").mkdir()
    (data / "bundles" / "transaction.json").write_text(json.dumps(transaction))
    (data / "bundles" / "cut-bundle.json").write_text(json.dumps(transaction)[:200])
    (data / "bundles" / "scalar.json").write_text("42")
    (data / "bundles" / "single.json").write_text(json.dumps(patient("single")))
    manifested = data / "manifested"
    write_ndjson(manifested / "Patient.ndjson", [patient("listed")])
    urls = ["Patient.ndjson", "missing.ndjson", "../ndjson/Patient.000.ndjson", "/etc/hostname"]
    manifest = {"output": [{"type": "Patient", "url": url} for url in urls]}
    (manifested / "manifest.json").write_text(json.dumps(manifest))
    paths = StagingPaths(root / "work", None, root / "staged", root / "quarantine")
    section = stage(spark, discover(data), "site", paths)
    quarantine = spark.read.parquet(str(paths.quarantine / "*")).collect()
    patients = read_staged(spark, [paths.target], "Patient").collect()
    return section, quarantine, patients


@pytest.mark.parametrize(("kind", "where"), sorted(QUARANTINED.items()))
def test_bad_input_is_quarantined_with_its_reason(bad_run, kind, where):
    _, quarantine, _ = bad_run
    suffix, line, entry, reason = where
    rows = [
        r
        for r in quarantine
        if (r["_file"] or "").endswith(suffix) and r["_line"] == line and r["_entry"] == entry
    ]
    assert [r["reason"] for r in rows] == [reason], kind


@pytest.mark.parametrize(("kind", "patient_id"), sorted(STAGED.items()))
def test_odd_but_valid_input_is_staged(bad_run, kind, patient_id):
    _, _, patients = bad_run
    assert patient_id in {p["id"] for p in patients}, kind


def test_every_other_line_still_arrives(bad_run):
    _, _, patients = bad_run
    assert sorted(p["id"] for p in patients) == sorted(EXPECTED_PATIENTS)


def test_the_ledger_adds_up(bad_run):
    section, quarantine, _ = bad_run
    assert ledger.check({"staging": section}) == []
    assert section["quarantined"] == len(quarantine)
    assert section["items"] + section["file_problems"] == section["staged"] + section["quarantined"]


def test_quarantine_keeps_the_raw_text_of_every_bad_line(bad_run):
    _, quarantine, _ = bad_run
    lines = [r for r in quarantine if r["_line"] and r["_line"] > 0 and r["_entry"] is None]
    assert lines and all(r["raw"] is not None for r in lines)


def test_unknown_elements_stay_in_the_original_json(bad_run):
    _, _, patients = bad_run
    unknown = next(p for p in patients if p["id"] == "unknown-element")
    assert json.loads(unknown["_json"])["favouriteColour"] == "teal"


def test_same_id_twice_with_different_content_keeps_the_later_line(bad_run):
    _, _, patients = bad_run
    assert [p["gender"] for p in patients if p["id"] == "twice"] == ["female"]


def test_bundle_delete_entry_removes_the_resource(bad_run):
    _, _, patients = bad_run
    assert "to-delete" not in {p["id"] for p in patients}


def _stage_folder(spark, root: Path) -> tuple[dict, list]:
    paths = StagingPaths(root / "work", None, root / "staged", root / "quarantine")
    section = stage(spark, discover(root / "in"), "site", paths)
    return section, spark.read.parquet(str(paths.quarantine / "*")).collect()


# --- a line of 50 MB: one run shared by its two tests -------------------------------------

BIG_LINE_MB = 50


@pytest.fixture(scope="module")
def big_line_run(spark, tmp_path_factory):
    root = tmp_path_factory.mktemp("big-line")
    div = "<div>" + "x" * (BIG_LINE_MB * 1024 * 1024) + "</div>"
    lines = [patient("before"), patient("big", text={"status": "generated", "div": div})]
    write_ndjson(root / "in" / "Patient.ndjson", [*lines, patient("after")])
    section, quarantine = _stage_folder(spark, root)
    staged = read_staged(spark, [root / "staged"], "Patient").select("id").collect()
    return section, [(r["_line"], r["reason"]) for r in quarantine], {r["id"] for r in staged}


def test_a_50_mb_line_does_not_stop_the_other_lines(big_line_run):
    section, quarantine, staged = big_line_run
    assert staged == {"before", "after"}
    assert [line for line, _ in quarantine] == [2]
    assert ledger.check({"staging": section}) == []


def test_a_50_mb_line_is_quarantined_as_too_long(big_line_run):
    _, quarantine, _ = big_line_run
    assert quarantine == [(2, "line too long")]
