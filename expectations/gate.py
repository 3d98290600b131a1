"""The validation gate between build and publish.

Spark counts the failing rows of every check in a few passes per table (`expectations.flags`);
the shares of failing rows form a one-row summary that Great Expectations validates against
the suites in `expectations/suites/`, so GX decides pass or fail and writes the Data Docs.
An `error` check that fails blocks publishing; a failing `warning` is only recorded.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import date
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from expectations.checks import ERROR, LEDGER_TABLE, WARNING, Check
from expectations.flags import Counts, TablePlan, build_lookups, count_failures, plan_table
from omopflow import workers

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

SUITES_DIR = Path(__file__).parent / "suites"
DATA_DOCS_SITE = "omopflow"
PARALLEL_TABLES = 4


@dataclass(frozen=True)
class CheckResult:
    name: str
    table: str
    field: str | None
    check_type: str
    severity: str
    threshold: float
    failed_rows: int
    total_rows: int
    failed_share: float
    passed: bool


@dataclass
class GateResult:
    checks: list[CheckResult]
    skipped: dict[str, str] = field(default_factory=dict)  # check name -> why not run
    data_docs_index: Path | None = None
    seconds: float = 0.0

    @property
    def errors(self) -> list[CheckResult]:
        """Failed checks that block publishing."""
        return [c for c in self.checks if not c.passed and c.severity == ERROR]

    @property
    def warnings(self) -> list[CheckResult]:
        """Failed checks that are recorded but do not block publishing."""
        return [c for c in self.checks if not c.passed and c.severity == WARNING]

    @property
    def passed(self) -> bool:
        return not self.errors

    def to_json(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "seconds": round(self.seconds, 3),
            "data_docs_index": str(self.data_docs_index) if self.data_docs_index else None,
            "errors": [c.name for c in self.errors],
            "warnings": [c.name for c in self.warnings],
            "checks": [asdict(c) for c in self.checks],
            "skipped": dict(self.skipped),
        }


@cache
def load_suite(table: str) -> dict[str, Any]:
    """The generated suite of a table (see `expectations.generate`)."""
    path = _suite_path(table)
    if not path.is_file():
        raise KeyError(f"no expectation suite for table {table!r} ({path})")
    content: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return content


def _suite_path(table: str) -> Path:
    return SUITES_DIR / f"{table}.json"


def suite_checks(table: str) -> list[Check]:
    """The checks a suite file describes, rebuilt from each expectation's meta."""
    found = []
    for expectation in load_suite(table)["expectations"]:
        meta = expectation["meta"]
        found.append(
            Check(
                check_type=meta["check_type"],
                table=meta["table"],
                field=meta["field"],
                severity=meta["severity"],
                threshold=meta["threshold"],
                params=meta["params"],
                qualifier=meta["qualifier"],
            )
        )
    return found


def run_gate(
    spark: SparkSession,
    tables: Mapping[str, DataFrame],
    concept: DataFrame,
    report_dir: Path,
    ledger: Mapping[str, Any] | None = None,
    *,
    as_of: date | None = None,
) -> GateResult:
    """Validate a candidate release; `result.passed` is False if any error check failed.

    `tables` are CDM-conformed DataFrames by table name, best read back from the build's
    Parquet (each is scanned about once). `concept` is the vocabulary CONCEPT table.
    `as_of` is the date that "in the future" is measured against (default: today).
    Data Docs are written under `report_dir/data_docs/`.
    """
    started = time.perf_counter()
    lookups = build_lookups(concept, tables, as_of or date.today())
    if lookups.person is not None:
        lookups.person = lookups.person.cache()
        lookups.person_count = lookups.person.count()
    counts: dict[str, Counts] = {}
    evaluated: list[Check] = []
    suited = [table for table in sorted(tables) if _suite_path(table).is_file()]
    skipped: dict[str, str] = {
        f"*.{table}": "not an OMOP CDM table with a suite"
        for table in sorted(tables)
        if table not in suited
    }

    def table_pass(table: str) -> tuple[TablePlan, dict[str, Counts]]:
        plan = plan_table(table, tables[table], suite_checks(table), lookups)
        return plan, count_failures(table, tables[table], plan.runnable, lookups)[1]

    # Tables are independent: a few threads let the driver plan one table's wide query while
    # another's job runs (most tables are small, and their passes are mostly planning).
    with ThreadPoolExecutor(max_workers=PARALLEL_TABLES) as pool:
        for plan, table_counts in pool.map(table_pass, suited):
            counts.update(table_counts)
            evaluated += plan.runnable
            skipped.update(plan.skipped)
    for check in _missing_required_tables(tables):
        counts[check.name] = Counts(failed=1, total=1)
        evaluated.append(check)
    ledger_counts, ledger_skipped = ledger_sums(ledger)
    counts.update(ledger_counts)
    skipped.update(ledger_skipped)
    evaluated += [c for c in suite_checks(LEDGER_TABLE) if c.name in ledger_counts]
    if lookups.person is not None:
        lookups.person.unpersist()

    shares = {name: share(c) for name, c in counts.items()}
    # Great Expectations judges in a worker process: its Python (seconds, for about two
    # thousand expectations) then holds no GIL against the report's thread, and its memory
    # stays out of the driver's (omopflow.workers).
    outcome, index = workers.run_resident(
        validate_with_gx, shares, evaluated, Path(report_dir) / "data_docs"
    )
    results = [_result(c, counts[c.name], shares[c.name], outcome[c.name]) for c in evaluated]
    return GateResult(
        checks=results,
        skipped=skipped,
        data_docs_index=index,
        seconds=time.perf_counter() - started,
    )


