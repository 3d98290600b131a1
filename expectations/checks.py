"""The checks of the gate, derived from the CDM v5.4 field spec and the OHDSI DQD control files.

A `Check` is one DQD check applied to one table (and field, and for concept-level checks one
concept): its name, the DQD check type, a severity and a threshold. `checks_for_table` turns
the control files in `expectations/dqd/` into checks; `expectations.generate` writes them as
Great Expectations suites, and the gate reads the suites back, so the suite files are the one
list of what runs.

Severity: DQD grades check types as fatal, convention or characterization. The gate blocks a
release (`error`) on every fatal check and on the convention and plausibility checks whose
failures make a release wrong rather than unusual (non-standard or wrong-domain concepts,
events before birth or long after death, ends before starts, dates in the future, birth
fields or lab values outside DQD's ranges). Everything else is a `warning`: recorded in
the report, published anyway.
"""

from __future__ import annotations

import csv
import dataclasses
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from omopflow import cdm

DQD_DIR = Path(__file__).parent / "dqd"

ERROR = "error"
WARNING = "warning"

# Why each of these blocks: see the module docstring. Check types not named here are
# warnings unless DQD itself grades them fatal.
BLOCKING_CHECK_TYPES = frozenset(
    {
        "cdmTable",
        "cdmField",
        "cdmDatatype",
        "isRequired",
        "isPrimaryKey",
        "isForeignKey",
        "fkDomain",
        "isStandardValidConcept",
        "plausibleStartBeforeEnd",
        "plausibleAfterBirth",
        "plausibleBeforeDeath",
        "measureObservationPeriodOverlap",
        "ledgerSum",
    }
)

# Vocabulary and cohort tables are loaded from Athena, not built by the ETL: no suites.
NOT_BUILT_TABLES = frozenset(
    {
        "concept",
        "vocabulary",
        "domain",
        "concept_class",
        "concept_relationship",
        "relationship",
        "concept_synonym",
        "concept_ancestor",
        "source_to_concept_map",
        "drug_strength",
        "cohort",
        "cohort_definition",
    }
)

# DQD's concept-level value ranges are listed for OBSERVATION only, but domain routing puts a
# concept in the table of its domain, so a range for a concept holds in both value tables.
VALUE_TABLES = {"observation": "observation_concept_id", "measurement": "measurement_concept_id"}


@dataclass(frozen=True)
class Check:
    check_type: str  # the DQD check name, e.g. isRequired
    table: str
    field: str | None  # None for table-level checks
    severity: str  # ERROR or WARNING
    threshold: float  # share of rows allowed to fail, 0..1 (DQD percent / 100)
    params: dict[str, Any] = dataclasses.field(default_factory=dict, hash=False)
    qualifier: str = ""  # concept-level checks: "<concept_id>" or "<concept_id>.<unit_id>"

    @property
    def name(self) -> str:
        parts = [self.check_type, self.table, self.field, self.qualifier]
        return ".".join(p for p in parts if p)


def severity_of(
    check_type: str, dqd_severity: str, field_name: str | None = None, table: str = ""
) -> str:
    if check_type in ("plausibleValueLow", "plausibleValueHigh"):
        return _plausible_value_severity(check_type, field_name or "", table)
    if check_type in BLOCKING_CHECK_TYPES or dqd_severity == "fatal":
        return ERROR
    return WARNING


def _plausible_value_severity(check_type: str, field_name: str, table: str) -> str:
    """Impossible values block; unusual ones (old dates, long prescriptions) only warn."""
    if table == "person" or field_name == "value_as_number":
        return ERROR  # birth dates out of the calendar or the future; lab values out of range
    if "date" in field_name:
        # Records starting in the future are excluded at mapping, so one here is a mapping
        # bug: it blocks. An end date after today is an ongoing prescription or stay: warn.
        # DQD's 1950-01-01 floor is a convention (old records): warn.
        ongoing = "end_date" in field_name or "end_datetime" in field_name
        return ERROR if check_type == "plausibleValueHigh" and not ongoing else WARNING
    return WARNING  # quantities, days of supply, refills, era counts: DQD characterization


