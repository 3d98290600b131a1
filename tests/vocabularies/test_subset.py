"""The subset builder, and the shipped sample vocabulary it produced."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from tests.vocabularies.athena_fixtures import concept_row, maps, write_table
from vocabularies.athena import SAMPLE_DIR, load_release
from vocabularies.mapping import build_maps, map_code
from vocabularies.subset import build_subset, codes_frame, scan_codes

SNOMED = "http://snomed.info/sct"
UCUM = "http://unitsofmeasure.org"


def fhir_input(folder: Path) -> Path:
    folder.mkdir(parents=True)
    condition = {
        "resourceType": "Condition",
        "code": {"coding": [{"system": SNOMED, "code": "222", "display": "mapped"}]},
    }
    observation = {
        "resourceType": "Observation",
        "code": {"coding": [{"code": "no-system"}]},
        "valueQuantity": {"value": 1.5, "unit": "mg/dL", "system": UCUM, "code": "mg/dL"},
    }
    bundle = {"resourceType": "Bundle", "entry": [{"resource": observation}]}
    (folder / "Condition.000.ndjson").write_text(json.dumps(condition) + "\n\n")
    (folder / "bundle.json").write_text(json.dumps(bundle))
    (folder / "Other.ndjson.gz").write_bytes(gzip.compress(b'{"system": null, "code": "n"}\n'))
    (folder / "notes.txt").write_text('{"system": "http://x", "code": "ignored"}')
    return folder


def test_scan_finds_codings_and_quantities_at_any_depth(tmp_path):
    found = scan_codes([fhir_input(tmp_path / "in")])
    # a coding without a system key is not a (system, code) pair; non-FHIR files are skipped
    assert found == {(SNOMED, "222"), (UCUM, "mg/dL"), (None, "n")}


def test_subset_keeps_codes_targets_ancestors_and_small_vocabularies(spark, tmp_path):
    full = tmp_path / "full"
    write_table(
        full,
        "concept",
        [
            concept_row(1001, "111", "SNOMED", standard="S"),
            concept_row(1002, "222", "SNOMED"),
            concept_row(1013, "888", "SNOMED", standard="S"),
            concept_row(1100, "100", "SNOMED", standard="S", name="ancestor"),
            concept_row(1020, "mg/dL", "UCUM", domain="Unit", standard="S"),
            concept_row(1021, "kg", "UCUM", domain="Unit", standard="S"),
        ],
    )
    write_table(
        full,
        "concept_relationship",
        [maps(1002, 1001), maps(1001, 1002, "Mapped from"), maps(1013, 1013)],
    )
    write_table(full, "concept_ancestor", [[1100, 1001, 1, 1], [1100, 1013, 1, 1]])
    write_table(full, "vocabulary", [["SNOMED", "SNOMED CT", "", "2023", 44819097]])
    out = build_subset(spark, full, fhir_input(tmp_path / "in"), tmp_path / "out")

    assert (out / "CONCEPT.csv").is_file() and (out / "VOCABULARY.csv").is_file()
    sample = load_release(spark, out, tmp_path / "cache", with_supplement=False)
    kept = {r.concept_id for r in sample.table("concept").select("concept_id").collect()}
    assert kept == {1001, 1002, 1100, 1020, 1021}  # 1013 is used by no input code
    relationships = sample.table("concept_relationship").select("relationship_id").collect()
    assert sorted(r.relationship_id for r in relationships) == ["Mapped from", "Maps to"]
    assert sample.table("concept_ancestor").count() == 1
    assert sample.table("vocabulary").count() == 1


def test_subset_accepts_a_codes_frame(spark, tmp_path):
    full = tmp_path / "full"
    write_table(full, "concept", [concept_row(1001, "111", "SNOMED", standard="S")])
    codes = codes_frame(spark, [(SNOMED, "111")])
    out = build_subset(spark, full, codes, tmp_path / "out")
    assert "\t111\t" in (out / "CONCEPT.csv").read_text()


@pytest.mark.slow
def test_shipped_sample_maps_every_input_code_the_full_subset_maps(spark, shared_data, tmp_path):
    vocab = shared_data / "vocab"
    inputs = [
        shared_data / "fhir" / name
        for name in ("synthea-bulk-10", "synthea-bundles", "kr-core-examples")
    ]
    codes = codes_frame(spark, scan_codes(inputs))

    def standard_codes(release_dirs: list[Path], cache: Path) -> set[tuple[str, str]]:
        maps = build_maps(spark, load_release(spark, release_dirs, cache))
        mapped = map_code(codes, "system", "code", maps, "c").where("c_concept_id != 0")
        return {(r.system, r.code) for r in mapped.select("system", "code").distinct().collect()}

    full = standard_codes([vocab / "athena-subset", vocab / "korean-partial"], tmp_path / "a")
    shipped = standard_codes([SAMPLE_DIR], tmp_path / "b")
    assert len(full) > 500
    assert full - shipped == set()
