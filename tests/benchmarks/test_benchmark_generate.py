"""The scale-up generator: clones of the sample that a pipeline can take as real exports."""

from __future__ import annotations

import gzip
import re
import shutil
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from benchmarks import generate as gen
from omopflow.errors import InputError, UsageError

PATIENTS = 20
SOURCE_PATIENTS = 13  # in fhir/synthea-bulk-10
PATIENT_REFERENCE = re.compile(rb'"reference":"Patient/([0-9a-f-]{36})"')
SMALL_BUNDLES = (  # the two smallest of fhir/synthea-bundles
    "Clemente_Kreiger_1484a42d-0eaf-4654-9cbf-6b050a5cd73b.json",
    "Edward_Gulgowski_43481611-2459-44f5-ab20-4b142dac160f.json",
)


@pytest.fixture(scope="module")
def sample(shared_data: Path) -> Path:
    return shared_data / "fhir" / "synthea-bulk-10"


@pytest.fixture(scope="module")
def generated(sample: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("gen") / "out"
    gen.generate(sample, out, PATIENTS, seed=7)
    return out


def _files(folder: Path) -> Iterator[Path]:
    # The sample's log.ndjson is the exporter's log, not FHIR data.
    return (
        path
        for path in sorted(folder.iterdir())
        if ".ndjson" in path.name and not path.name.startswith("log.")
    )


def _resources(folder: Path) -> dict[str, list[dict[str, Any]]]:
    """A site folder's resources by type, every line parsed."""
    found: dict[str, list[dict[str, Any]]] = {}
    for path in _files(folder):
        data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
        for line in data.splitlines():
            resource = orjson.loads(line)
            found.setdefault(resource["resourceType"], []).append(resource)
    return found


def _references(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "reference" and isinstance(value, str):
                yield value
            else:
                yield from _references(value)
    elif isinstance(node, list):
        for item in node:
            yield from _references(item)


def _unresolved(site: dict[str, list[dict[str, Any]]]) -> list[str]:
    """References of a site that name no resource of that site."""
    ids = {f"{kind}/{r['id']}" for kind, resources in site.items() for r in resources}
    identifiers = {
        f"{kind}?identifier={i.get('system')}|{i.get('value')}"
        for kind, resources in site.items()
        for r in resources
        for i in r.get("identifier", [])
    }
    missing = []
    for resources in site.values():
        for resource in resources:
            contained = {f"#{c['id']}" for c in resource.get("contained", [])}
            for reference in _references(resource):
                if not (reference in ids or reference in identifiers or reference in contained):
                    missing.append(reference)
    return missing


def _source_counts(sample: Path) -> tuple[dict[str, Counter[str]], list[str]]:
    """Per type, resources per source patient (found by the Patient reference in the line)."""
    counts: dict[str, Counter[str]] = {}
    for path in sorted(sample.glob("*.ndjson")):
        if path.name == "log.ndjson":
            continue
        for line in path.read_bytes().splitlines():
            resource_type = path.name.split(".")[0]
            if resource_type == "Patient":
                owner = orjson.loads(line)["id"]
            else:
                match = PATIENT_REFERENCE.search(line)
                owner = match.group(1).decode() if match else "shared"
            counts.setdefault(resource_type, Counter())[owner] += 1
    return counts, sorted(counts["Patient"])


def _moved(text: str, days: int) -> str:
    """The test's own date shift: the day part moves, the rest of the string stays."""
    return (date.fromisoformat(text[:10]) + timedelta(days=days)).isoformat() + text[10:]


def test_counts_scale_by_type_as_clones_of_the_source_patients(
    sample: Path, generated: Path
) -> None:
    counts, patient_ids = _source_counts(sample)
    assert len(patient_ids) == SOURCE_PATIENTS
    cloned = [patient_ids[clone % SOURCE_PATIENTS] for clone in range(PATIENTS)]
    expected = {
        kind: per_patient["shared"] or sum(per_patient[patient] for patient in cloned)
        for kind, per_patient in counts.items()
    }
    written = {kind: len(rows) for kind, rows in _resources(generated / "site-01").items()}
    assert written == expected
    assert written["Patient"] == PATIENTS
    assert written["Organization"] == counts["Organization"]["shared"]  # not multiplied


def test_every_cloned_resource_has_a_fresh_unique_id(sample: Path, generated: Path) -> None:
    site = _resources(generated / "site-01")
    source = _resources(sample)
    for kind, resources in site.items():
        ids = [r["id"] for r in resources]
        assert len(ids) == len(set(ids)), kind
        if kind not in gen.SHARED_TYPES:
            assert not set(ids) & {r["id"] for r in source[kind]}, kind
            assert {uuid.UUID(new).version for new in ids} == {5}, kind


def test_identifier_equal_to_the_id_follows_the_new_id(generated: Path) -> None:
    patient = _resources(generated / "site-01")["Patient"][0]
    mrn = [
        i["value"]
        for i in patient["identifier"]
        if i.get("type", {}).get("text", "") == "Medical Record Number"
    ]
    assert mrn == [patient["id"]]


def test_every_reference_resolves_within_the_site(generated: Path) -> None:
    site = _resources(generated / "site-01")
    assert sum(1 for r in site["Encounter"] for _ in _references(r)) > 0
    assert _unresolved(site) == []


def test_dates_shift_by_one_number_of_days_per_clone(sample: Path, generated: Path) -> None:
    source, site = _resources(sample), _resources(generated / "site-01")
    by_family = {p["name"][0]["family"]: p for p in source["Patient"]}
    latest_source_start = max(e["period"]["start"][:10] for e in source["Encounter"])
    shifts = set()
    for clone in site["Patient"]:
        original = by_family[clone["name"][0]["family"]]
        days = (
            date.fromisoformat(clone["birthDate"]) - date.fromisoformat(original["birthDate"])
        ).days
        assert -gen.MAX_SHIFT_DAYS <= days <= 0
        shifts.add(days)

        def starts(encounters: list[dict[str, Any]], patient: str) -> list[str]:
            return sorted(
                e["period"]["start"] for e in encounters if e["subject"]["reference"] == patient
            )

        moved = [
            _moved(start, days)
            for start in starts(source["Encounter"], f"Patient/{original['id']}")
        ]
        assert starts(site["Encounter"], f"Patient/{clone['id']}") == sorted(moved)
    assert len(shifts) > 1  # clones do not all move alike
    assert max(e["period"]["start"][:10] for e in site["Encounter"]) <= latest_source_start


def test_same_seed_gives_byte_identical_output_whatever_the_workers(
    sample: Path, generated: Path, tmp_path: Path
) -> None:
    gen.generate(sample, tmp_path / "again", PATIENTS, seed=7, workers=2)
    first = {p.relative_to(generated): p.read_bytes() for p in generated.rglob("*") if p.is_file()}
    again = {
        p.relative_to(tmp_path / "again"): p.read_bytes()
        for p in (tmp_path / "again").rglob("*")
        if p.is_file()
    }
    assert first == again


def test_another_seed_gives_other_ids(sample: Path, generated: Path, tmp_path: Path) -> None:
    gen.generate(sample, tmp_path / "other", 1, seed=8)
    other = _resources(tmp_path / "other" / "site-01")["Patient"][0]["id"]
    assert other != _resources(generated / "site-01")["Patient"][0]["id"]
    assert other == gen.clone_id(8, 0, sorted(_source_counts(sample)[1])[0])


def test_gzip_files_hold_the_same_lines(sample: Path, generated: Path, tmp_path: Path) -> None:
    gen.generate(sample, tmp_path / "gz", PATIENTS, seed=7, compress=True)
    zipped = sorted((tmp_path / "gz" / "site-01").glob("*.ndjson.gz"))
    assert len(zipped) == len(list(_files(generated / "site-01")))
    for path in zipped:
        plain = generated / "site-01" / path.name.removesuffix(".gz")
        assert gzip.decompress(path.read_bytes()) == plain.read_bytes()
    manifest = orjson.loads((tmp_path / "gz" / "site-01" / "manifest.json").read_bytes())
    assert all(output["url"].endswith(".ndjson.gz") for output in manifest["output"])


def test_sites_split_patients_and_each_carry_the_reference_data(
    sample: Path, tmp_path: Path
) -> None:
    gen.generate(sample, tmp_path / "out", PATIENTS, sites=3, seed=7)
    sites = [_resources(tmp_path / "out" / gen.site_name(n)) for n in range(3)]
    assert [len(site["Patient"]) for site in sites] == [6, 7, 7]
    assert len({p["id"] for site in sites for p in site["Patient"]}) == PATIENTS
    organizations = len(_resources(sample)["Organization"])
    for site in sites:
        assert len(site["Organization"]) == organizations
        assert _unresolved(site) == []


def test_manifest_lists_every_file_with_its_count(generated: Path) -> None:
    folder = generated / "site-01"
    manifest = orjson.loads((folder / "manifest.json").read_bytes())
    assert manifest["transactionTime"] == "2024-08-06T18:12:57Z"  # the source export's
    assert manifest["requiresAccessToken"] is False
    assert manifest["request"].endswith("/$export")
    listed = {output["url"]: output["count"] for output in manifest["output"]}
    on_disk = {path.name: len(path.read_bytes().splitlines()) for path in _files(folder)}
    assert listed == on_disk
    assert {o["type"] for o in manifest["output"]} == {name.split(".")[0] for name in on_disk}


def test_large_types_are_split_over_several_files(sample: Path, tmp_path: Path) -> None:
    gen.generate(sample, tmp_path / "out", PATIENTS, max_file_bytes=2**20)
    folder = tmp_path / "out" / "site-01"
    parts = sorted(folder.glob("DocumentReference.*.ndjson"))
    assert [p.name for p in parts][:2] == [
        "DocumentReference.000.ndjson",
        "DocumentReference.001.ndjson",
    ]
    assert sum(len(p.read_bytes().splitlines()) for p in parts) == len(
        _resources(folder)["DocumentReference"]
    )
    manifest = orjson.loads((folder / "manifest.json").read_bytes())
    assert {o["url"] for o in manifest["output"]} == {p.name for p in _files(folder)}


def test_bundles_as_input_give_observations_and_type_id_references(
    shared_data: Path, tmp_path: Path
) -> None:
    source = tmp_path / "bundles"
    source.mkdir()
    for name in SMALL_BUNDLES:
        shutil.copy(shared_data / "fhir" / "synthea-bundles" / name, source / name)
    gen.generate(source, tmp_path / "out", 3)
    site = _resources(tmp_path / "out" / "site-01")
    assert len(site["Patient"]) == 3
    assert len(site["Observation"]) > 0
    organizations = [r["id"] for r in site["Organization"]]
    assert len(organizations) == len(set(organizations))  # repeated across bundles, kept once
    references = [ref for rows in site.values() for r in rows for ref in _references(r)]
    assert not [ref for ref in references if ref.startswith("urn:uuid:")]
    assert _unresolved(site) == []


# Hand-written corner cases ---------------------------------------------------------------------


def _write_ndjson(folder: Path, name: str, *resources: dict[str, Any]) -> None:
    folder.mkdir(exist_ok=True)
    (folder / name).write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in resources))


