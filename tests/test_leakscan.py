"""Leakage scan: every identifier-like input value is searched for in every published file.

The releases here are written with pyarrow and DuckDB directly (no Spark): the scan reads
Parquet, whoever wrote it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from omopflow import pipeline
from omopflow.config import RunConfig
from omopflow.errors import UsageError
from omopflow.leakscan import (
    ADDRESS,
    CHUNK_BYTES,
    FREE_TEXT,
    IDENTIFIER,
    NAME,
    RESOURCE_ID,
    SECRET,
    TELECOM,
    InputNeedles,
    _extract_needles,
    _work_units,
    input_needles,
    main,
    make_needle,
    scan_release,
)
from tests.fhir_fixtures import bundle, encounter, patient, write_ndjson

PATIENT = patient(
    "pat-7f3e9a",
    identifier=[{"system": "urn:mrn", "value": "MRN-0042917"}],
    name=[{"family": "Quackenbush", "given": ["Philippa", "Jo"]}],
    telecom=[{"system": "phone", "value": "555-867-5309"}],
    address=[{"line": ["42 Wallaby Way"], "city": "Sydney"}],
    text={"status": "generated", "div": "<div>Philippa Quackenbush, born 1980</div>"},
    extension=[
        {
            "url": "http://hl7.org/fhir/StructureDefinition/patient-mothersMaidenName",
            "valueString": "Oppenheimer",
        }
    ],
)
ENCOUNTER = encounter(
    "enc-55b1c0",
    "pat-7f3e9a",
    participant=[
        {"individual": {"reference": "Practitioner/prac-9911aa", "display": "Dr. Zelda Marwick"}}
    ],
    serviceProvider={"reference": "Organization/org-1", "display": "General Hospital"},
    note=[{"text": "patient mentioned the neighbour's dog bit her"}],
)
KEY = b"leakscan-test-key-0123456789abcdef"


@pytest.fixture
def input_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "input"
    write_ndjson(folder / "Patient.ndjson.gz", [PATIENT])
    write_ndjson(folder / "Encounter.ndjson", [ENCOUNTER, "{not json"])
    return folder


def write_release(root: Path, tables: dict[str, dict[str, list[object]]]) -> Path:
    release = root / "release"
    for table, columns in tables.items():
        (release / table).mkdir(parents=True)
        pq.write_table(pa.table(columns), release / table / "part-00000.parquet")
    return release


def clean_person() -> dict[str, list[object]]:
    return {
        "person_id": [1],
        "person_source_value": ["3f9c2b7e41aa09d1c2e3f4a5b6c7d8e9"],
        "gender_source_value": ["female"],
    }


def test_needles_cover_every_kind_of_identifier(input_dir):
    needles, unreadable = input_needles(input_dir)
    found = {(n.kind, n.text) for n in needles}
    assert {
        (RESOURCE_ID, "pat-7f3e9a"),
        (RESOURCE_ID, "prac-9911aa"),
        (IDENTIFIER, "mrn-0042917"),
        (NAME, "quackenbush"),
        (NAME, "philippa"),
        (NAME, "oppenheimer"),
        (NAME, "dr. zelda marwick"),
        (TELECOM, "555-867-5309"),
        (TELECOM, "5558675309"),
        (ADDRESS, "42 wallaby way"),
        (FREE_TEXT, "patient mentioned the neighbour's dog bit her"),
    } <= found
    assert unreadable == 1, "the broken line is counted, not silently skipped"


def test_short_and_non_personal_values_are_not_needles(input_dir):
    texts = {n.text for n in input_needles(input_dir)[0]}
    assert "jo" not in texts, "two letters would match everywhere"
    assert "sydney" not in texts, "cities are allowed in the OMOP location table"
    assert "general hospital" not in texts, "an organisation is not a person"
    assert make_needle("123456", IDENTIFIER, "x") is not None
    assert make_needle("12345", IDENTIFIER, "x") is None, "years and codes look like this"


def test_a_resource_id_that_is_a_plain_word_is_not_a_needle():
    assert make_needle("referral", RESOURCE_ID, "ServiceRequest.id") is None
    assert make_needle("referral-7", RESOURCE_ID, "ServiceRequest.id") is not None
    assert make_needle("Referral", NAME, "Patient.name.family") is not None, "names stay"


def test_vocabulary_tables_are_public_and_not_scanned(input_dir, tmp_path):
    concept = {"concept_id": [1], "concept_name": ["Quackenbush syndrome"]}
    release = write_release(tmp_path, {"person": clean_person(), "concept": concept})
    report = scan_release(None, input_dir, release)
    assert report.clean and report.tables_scanned == 1


def test_bundle_entries_and_urn_full_urls_are_searched(tmp_path):
    folder = tmp_path / "bundles"
    folder.mkdir()
    entry = {"fullUrl": "urn:uuid:0b7e-4c1d-9f00", "resource": patient("in-bundle-77")}
    (folder / "b.json").write_text(json.dumps(bundle([entry])))
    texts = {(n.kind, n.text) for n in input_needles(folder)[0]}
    assert {(RESOURCE_ID, "in-bundle-77"), (RESOURCE_ID, "0b7e-4c1d-9f00")} <= texts


def test_a_clean_release_passes(input_dir, tmp_path):
    release = write_release(tmp_path, {"person": clean_person()})
    report = scan_release(None, input_dir, release, secrets=[KEY])
    assert report.clean, report.summary()
    assert report.tables_scanned == 1


@pytest.mark.parametrize(
    ("value", "kind"),
    [
        ("pat-7f3e9a", RESOURCE_ID),
        ("Patient/pat-7f3e9a", RESOURCE_ID),
        ("MRN-0042917", IDENTIFIER),
        ("QUACKENBUSH", NAME),
        ("call 555-867-5309 after 6", TELECOM),
        ("5558675309", TELECOM),
        ("42  Wallaby Way", ADDRESS),
        ("Patient mentioned the neighbour's dog bit her", FREE_TEXT),
        (KEY.decode(), SECRET),
        (KEY.hex(), SECRET),
    ],
)
def test_a_leaked_value_is_found_with_its_kind_and_column(input_dir, tmp_path, value, kind):
    person = clean_person()
    person["gender_source_value"] = [value]
    release = write_release(tmp_path, {"person": person})
    report = scan_release(None, input_dir, release, secrets=[KEY])
    assert [(f.kind, f.location, f.values) for f in report.findings] == [
        (kind, "person.gender_source_value", 1)
    ]


def test_a_needle_inside_a_longer_token_is_not_a_finding(input_dir, tmp_path):
    person = clean_person()
    person["gender_source_value"] = ["xpat-7f3e9ax"]  # "7f3e9ax" is not the token "7f3e9a"
    release = write_release(tmp_path, {"person": person})
    assert scan_release(None, input_dir, release).clean


def test_the_report_never_holds_the_leaked_value(input_dir, tmp_path):
    person = clean_person()
    person["gender_source_value"] = ["Quackenbush"]
    release = write_release(tmp_path, {"person": person})
    report = scan_release(None, input_dir, release)
    assert "quackenbush" not in json.dumps(report.to_json()).lower()
    assert report.findings[0].fhir_path == "Patient.name.family"


def test_non_parquet_files_of_the_release_are_searched(input_dir, tmp_path):
    release = write_release(tmp_path, {"person": clean_person()})
    (release / "ledger.json").write_text(json.dumps({"skipped": ["/in/enc-55b1c0.json"]}))
    report = scan_release(None, input_dir, release)
    assert [(f.kind, f.location) for f in report.findings] == [(RESOURCE_ID, "ledger.json")]


def test_hidden_scratch_folders_are_not_published_so_not_scanned(input_dir, tmp_path):
    release = write_release(tmp_path, {"person": clean_person()})
    scratch = release / "_work"
    scratch.mkdir()
    (scratch / "items.json").write_text(json.dumps(PATIENT))
    assert scan_release(None, input_dir, release).clean


def test_a_crosswalk_inside_the_release_is_reported(input_dir, tmp_path):
    release = write_release(tmp_path, {"person": clean_person()})
    (release / "restricted" / "crosswalk").mkdir(parents=True)
    report = scan_release(None, input_dir, release)
    assert not report.clean
    assert any("crosswalk" in p for p in report.problems)


def test_catalog_views_over_restricted_folders_are_reported(input_dir, tmp_path):
    import duckdb

    release = write_release(tmp_path, {"person": clean_person()})
    crosswalk = write_release(tmp_path / "restricted" / "crosswalk", {"ids": {"omop_id": [1]}})
    catalog = tmp_path / "omop.duckdb"
    with duckdb.connect(str(catalog)) as con:
        con.execute(f"CREATE VIEW person AS FROM read_parquet('{release}/person/*.parquet')")
        con.execute(f"CREATE VIEW xwalk AS FROM read_parquet('{crosswalk}/ids/*.parquet')")
    report = scan_release(None, input_dir, release, catalog=catalog)
    assert report.problems == [
        "catalog view xwalk reads a restricted folder",
        "catalog view xwalk reads a crosswalk folder",
    ]


def test_command_exits_7_and_writes_the_report_when_a_leak_is_found(input_dir, tmp_path, capsys):
    out = tmp_path / "warehouse"
    person = clean_person()
    person["gender_source_value"] = ["Philippa"]
    release = write_release(out / "releases", {"person": person})
    (out / "current").symlink_to(release)
    report_path = tmp_path / "report.json"
    status = main(["--input", str(input_dir), "--out", str(out), "--report", str(report_path)])
    assert status == 7
    assert json.loads(report_path.read_text())["clean"] is False
    assert "LEAKS FOUND" in capsys.readouterr().out


def test_missing_release_is_a_clear_error(input_dir, tmp_path):
    with pytest.raises(UsageError, match="release folder not found"):
        scan_release(None, input_dir, tmp_path / "nope")


# --- as a step of every run (omopflow.pipeline._leak_scan) ---------------------------------


def _scan_step(input_dir: Path, build: Path, record: dict, leak_scan: bool = True) -> list[str]:
    """The run's leak scan step as the pipeline runs it: needles read, then the search."""
    config = RunConfig(input_dir, (), build.parent, leak_scan=leak_scan)
    with pipeline._reading_needles(config, KEY) as reading:
        return pipeline._leak_scan(reading, build, record)