@cache
def _read(name: str) -> tuple[dict[str, str], ...]:
    with (DQD_DIR / f"OMOP_CDMv5.4_{name}.csv").open(encoding="utf-8") as handle:
        return tuple(csv.DictReader(handle))


@cache
def check_descriptions() -> dict[str, dict[str, str]]:
    """DQD check types by name: level, description, Kahn category, DQD severity."""
    return {row["checkName"]: row for row in _read("Check_Descriptions")}


def _threshold(row: dict[str, str], check_type: str) -> float:
    value = row.get(f"{check_type}Threshold", "") or "0"
    return float(value) / 100


def _make(
    check_type: str, table: str, field_name: str | None, threshold: float, **kw: Any
) -> Check:
    dqd_severity = check_descriptions()[check_type]["severity"]
    qualifier = kw.pop("qualifier", "")
    return Check(
        check_type=check_type,
        table=table,
        field=field_name,
        severity=severity_of(check_type, dqd_severity, field_name, table),
        threshold=threshold,
        params=kw,
        qualifier=qualifier,
    )


def _plausible_bound(text: str) -> dict[str, Any]:
    """Turn a DQD bound ('19500101', 'DATEADD(dd,1,GETDATE())', '1850') into params."""
    text = text.strip()
    if text == "DATEADD(dd,1,GETDATE())":
        return {"bound": "tomorrow"}  # resolved against the run's date, not at generation
    if text == "YEAR(GETDATE())+1":
        return {"bound": "next_year"}
    if text.startswith("'"):
        digits = text.strip("'")
        return {"bound": f"{digits[:4]}-{digits[4:6]}-{digits[6:]}"}
    return {"bound": float(text)}


def table_checks(table: str) -> list[Check]:
    """Table-level checks: the table is present, persons have records, periods overlap."""
    rows = [r for r in _read("Table_Level") if r["cdmTableName"].lower() == table]
    found: list[Check] = []
    for row in rows:
        if row["isRequired"] == "Yes":
            found.append(_make("cdmTable", table, None, 0.0))
        if row["measurePersonCompleteness"] == "Yes":
            threshold = _threshold(row, "measurePersonCompleteness")
            found.append(_make("measurePersonCompleteness", table, None, threshold))
        if row["measureObservationPeriodOverlap"] == "Yes":
            threshold = _threshold(row, "measureObservationPeriodOverlap")
            found.append(_make("measureObservationPeriodOverlap", table, None, threshold))
    return found


def field_checks(table: str) -> list[Check]:
    """Field-level checks: CDM spec rules (from omopflow.cdm) and DQD field checks."""
    spec = {f.name: f for f in cdm.table_fields(table)}
    dqd = {
        r["cdmFieldName"].lower(): r
        for r in _read("Field_Level")
        if r["cdmTableName"].lower() == table
    }
    found: list[Check] = []
    for name, spec_field in spec.items():
        row = dqd.get(name, {})
        found.append(_make("cdmField", table, name, 0.0))
        found.append(_make("cdmDatatype", table, name, 0.0))
        if spec_field.required:
            found.append(_make("isRequired", table, name, _threshold(row, "isRequired")))
        if spec_field.primary_key:
            found.append(_make("isPrimaryKey", table, name, _threshold(row, "isPrimaryKey")))
        if spec_field.fk_table:
            fk_field = (row.get("fkFieldName") or "").lower() or _primary_key(spec_field.fk_table)
            found.append(
                _make(
                    "isForeignKey",
                    table,
                    name,
                    _threshold(row, "isForeignKey"),
                    fk_table=spec_field.fk_table,
                    fk_field=fk_field,
                )
            )
        found.extend(_dqd_field_checks(table, name, row))
    return found


def _primary_key(table: str) -> str:
    keys = [f.name for f in cdm.table_fields(table) if f.primary_key]
    return keys[0] if keys else f"{table}_id"