PATIENT = {
    "resourceType": "Patient",
    "id": "p1",
    "meta": {"lastUpdated": "2020-01-02T03:04:05Z"},
    "identifier": [{"system": "urn:example:lot", "value": "2001-02-03"}],
    "birthDate": "2000-03-01",
    "extension": [{"url": "urn:example:partial", "valueDate": "2001-05"}],
}
ENCOUNTER = {
    "resourceType": "Encounter",
    "id": "e1",
    "subject": {"reference": "Patient/p1"},
    "period": {"start": "2010-03-01T10:00:00+01:00", "end": "2010-03-02T10:00:00.5Z"},
}


def test_dates_move_while_codes_partial_dates_and_meta_stay(tmp_path: Path) -> None:
    _write_ndjson(tmp_path / "in", "Patient.ndjson", PATIENT)
    _write_ndjson(tmp_path / "in", "Encounter.ndjson", ENCOUNTER)
    gen.generate(tmp_path / "in", tmp_path / "out", 1, seed=3)
    site = _resources(tmp_path / "out" / "site-01")
    days = gen.shift_days(3, 0)
    assert days < 0
    patient, encounter = site["Patient"][0], site["Encounter"][0]
    assert patient["birthDate"] == _moved("2000-03-01", days)
    assert encounter["period"]["start"] == _moved("2010-03-01T10:00:00+01:00", days)
    assert encounter["period"]["start"].endswith("T10:00:00+01:00")
    assert encounter["period"]["end"].endswith("T10:00:00.5Z")
    assert patient["meta"] == PATIENT["meta"]
    assert patient["identifier"] == PATIENT["identifier"]
    assert patient["extension"] == PATIENT["extension"]
    assert encounter["subject"]["reference"] == f"Patient/{gen.clone_id(3, 0, 'p1')}"


