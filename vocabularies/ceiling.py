"""What the vocabulary makes possible, computed without Spark, to audit the mapping joins.

An independent, plain-Python reading of the Athena files: a (vocabulary, code) can reach a
standard concept when its concept is valid and standard, or has a valid `Maps to` to a
valid standard concept present in CONCEPT. If the run's unmapped codes (the Usagi file
every release carries) hold any such code, the pipeline's joins lost a mapping the
vocabulary allowed. Meant for audits and tests, not the hot path: it reads CONCEPT into
Python memory (fine for subsets; a full Athena CONCEPT needs a few GB).

    python -m vocabularies.ceiling --vocab vocabularies/sample \\
        --usagi out/demo/current/report/unmapped_codes_usagi.csv
"""

from __future__ import annotations

import argparse
import csv
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

from vocabularies.athena import SUPPLEMENT_DIR

CODE_SYSTEMS = Path(__file__).resolve().parent / "code_systems.tsv"
csv.field_size_limit(sys.maxsize)


def _rows(path: Path) -> Iterator[dict[str, str]]:
    if not path.is_file():
        return
    with path.open(encoding="utf-8", newline="") as handle:
        yield from csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)


def normalisation_rules() -> dict[str, str]:
    """vocabulary_id -> its code normalisation (exact, upper, icd), from code_systems.tsv."""
    rules = {}
    for row in _rows(CODE_SYSTEMS):
        if not row["system"].startswith("#"):
            rules[row["vocabulary_id"]] = row["code_normalisation"]
    return rules


def normalise(code: str, rule: str) -> str:
    code = code.strip()
    if rule == "icd":
        return code.upper().replace(".", "")
    return code.upper() if rule == "upper" else code


def mappable_codes(
    vocab_dirs: Sequence[Path], with_supplement: bool = True
) -> set[tuple[str, str]]:
    """(vocabulary_id, normalised code) of every concept that reaches a standard concept."""
    folders = [*vocab_dirs, SUPPLEMENT_DIR] if with_supplement else list(vocab_dirs)
    rules = normalisation_rules()
    valid_standard: set[int] = set()
    codes: dict[int, tuple[str, str]] = {}
    for folder in folders:
        for row in _rows(folder / "CONCEPT.csv"):
            concept_id = int(row["concept_id"])
            vocabulary = row["vocabulary_id"]
            codes[concept_id] = (
                vocabulary,
                normalise(row["concept_code"], rules.get(vocabulary, "exact")),
            )
            if row["standard_concept"] == "S" and not row["invalid_reason"]:
                valid_standard.add(concept_id)
    reaching = set(valid_standard)
    for folder in folders:
        for row in _rows(folder / "CONCEPT_RELATIONSHIP.csv"):
            maps_to = row["relationship_id"] == "Maps to" and not row["invalid_reason"]
            if maps_to and int(row["concept_id_2"]) in valid_standard:
                reaching.add(int(row["concept_id_1"]))
    return {codes[c] for c in reaching if c in codes and c != 0}


def lost_mappings(usagi_csv: Path, vocab_dirs: Sequence[Path]) -> list[dict[str, str]]:
    """Rows of a run's Usagi file whose code the vocabulary could have mapped."""
    possible = mappable_codes(vocab_dirs)
    rules = normalisation_rules()
    lost = []
    with usagi_csv.open(encoding="utf-8", newline="") as handle:
        for row in csv.DictReader(handle):
            vocabulary = row["ADD_INFO:vocabulary_id"]
            code = normalise(row["sourceCode"], rules.get(vocabulary, "exact"))
            if (vocabulary, code) in possible:
                lost.append(row)
    return lost


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vocab", required=True, type=Path, action="append")
    parser.add_argument("--usagi", required=True, type=Path, help="a release's Usagi CSV")
    args = parser.parse_args(argv)
    lost = lost_mappings(args.usagi, args.vocab)
    with args.usagi.open(encoding="utf-8") as handle:
        unmapped = sum(1 for _ in handle) - 1
    print(f"{unmapped} unmapped codes; {len(lost)} of them the vocabulary could have mapped")
    for row in lost:
        print(f"  {row['ADD_INFO:vocabulary_id']} {row['sourceCode']} ({row['sourceFrequency']})")
    return 1 if lost else 0


if __name__ == "__main__":
    sys.exit(main())