def test_a_leak_in_the_build_blocks_the_run_and_is_recorded(input_dir, tmp_path):
    person = clean_person()
    person["gender_source_value"] = ["Quackenbush"]
    build = write_release(tmp_path, {"person": person})
    record: dict = {}
    blocked = _scan_step(input_dir, build, record)
    assert blocked == ["leak:name@person.gender_source_value"]
    assert record["leak_scan"]["clean"] is False and record["leak_scan"]["findings"] == 1
    assert "Quackenbush" not in json.dumps(record)  # the ledger names kinds, never values


def test_a_clean_build_passes_the_run_step(input_dir, tmp_path):
    build = write_release(tmp_path, {"person": clean_person()})
    record: dict = {}
    assert _scan_step(input_dir, build, record) == []
    assert record["leak_scan"]["clean"] is True


def test_needles_read_before_the_release_exists_find_what_is_written_later(input_dir, tmp_path):
    # A run reads the input's needles while the gate and the report are still writing.
    with InputNeedles(input_dir) as needles:
        with pytest.raises(ValueError, match="before read"):
            needles.search(tmp_path)
        needles.read()
        person = clean_person()
        person["gender_source_value"] = ["Quackenbush"]
        report = needles.search(write_release(tmp_path, {"person": person}))
    assert [f.location for f in report.findings] == ["person.gender_source_value"]


