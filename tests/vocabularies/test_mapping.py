"""The source-to-standard map rules and the `map_codings` policy, one corner per test."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.vocabularies.athena_fixtures import concept_row, maps, write_table
from vocabularies.athena import VocabularyError, load_release
from vocabularies.mapping import build_maps, code_systems, map_code, map_codings, read_code_systems

SNOMED = "http://snomed.info/sct"
ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm"
CVX = "http://hl7.org/fhir/sid/cvx"
KCD = "http://www.hl7korea.or.kr/CodeSystem/kostat-kcd-8"
UCUM = "http://unitsofmeasure.org"
CODINGS = "id string, codings array<struct<system:string,code:string,display:string>>"


@pytest.fixture(scope="module")
def vocab(spark, tmp_path_factory):
    folder: Path = tmp_path_factory.mktemp("vocab")
    write_table(
        folder,
        "concept",
        [
            concept_row(1001, "111", "SNOMED", standard="S"),
            concept_row(1002, "222", "SNOMED"),
            concept_row(1003, "E11.9", "ICD10CM"),
            concept_row(1004, "444", "SNOMED", standard="S"),
            concept_row(1005, "Z99", "ICD10CM"),
            concept_row(1007, "Z82.4", "ICD10CM"),
            concept_row(1008, "555", "SNOMED", domain="Observation", standard="S"),
            concept_row(1009, "666", "SNOMED", standard="S"),
            concept_row(1010, "08", "CVX", domain="Drug", standard="S", concept_class="CVX"),
            concept_row(1011, "E11.9", "KCD7", concept_class="KCD7 code"),
            concept_row(1012, "777", "SNOMED", domain="Procedure"),
            concept_row(1013, "888", "SNOMED"),
            concept_row(1030, "653400910", "KDC", domain="Drug", concept_class="Drug"),
            concept_row(1020, "mg/dL", "UCUM", domain="Unit", standard="S", concept_class="Unit"),
        ],
    )
    write_table(
        folder,
        "concept_relationship",
        [
            maps(1001, 1001),
            maps(1002, 1001),
            maps(1002, 7777777),  # target absent from CONCEPT: ignored
            maps(1002, 1013),  # target not standard: ignored
            maps(1003, 1001),
            maps(1003, 1004),
            maps(1005, 1001, invalid="D"),
            maps(1007, 1008),
            maps(1007, 1009, kind="Maps to value"),
            maps(1011, 1001),
        ],
    )
    release = load_release(spark, folder, tmp_path_factory.mktemp("cache"))
    return build_maps(spark, release)


def mapped(spark, vocab, *codings: tuple[str | None, str | None, str | None]) -> list[Any]:
    df = spark.createDataFrame([("r1", list(codings))], CODINGS)
    rows = map_codings(df, "codings", vocab, "c").orderBy("c_concept_id").collect()
    return rows


def test_standard_code_maps_to_itself(spark, vocab):
    [row] = mapped(spark, vocab, (SNOMED, "111", "finding"))
    assert (row.c_source_concept_id, row.c_concept_id, row.c_domain_id) == (1001, 1001, "Condition")
    assert (row.c_source_value, row.c_vocabulary_id, row.c_display) == ("111", "SNOMED", "finding")


def test_non_standard_code_follows_maps_to_ignoring_dangling_and_non_standard_targets(spark, vocab):
    [row] = mapped(spark, vocab, (SNOMED, "222", None))
    assert (row.c_source_concept_id, row.c_concept_id) == (1002, 1001)


def test_invalid_mapping_is_ignored_but_source_kept(spark, vocab):
    [row] = mapped(spark, vocab, (ICD10CM, "Z99", None))
    assert (row.c_source_concept_id, row.c_concept_id) == (1005, 0)
    assert row.c_domain_id == "Condition"  # the source concept's domain when unmapped


def test_one_source_with_two_targets_gives_two_rows(spark, vocab):
    rows = mapped(spark, vocab, (ICD10CM, "E11.9", None))
    assert [r.c_concept_id for r in rows] == [1001, 1004]
    assert {r.c_source_concept_id for r in rows} == {1003}


def test_each_row_says_how_many_targets_its_code_has(spark, vocab):
    rows = mapped(spark, vocab, (ICD10CM, "E11.9", None))
    assert [r.c_targets for r in rows] == [2, 2]
    [unknown] = mapped(spark, vocab, (SNOMED, "999999", None))
    assert unknown.c_targets == 1  # the one "no matching concept" row


def test_lowest_target_keeps_one_row_per_input_row(spark, vocab):
    """For a value, route or unit: the lowest concept id, the row not multiplied."""
    df = spark.createDataFrame([("r1", [(ICD10CM, "E11.9", None)])], CODINGS)
    [row] = map_codings(df, "codings", vocab, "c", lowest_target=True).collect()
    assert (row.id, row.c_concept_id, row.c_source_concept_id, row.c_targets) == (
        "r1",
        1001,
        1003,
        2,
    )


def test_maps_to_value_is_kept_for_observations(spark, vocab):
    [row] = mapped(spark, vocab, (ICD10CM, "Z82.4", None))
    assert (row.c_concept_id, row.c_domain_id, row.c_value_concept_id) == (
        1008,
        "Observation",
        1009,
    )


def test_unknown_code_gives_zero_and_keeps_source_value(spark, vocab):
    [row] = mapped(spark, vocab, (SNOMED, "999999", "made up"))
    assert (row.c_source_concept_id, row.c_concept_id) == (0, 0)
    assert (row.c_source_value, row.c_vocabulary_id, row.c_system) == ("999999", "SNOMED", SNOMED)


def test_unknown_system_gives_zero_and_no_vocabulary(spark, vocab):
    [row] = mapped(spark, vocab, ("http://example.org/local", "111", None))
    assert (row.c_source_concept_id, row.c_concept_id, row.c_vocabulary_id) == (0, 0, None)
    assert row.c_source_value == "111"


@pytest.mark.parametrize("code", ["E11.9", "E119", " e119 "])
def test_kcd_code_with_or_without_dot_finds_the_source_concept(spark, vocab, code):
    [row] = mapped(spark, vocab, (KCD, code, None))
    assert (row.c_source_concept_id, row.c_concept_id, row.c_vocabulary_id) == (1011, 1001, "KCD7")
    assert row.c_source_value == code  # the source value stays as sent


def test_standard_cvx_without_self_map_maps_to_itself(spark, vocab):
    [row] = mapped(spark, vocab, (CVX, "08", None))
    assert (row.c_source_concept_id, row.c_concept_id, row.c_domain_id) == (1010, 1010, "Drug")


def test_coding_reaching_a_standard_concept_is_preferred(spark, vocab):
    [row] = mapped(
        spark,
        vocab,
        ("http://example.org/local", "X1", "local"),
        (SNOMED, "777", "known, unmapped"),
        (SNOMED, "222", "mapped"),
    )
    assert (row.c_source_value, row.c_concept_id, row.c_display) == ("222", 1001, "mapped")


def test_known_source_concept_is_preferred_over_unknown_code(spark, vocab):
    [row] = mapped(spark, vocab, ("http://example.org/local", "X1", None), (SNOMED, "777", None))
    assert (row.c_source_value, row.c_source_concept_id, row.c_concept_id) == ("777", 1012, 0)
    assert row.c_domain_id == "Procedure"


def test_system_with_two_vocabularies_uses_the_one_that_knows_the_code(spark, vocab):
    edi_drug = "http://www.hl7korea.or.kr/CodeSystem/hira-edi-medication"
    [row] = mapped(spark, vocab, (edi_drug, "653400910", None))
    assert (row.c_vocabulary_id, row.c_source_concept_id, row.c_concept_id) == ("KDC", 1030, 0)


def test_rows_without_codings_are_kept_with_zero(spark, vocab):
    df = spark.createDataFrame([("empty", []), ("null", None)], CODINGS)
    rows = map_codings(df, "codings", vocab, "c").orderBy("id").collect()
    assert [(r.id, r.c_concept_id, r.c_source_concept_id, r.c_source_value) for r in rows] == [
        ("empty", 0, 0, None),
        ("null", 0, 0, None),
    ]


def test_codings_without_a_code_field_are_refused(spark, vocab):
    df = spark.createDataFrame([("r", [("x",)])], "id string, codings array<struct<system:string>>")
    with pytest.raises(TypeError, match="lack"):
        map_codings(df, "codings", vocab, "c")


def test_map_code_maps_a_unit(spark, vocab):
    df = spark.createDataFrame(
        [(UCUM, "mg/dL"), (UCUM, "MG/DL"), (None, "mg/dL")], "s string, u string"
    )
    rows = map_code(df, "s", "u", vocab, "unit").orderBy("s", "u").collect()
    # UCUM is case-sensitive, and a unit without a system is not guessed
    assert [(r.u, r.unit_concept_id) for r in rows] == [("mg/dL", 0), ("MG/DL", 0), ("mg/dL", 1020)]
    assert "s" in rows[0].asDict() and "__unit_codings" not in rows[0].asDict()


def test_code_systems_cover_the_kr_core_uris(spark, shared_data):
    systems: dict[str, set[str]] = {}
    for r in read_code_systems():
        systems.setdefault(r["system"], set()).add(r["vocabulary_id"])
    listed = (shared_data / "fhir/kr-core-examples/system-uris.tsv").read_text().splitlines()
    kr_code_systems = [
        line.split("\t")[0]
        for line in listed[1:]
        if "kcd" in line.split("\t")[0] or "hira-edi" in line.split("\t")[0]
    ]
    assert kr_code_systems
    for uri in kr_code_systems:
        assert systems[uri] & {"KCD7", "EDI"}
    assert code_systems(spark).where("system = 'http://loinc.org'").count() == 1


def test_unknown_normalisation_in_code_systems_is_refused(tmp_path):
    bad = tmp_path / "code_systems.tsv"
    bad.write_text(
        "system\tvocabulary_id\tpriority\tcode_normalisation\tnote\nhttp://x\tX\t1\tlower\t-\n"
    )
    with pytest.raises(VocabularyError, match="unknown code_normalisation"):
        read_code_systems(bad)


def test_runs_sharing_a_cache_build_the_map_once_and_both_read_it(spark, tmp_path, monkeypatch):
    """Two runs on one vocabulary cache: the second waits for the first's map instead of
    replacing its folder while the first reads it."""
    from concurrent.futures import ThreadPoolExecutor

    from vocabularies import mapping

    folder = tmp_path / "vocab"
    folder.mkdir()
    write_table(folder, "concept", [concept_row(1, "111", "SNOMED", standard="S")])
    write_table(folder, "concept_relationship", [maps(1, 1)])
    release = load_release(spark, folder, tmp_path / "cache")
    built = []
    write_map = mapping._write_map
    monkeypatch.setattr(
        mapping, "_write_map", lambda *args: (built.append(args[-1]), write_map(*args))
    )
    systems = code_systems(spark)

    def read_map() -> list[tuple[Any, ...]]:
        rows = mapping.source_to_standard(spark, release, systems).collect()
        return sorted(tuple(row) for row in rows)

    with ThreadPoolExecutor(2) as pool:
        first, second = pool.map(lambda _: read_map(), range(2))
    assert len(built) == 1
    assert first == second and first
