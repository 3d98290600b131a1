"""The independent audit of mapping joins: which codes a vocabulary lets reach a standard
concept, and which of a run's unmapped codes were among them."""

from __future__ import annotations

from pathlib import Path

from vocabularies.ceiling import lost_mappings, main, mappable_codes

CONCEPT_HEADER = (
    "concept_id\tconcept_name\tdomain_id\tvocabulary_id\tconcept_class_id\t"
    "standard_concept\tconcept_code\tvalid_start_date\tvalid_end_date\tinvalid_reason"
)
CONCEPTS = [
    (201826, "Type 2 diabetes", "SNOMED", "S", "44054006", ""),
    (1, "maps to the standard one", "SNOMED", "", "111", ""),
    (2, "maps nowhere", "SNOMED", "", "222", ""),
    (3, "maps to a retired concept", "SNOMED", "", "333", ""),
    (4, "retired standard", "SNOMED", "S", "444", "D"),
    (5, "KCD diabetes", "KCD7", "", "E11.9", ""),
]
MAPS_TO = [(1, 201826, ""), (3, 4, ""), (5, 201826, ""), (2, 201826, "D")]


def athena(folder: Path) -> Path:
    folder.mkdir()
    dates = "19700101\t20991231"
    lines = [CONCEPT_HEADER] + [
        f"{cid}\t{name}\tCondition\t{vocab}\tClinical Finding\t{std}\t{code}\t{dates}\t{bad}"
        for cid, name, vocab, std, code, bad in CONCEPTS
    ]
    (folder / "CONCEPT.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    rels = [
        "concept_id_1\tconcept_id_2\trelationship_id\tvalid_start_date\tvalid_end_date\tinvalid_reason"
    ]
    rels += [f"{a}\t{b}\tMaps to\t19700101\t20991231\t{bad}" for a, b, bad in MAPS_TO]
    (folder / "CONCEPT_RELATIONSHIP.csv").write_text("\n".join(rels) + "\n", encoding="utf-8")
    return folder


def usagi(path: Path, rows: list[tuple[str, str]]) -> Path:
    header = (
        "sourceCode,sourceName,sourceFrequency,sourceAutoAssignedConceptIds,"
        "ADD_INFO:system,ADD_INFO:vocabulary_id,ADD_INFO:source_concept_id"
    )
    lines = [header] + [f"{code},x,3,,sys,{vocab}," for vocab, code in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_standard_and_validly_mapped_codes_are_mappable(tmp_path):
    possible = mappable_codes([athena(tmp_path / "v")], with_supplement=False)
    assert {("SNOMED", "44054006"), ("SNOMED", "111"), ("KCD7", "E119")} <= possible


def test_codes_without_a_valid_route_to_a_valid_standard_concept_are_not(tmp_path):
    possible = mappable_codes([athena(tmp_path / "v")], with_supplement=False)
    assert not {("SNOMED", "222"), ("SNOMED", "333"), ("SNOMED", "444")} & possible


def test_an_unmapped_code_the_vocabulary_could_map_is_reported(tmp_path):
    vocab = athena(tmp_path / "v")
    run = usagi(tmp_path / "u.csv", [("SNOMED", "222"), ("SNOMED", "111"), ("KCD7", "e11.9")])
    lost = lost_mappings(run, [vocab])
    assert sorted((r["ADD_INFO:vocabulary_id"], r["sourceCode"]) for r in lost) == [
        ("KCD7", "e11.9"),
        ("SNOMED", "111"),
    ]
    assert main(["--vocab", str(vocab), "--usagi", str(run)]) == 1


def test_a_run_that_lost_nothing_passes(tmp_path, capsys):
    vocab = athena(tmp_path / "v")
    run = usagi(tmp_path / "u.csv", [("SNOMED", "222"), ("RxNorm", "999")])
    assert main(["--vocab", str(vocab), "--usagi", str(run)]) == 0
    assert "2 unmapped codes; 0 of them" in capsys.readouterr().out