def test_a_reading_closed_before_its_end_stops_and_finds_nothing(input_dir, tmp_path):
    """A run reads the input from its start; when it fails early its needles are closed
    (their scratch folder removed), and the units still to read end without reading."""
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    files, _ = _extract_needles(input_dir, scratch, CHUNK_BYTES)
    assert files and all(path.parent == scratch for path in files)
    assert _extract_needles(input_dir, tmp_path / "closed", CHUNK_BYTES) == ([], 0)


def test_a_run_whose_reading_fails_fails_at_the_scan(input_dir, tmp_path, monkeypatch):
    def unreadable(self):
        raise OSError("disk gone")

    monkeypatch.setattr(InputNeedles, "read", unreadable)
    build = write_release(tmp_path, {"person": clean_person()})
    with pytest.raises(OSError, match="disk gone"):
        _scan_step(input_dir, build, {})


def test_the_run_step_can_be_turned_off(input_dir, tmp_path):
    person = clean_person()
    person["gender_source_value"] = ["Quackenbush"]
    build = write_release(tmp_path, {"person": person})
    record: dict = {}
    assert _scan_step(input_dir, build, record, leak_scan=False) == []
    assert "skipped" in record["leak_scan"]


def test_the_search_keeps_duckdb_out_of_the_calling_process(input_dir, tmp_path):
    """A run's driver calls the scan: DuckDB's memory (up to its budget, at any size of
    input) must not add to the driver's, so the search runs in a worker process."""
    import subprocess
    import sys

    person = clean_person()
    person["gender_source_value"] = ["Quackenbush"]
    release = write_release(tmp_path, {"person": person})
    script = (
        "import sys\n"
        "from pathlib import Path\n"
        "from omopflow.leakscan import scan_release\n"
        "if __name__ == '__main__':\n"
        f"    report = scan_release(None, Path({str(input_dir)!r}), Path({str(release)!r}))\n"
        "    print(len(report.findings), 'duckdb' in sys.modules)\n"
    )
    (tmp_path / "scan.py").write_text(script)
    done = subprocess.run(
        [sys.executable, str(tmp_path / "scan.py")], capture_output=True, text=True, check=True
    )
    assert done.stdout.split() == ["1", "False"], "a finding, made without DuckDB in this process"


# --- reading the input in parallel units ----------------------------------------------------