def test_resource_without_a_patient_is_skipped_with_its_reason(tmp_path: Path) -> None:
    orphan = {"resourceType": "Observation", "id": "o1", "status": "final"}
    _write_ndjson(tmp_path / "in", "Patient.ndjson", PATIENT)
    _write_ndjson(tmp_path / "in", "Observation.ndjson", orphan, {"resourceType": "Observation"})
    summary = gen.generate(tmp_path / "in", tmp_path / "out", 2)
    assert summary["skipped"] == {
        "Observation without a Patient reference": 1,
        "Observation without id": 1,
    }
    assert summary["resources"] == {"Patient": 2}


def test_repeated_resource_is_kept_once_with_its_reason(tmp_path: Path) -> None:
    _write_ndjson(tmp_path / "in", "Patient.ndjson", PATIENT)
    _write_ndjson(tmp_path / "in", "Encounter.ndjson", ENCOUNTER, ENCOUNTER)
    summary = gen.generate(tmp_path / "in", tmp_path / "out", 1)
    assert summary["skipped"] == {"repeated Encounter (first one kept)": 1}
    assert summary["resources"] == {"Encounter": 1, "Patient": 1}


def test_invalid_json_line_is_an_error_naming_file_and_line(tmp_path: Path) -> None:
    _write_ndjson(tmp_path / "in", "Patient.ndjson", PATIENT)
    with (tmp_path / "in" / "Patient.ndjson").open("ab") as file:
        file.write(b'{"resourceType": "Patient", \n')
    with pytest.raises(InputError, match=r"Patient\.ndjson:2: not valid JSON"):
        gen.generate(tmp_path / "in", tmp_path / "out", 1)