def share(counts: Counts) -> float:
    if counts.total:
        return counts.failed / counts.total
    return 1.0 if counts.failed else 0.0


def _result(check: Check, counts: Counts, failed_share: float, passed: bool) -> CheckResult:
    return CheckResult(
        name=check.name,
        table=check.table,
        field=check.field,
        check_type=check.check_type,
        severity=check.severity,
        threshold=check.threshold,
        failed_rows=counts.failed,
        total_rows=counts.total,
        failed_share=failed_share,
        passed=passed,
    )


def _missing_required_tables(tables: Mapping[str, DataFrame]) -> list[Check]:
    """cdmTable checks of required tables (person, observation_period) the build lacks."""
    from expectations.checks import built_tables

    return [
        check
        for table in built_tables()
        if table not in tables
        for check in suite_checks(table)
        if check.check_type == "cdmTable"
    ]


def ledger_sums(ledger: Mapping[str, Any] | None) -> tuple[dict[str, Counts], dict[str, str]]:
    """Differences in the run ledger's two sums, or why a sum could not be checked."""
    sums = {
        # arrived = items (lines, JSON files, Bundle entries) + file-level problems
        "staging": ("arrived", ("staged", "quarantined")),
        "mapping": ("resources_in", ("resources_mapped", "resources_excluded")),
    }
    counts: dict[str, Counts] = {}
    skipped: dict[str, str] = {}
    for section, (whole, parts) in sums.items():
        name = f"ledgerSum.{LEDGER_TABLE}.{section}"
        values = (ledger or {}).get(section, {})
        absent = [key for key in (whole, *parts) if not isinstance(values.get(key), int)]
        if ledger is None or absent:
            skipped[name] = f"ledger has no {section} counts {absent or ''}".strip()
            continue
        difference = abs(values[whole] - sum(values[p] for p in parts))
        counts[name] = Counts(failed=difference, total=values[whole])
    return counts, skipped


def validate_with_gx(
    shares: Mapping[str, float], checks: list[Check], docs_dir: Path
) -> tuple[dict[str, bool], Path | None]:
    """Let Great Expectations judge each share against its suite and build the Data Docs.

    Returns pass/fail by check name, as GX decided it, and the Data Docs index page.
    """
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    import great_expectations as gx
    import pandas as pd
    from great_expectations.core.expectation_suite import ExpectationSuite
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    context.add_data_docs_site(
        site_name=DATA_DOCS_SITE,
        site_config={
            "class_name": "SiteBuilder",
            "store_backend": {
                "class_name": "TupleFilesystemStoreBackend",
                "base_directory": str(docs_dir),
            },
            "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
        },
    )
    source = context.data_sources.add_pandas("gate_summary")
    wanted = {c.name for c in checks}
    definitions = []
    for table in sorted({c.table for c in checks}):
        expectations = [
            e for e in load_suite(table)["expectations"] if e["kwargs"]["column"] in wanted
        ]
        suite = context.suites.add(ExpectationSuite(name=table, expectations=expectations))
        batch = source.add_dataframe_asset(table).add_batch_definition_whole_dataframe(table)
        definitions.append(
            context.validation_definitions.add(
                gx.ValidationDefinition(name=table, data=batch, suite=suite)
            )
        )
    checkpoint = context.checkpoints.add(
        gx.Checkpoint(name="omopflow_gate", validation_definitions=definitions)
    )
    summary = pd.DataFrame({name: [value] for name, value in shares.items()})
    result = checkpoint.run(batch_parameters={"dataframe": summary})
    # Built once for all tables: GX's UpdateDataDocsAction rebuilds the index and copies the
    # static assets once per validation result (19 times), most of the gate's Python time.
    context.build_data_docs(site_names=[DATA_DOCS_SITE])
    outcome = {}
    for run in result.run_results.values():
        for item in run.results:
            assert item.expectation_config is not None  # GX sets it on every result
            outcome[item.expectation_config.kwargs["column"]] = bool(item.success)
    index = docs_dir / "index.html"
    return outcome, index if index.is_file() else None
