"""Tiny hand-written Athena folders for the vocabulary tests (helpers, not fixtures)."""

from __future__ import annotations

import gzip
from collections.abc import Sequence
from pathlib import Path

from omopflow import cdm

START, END = "19700101", "20991231"


def concept_row(
    concept_id: int,
    code: str,
    vocabulary: str,
    domain: str = "Condition",
    standard: str = "",
    invalid: str = "",
    name: str | None = None,
    concept_class: str = "Clinical Finding",
) -> list[object]:
    return [
        concept_id,
        name or f"concept {concept_id}",
        domain,
        vocabulary,
        concept_class,
        standard,
        code,
        START,
        END,
        invalid,
    ]


def maps(source: int, target: int, kind: str = "Maps to", invalid: str = "") -> list[object]:
    return [source, target, kind, START, END, invalid]


def write_table(
    folder: Path, table: str, rows: Sequence[Sequence[object]], gz: bool = False
) -> Path:
    """An Athena file: tab-separated, header, unquoted, as Athena writes it."""
    folder.mkdir(parents=True, exist_ok=True)
    header = "\t".join(f.name for f in cdm.table_fields(table))
    text = "\n".join([header, *("\t".join(str(v) for v in row) for row in rows)]) + "\n"
    path = folder / f"{table.upper()}.csv"
    if gz:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(text.encode()))
    else:
        path.write_text(text, encoding="utf-8")
    return path