def test_input_without_patients_is_an_error(tmp_path: Path) -> None:
    _write_ndjson(tmp_path / "in", "Encounter.ndjson", ENCOUNTER)
    with pytest.raises(InputError, match="no Patient resources"):
        gen.generate(tmp_path / "in", tmp_path / "out", 1)


def test_json_that_is_not_a_bundle_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "patient.json").write_bytes(orjson.dumps(PATIENT))
    with pytest.raises(InputError, match="must be a FHIR Bundle"):
        gen.generate(tmp_path / "in", tmp_path / "out", 1)


def test_output_folder_with_files_is_refused(tmp_path: Path) -> None:
    _write_ndjson(tmp_path / "in", "Patient.ndjson", PATIENT)
    _write_ndjson(tmp_path / "out", "stale.ndjson", PATIENT)
    with pytest.raises(UsageError, match="not an empty folder"):
        gen.generate(tmp_path / "in", tmp_path / "out", 1)


def test_more_sites_than_patients_is_refused(tmp_path: Path) -> None:
    _write_ndjson(tmp_path / "in", "Patient.ndjson", PATIENT)
    with pytest.raises(UsageError, match="--sites"):
        gen.generate(tmp_path / "in", tmp_path / "out", 2, sites=3)


def test_cli_prints_a_summary_and_returns_non_zero_on_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _write_ndjson(tmp_path / "in", "Patient.ndjson", PATIENT)
    arguments = ["--input", str(tmp_path / "in"), "--out", str(tmp_path / "out")]
    assert gen.main([*arguments, "--patients", "2", "--workers", "1"]) == 0
    assert orjson.loads(capsys.readouterr().out)["resources"] == {"Patient": 2}
    assert gen.main([*arguments, "--patients", "2"]) == UsageError.exit_code
    assert "not an empty folder" in capsys.readouterr().err
