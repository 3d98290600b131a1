"""Write `expectations/suites/<table>.json`, one Great Expectations suite per OMOP table.

Run `python -m expectations.generate` after changing a threshold in `expectations/dqd/` or
the CDM spec. The files are plain GX 1.x suite JSON: each expectation checks one column of
the gate's one-row summary (the share of failing rows of one check) against the check's
threshold; `meta` carries what Spark needs to compute that share. `--check` only reports
whether the files on disk are up to date (for CI).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

from expectations.checks import (
    ERROR,
    LEDGER_TABLE,
    Check,
    built_tables,
    check_descriptions,
    checks_for_table,
    ledger_checks,
)

SUITES_DIR = Path(__file__).parent / "suites"
EXPECTATION_TYPE = "expect_column_max_to_be_between"
GX_SEVERITY = {ERROR: "critical", "warning": "warning"}
LEDGER_DESCRIPTION = (
    "The run ledger adds up: lines read = lines staged + lines quarantined (staging), "
    "resources staged = resources mapped + resources excluded (mapping)."
)


def describe(check: Check) -> str:
    """The DQD description with this check's table and field filled in."""
    if check.check_type == "ledgerSum":
        template = LEDGER_DESCRIPTION
    else:
        template = check_descriptions()[check.check_type]["checkDescription"]
    values = {
        "cdmTableName": check.table.upper(),
        "cdmFieldName": (check.field or "").upper(),
        **{key: str(value) for key, value in check.params.items()},
    }
    aliases = {
        "fkTableName": "fk_table",
        "fkDomain": "domain",
        "fkClass": "concept_class",
        "conceptId": "concept_id",
        "plausibleValueLow": "bound",
        "plausibleValueHigh": "bound",
        "plausibleGender": "gender",
        "plausibleUnitConceptIds": "units",
        "plausibleStartBeforeEndFieldName": "end_field",
        "plausibleTemporalAfterFieldName": "after_field",
        "plausibleTemporalAfterTableName": "after_table",
    }
    for placeholder, key in aliases.items():
        if key in values:
            values[placeholder] = values[key]

    def fill(match: re.Match[str]) -> str:
        return values.get(match.group(1), match.group(0))

    text = re.sub(r"@(\w+)", fill, " ".join(template.split()))
    return (
        f"{check.name} ({check.severity}): {text} "
        f"Passes when at most {check.threshold:.0%} of rows fail."
    )


def expectation(check: Check) -> dict[str, Any]:
    return {
        "type": EXPECTATION_TYPE,
        "kwargs": {"column": check.name, "min_value": 0.0, "max_value": check.threshold},
        "severity": GX_SEVERITY[check.severity],
        "description": describe(check),
        "meta": {
            "check_type": check.check_type,
            "table": check.table,
            "field": check.field,
            "qualifier": check.qualifier,
            "severity": check.severity,
            "threshold": check.threshold,
            "params": check.params,
        },
    }


def suite(table: str, checks: list[Check]) -> dict[str, Any]:
    return {
        "name": table,
        "meta": {
            "generated_by": "python -m expectations.generate",
            "sources": ["omopflow/spec/OMOP_CDMv5.4_Field_Level.csv", "expectations/dqd/"],
        },
        "expectations": [expectation(c) for c in checks],
    }


def all_suites() -> dict[str, dict[str, Any]]:
    suites = {table: suite(table, checks_for_table(table)) for table in built_tables()}
    suites[LEDGER_TABLE] = suite(LEDGER_TABLE, ledger_checks())
    return suites


def render(content: dict[str, Any]) -> str:
    return json.dumps(content, indent=1, sort_keys=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m expectations.generate", description=__doc__)
    parser.add_argument("--out", type=Path, default=SUITES_DIR, help="folder of suite files")
    parser.add_argument("--check", action="store_true", help="fail if the files are stale")
    args = parser.parse_args(argv)
    stale = []
    args.out.mkdir(parents=True, exist_ok=True)
    for table, content in all_suites().items():
        path = args.out / f"{table}.json"
        text = render(content)
        if args.check:
            if not path.is_file() or path.read_text(encoding="utf-8") != text:
                stale.append(path.name)
        else:
            path.write_text(text, encoding="utf-8")
    if stale:
        print(f"stale suites, run python -m expectations.generate: {', '.join(stale)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
