"""Side by side with OHDSI ETL-Synthea: rows per person per table and unmapped shares.

The reference folder holds ETL-Synthea's CDM tables as CSV (`PERSON.csv`, ...), as in
`../shared/data/omop-reference/`; the release is an omopflow release folder (`current/`).
Patients differ between the two, so the comparison is of distributions: rows per person
per table, and the share of rows whose main concept is 0 (unmapped). It runs in DuckDB on
the files, so it needs no Spark.

    python -m benchmarks.etl_synthea --release out/b50/current \\
        --reference ../shared/data/omop-reference/synthea1k-etl-synthea [--markdown]
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import duckdb

# Table -> its main concept column (the one DQD's "standard concept completeness" reads).
TABLES = {
    "person": "gender_concept_id",
    "observation_period": None,
    "visit_occurrence": "visit_concept_id",
    "condition_occurrence": "condition_concept_id",
    "drug_exposure": "drug_concept_id",
    "procedure_occurrence": "procedure_concept_id",
    "measurement": "measurement_concept_id",
    "observation": "observation_concept_id",
    "device_exposure": "device_concept_id",
    "death": None,
    "condition_era": "condition_concept_id",
    "drug_era": "drug_concept_id",
}


@dataclass(frozen=True)
class TableShape:
    table: str
    rows: int
    rows_per_person: float
    persons_with_rows: float  # share of persons with at least one row
    concept_zero: float | None  # share of rows whose main concept is 0


def _source(folder: Path, table: str) -> str | None:
    """A DuckDB table expression for `table` in a release (Parquet) or a reference (CSV)."""
    parquet = folder / table
    if parquet.is_dir() and any(parquet.rglob("*.parquet")):
        return f"read_parquet('{parquet}/**/*.parquet')"
    csv = folder / f"{table.upper()}.csv"
    if csv.is_file():
        return f"read_csv('{csv}', header = true, all_varchar = true)"
    return None


def shapes(folder: Path) -> dict[str, TableShape]:
    """The shape of every known table present in `folder`."""
    found: dict[str, TableShape] = {}
    with duckdb.connect() as con:
        person = _source(folder, "person")
        if person is None:
            raise SystemExit(f"no person table in {folder}")
        persons = con.execute(f"SELECT count(*) FROM {person}").fetchone()[0]  # type: ignore[index]
        for table, concept in TABLES.items():
            source = _source(folder, table)
            if source is None:
                continue
            zero = f"avg(CASE WHEN CAST({concept} AS BIGINT) = 0 THEN 1.0 ELSE 0 END)"
            rows, with_rows, zero_share = con.execute(
                f"SELECT count(*), count(DISTINCT person_id), "
                f"{zero if concept else 'NULL'} FROM {source}"
            ).fetchone()  # type: ignore[misc]
            found[table] = TableShape(
                table,
                rows,
                round(rows / persons, 2) if persons else 0.0,
                round(with_rows / persons, 3) if persons else 0.0,
                round(zero_share, 3) if zero_share is not None else None,
            )
    return found


def markdown(ours: dict[str, TableShape], reference: dict[str, TableShape]) -> str:
    """One table: per OMOP table, rows per person and concept-0 share, both sides."""
    lines = [
        "| table | omopflow rows | rows/person | persons with rows | concept 0 "
        "| ETL-Synthea rows | rows/person | persons with rows | concept 0 |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]

    def cells(shape: TableShape | None) -> str:
        if shape is None:
            return "- | - | - | -"
        zero = "" if shape.concept_zero is None else f"{shape.concept_zero:.1%}"
        return (
            f"{shape.rows:,} | {shape.rows_per_person:.2f} | {shape.persons_with_rows:.0%} | {zero}"
        )

    for table in TABLES:
        if table in ours or table in reference:
            lines.append(f"| {table} | {cells(ours.get(table))} | {cells(reference.get(table))} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--release", required=True, type=Path, help="an omopflow release")
    parser.add_argument("--reference", required=True, type=Path, help="ETL-Synthea CSV folder")
    parser.add_argument("--markdown", action="store_true", help="print a Markdown table")
    args = parser.parse_args(argv)
    ours, reference = shapes(args.release), shapes(args.reference)
    if args.markdown:
        print(markdown(ours, reference))
    else:
        body = {
            "omopflow": {k: asdict(v) for k, v in ours.items()},
            "etl_synthea": {k: asdict(v) for k, v in reference.items()},
        }
        json.dump(body, sys.stdout, indent=2)
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