def test_byte_ranges_of_a_file_find_what_one_unit_finds(tmp_path):
    lines = [
        b"\xef\xbb\xbf" + json.dumps(PATIENT).encode(),  # a BOM, at the start of the file only
        json.dumps(ENCOUNTER).encode() + b"\r",  # a CRLF line end stays whole
        b"{not json",
        b"   ",
        # Same text as Patient.name.family, later and as another kind: the name is kept.
        json.dumps(patient("pat-second", identifier=[{"value": "QUACKENBUSH"}])).encode(),
        json.dumps(patient("pat-third", text={"div": "<div>" + "long narrative " * 40})).encode(),
    ]
    path = write_ndjson(tmp_path / "input" / "Patient.ndjson", lines)
    data = path.read_bytes()
    assert b"\n" not in data[:64], "a cut at 64 bytes falls inside the first line"
    whole, unreadable = input_needles(path.parent)
    assert len(_work_units([path], CHUNK_BYTES)) == 1
    assert unreadable == 1, "the broken line; the blank one is no item"
    for chunk in (1, 64, len(data) // 3):
        units = _work_units([path], chunk)
        starts = [part.start for unit in units for part in unit.parts]
        assert len(units) >= 2 and all(data[s - 1 : s] == b"\n" for s in starts[1:])
        split = input_needles(path.parent, chunk_bytes=chunk)
        assert [(n.text, n.kind, n.fhir_path) for n in split[0]] == [
            (n.text, n.kind, n.fhir_path) for n in whole
        ]
        assert split[1] == unreadable
    assert [(n.kind, n.fhir_path) for n in whole if n.text == "quackenbush"] == [
        (NAME, "Patient.name.family")
    ]


def test_the_first_file_in_order_names_a_text_whatever_finishes_first(tmp_path):
    folder = tmp_path / "input"
    first = patient("pat-aa1234", name=[{"family": "Marwick-Ostrander"}])
    # Longer lines (padded with text that holds no needle), so b's units are handed out
    # before a's; but b sorts after a, so its kind and path lose.
    padding = {"maritalStatus": {"text": "never married " * 20}}
    later = [
        patient(f"pat-b{i:05d}", identifier=[{"value": "Marwick-Ostrander"}], **padding)
        for i in range(50)
    ]
    write_ndjson(folder / "a.ndjson", [first])
    write_ndjson(folder / "b.ndjson", later)
    chunk = len(json.dumps(first)) + 1
    assert len(_work_units(sorted(folder.iterdir()), chunk)) >= 2
    needles, _ = input_needles(folder, chunk_bytes=chunk)
    assert [(n.kind, n.fhir_path) for n in needles if n.text == "marwick-ostrander"] == [
        (NAME, "Patient.name.family")
    ]
    person = clean_person()
    person["gender_source_value"] = ["Marwick-Ostrander"]
    release = write_release(tmp_path, {"person": person})
    report = scan_release(None, folder, release, chunk_bytes=chunk)
    assert [(f.kind, f.fhir_path) for f in report.findings] == [(NAME, "Patient.name.family")]
    assert report.needles_by_kind == {NAME: 1, RESOURCE_ID: 51}


def test_an_integer_beyond_64_bits_is_read_as_json_reads_it(tmp_path):
    folder = tmp_path / "input"
    digits = "123456789012345678901234567890"
    line = json.dumps(patient("pat-big", telecom=[{"system": "phone"}]))
    write_ndjson(
        folder / "Patient.ndjson", [line.replace('"phone"', f'"phone", "value": {digits}')]
    )
    assert (TELECOM, digits) in {(n.kind, n.text) for n in input_needles(folder)[0]}


def test_a_lone_surrogate_in_the_input_does_not_stop_the_scan(tmp_path):
    """`"\\ud800"` is valid JSON that no UTF-8 text can hold: the scan goes on, and the value
    is searched for as Java would have written it."""
    folder = tmp_path / "in"
    folder.mkdir()
    line = (
        '{"resourceType": "Patient", "id": "pat-surrogate", "name": [{"family": "Zed\\ud800xyz"}]}'
    )
    (folder / "Patient.ndjson").write_text(line + "\n")
    needles, unreadable = input_needles(folder)
    assert unreadable == 0
    assert {(n.kind, n.text) for n in needles} >= {
        (NAME, "zed?xyz"),
        (RESOURCE_ID, "pat-surrogate"),
    }
    release = tmp_path / "release" / "person"
    release.mkdir(parents=True)
    pq.write_table(pa.table({"person_source_value": ["zed?xyz"]}), release / "part-0.parquet")
    report = scan_release(None, folder, tmp_path / "release")
    assert [(f.kind, f.location) for f in report.findings] == [(NAME, "person.person_source_value")]