def _dqd_field_checks(table: str, name: str, row: dict[str, str]) -> list[Check]:
    found: list[Check] = []

    def add(check_type: str, **params: Any) -> None:
        found.append(_make(check_type, table, name, _threshold(row, check_type), **params))

    if row.get("fkDomain"):
        add("fkDomain", domain=row["fkDomain"])
    if row.get("fkClass"):
        add("fkClass", concept_class=row["fkClass"])
    for simple in (
        "isStandardValidConcept",
        "measureValueCompleteness",
        "standardConceptRecordCompleteness",
        "sourceConceptRecordCompleteness",
        "plausibleDuringLife",
        "plausibleAfterBirth",
        "plausibleBeforeDeath",
        "withinVisitDates",
    ):
        if row.get(simple) == "Yes":
            add(simple)
    if row.get("sourceValueCompleteness") == "Yes" and row.get("standardConceptFieldName"):
        add("sourceValueCompleteness", concept_field=row["standardConceptFieldName"].lower())
    for bound in ("plausibleValueLow", "plausibleValueHigh"):
        if row.get(bound):
            add(bound, **_plausible_bound(row[bound]))
    if row.get("plausibleStartBeforeEnd") == "Yes":
        add("plausibleStartBeforeEnd", end_field=row["plausibleStartBeforeEndFieldName"].lower())
    if row.get("plausibleTemporalAfter") == "Yes":
        add(
            "plausibleTemporalAfter",
            after_table=row["plausibleTemporalAfterTableName"].lower(),
            after_field=row["plausibleTemporalAfterFieldName"].lower(),
        )
    return found


def concept_checks(table: str) -> list[Check]:
    """Concept-level checks: value ranges per concept and unit, units, gender."""
    found: list[Check] = []
    for row in _read("Concept_Level"):
        source_table = row["cdmTableName"].lower()
        concept_field = row["cdmFieldName"].lower()
        if not row["conceptId"].isdigit():
            continue  # a list of ancestors: plausibleGenderUseDescendants, not covered
        concept_id = int(row["conceptId"])
        ranged = row["plausibleValueLow"] or row["plausibleValueHigh"]
        if ranged and table in VALUE_TABLES and source_table in VALUE_TABLES:
            found.extend(_value_range_checks(table, row))
        if source_table != table:
            continue
        if row["plausibleUnitConceptIds"]:
            units = [int(u) for u in row["plausibleUnitConceptIds"].split(",") if u.strip()]
            found.append(
                _make(
                    "plausibleUnitConceptIds",
                    table,
                    "unit_concept_id",
                    _threshold(row, "plausibleUnitConceptIds"),
                    concept_field=concept_field,
                    concept_id=concept_id,
                    units=units,
                    qualifier=str(concept_id),
                )
            )
        if row["plausibleGender"]:
            found.append(
                _make(
                    "plausibleGender",
                    table,
                    concept_field,
                    _threshold(row, "plausibleGender"),
                    concept_field=concept_field,
                    concept_id=concept_id,
                    gender=row["plausibleGender"],
                    qualifier=str(concept_id),
                )
            )
    return found


def _value_range_checks(table: str, row: dict[str, str]) -> list[Check]:
    concept_id, unit_id = int(row["conceptId"]), int(row["unitConceptId"])
    found = []
    for check_type in ("plausibleValueLow", "plausibleValueHigh"):
        if row[check_type]:
            found.append(
                _make(
                    check_type,
                    table,
                    "value_as_number",
                    _threshold(row, check_type),
                    concept_field=VALUE_TABLES[table],
                    concept_id=concept_id,
                    unit_concept_id=unit_id,
                    bound=float(row[check_type]),
                    qualifier=f"{concept_id}.{unit_id}",
                )
            )
    return found


def checks_for_table(table: str) -> list[Check]:
    """Every check of one CDM table, in a stable order."""
    return table_checks(table) + field_checks(table) + concept_checks(table)


def built_tables() -> list[str]:
    """CDM tables the ETL may build, hence the tables that get a suite."""
    return [t for t in cdm.tables() if t not in NOT_BUILT_TABLES]


LEDGER_TABLE = "ledger"


def ledger_checks() -> list[Check]:
    """The run ledger's two sums; a difference of even one blocks publishing."""
    return [
        Check("ledgerSum", LEDGER_TABLE, "staging", ERROR, 0.0),
        Check("ledgerSum", LEDGER_TABLE, "mapping", ERROR, 0.0),
    ]
