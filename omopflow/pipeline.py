"""One batch run: stage -> map -> validate -> publish, with the ledger proving each step.

The SparkSession is passed in. State that must switch together (site staging, crosswalk,
release) is written as new versions first; the `current` link of the release is the one
commit point. The staging and crosswalk pointers follow it, and a run that died between the
two has its pointers moved forward by the next run (`repair_pointers`). So a crash anywhere
leaves the last good release intact, and the next run finishes the job.
`faults.checkpoint(...)` marks each boundary for the crash drills (docs/governance.md).
"""

from __future__ import annotations

import fcntl
import json
import shutil
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omopflow import __version__, cdm, faults, ledger, publish
from omopflow.config import RunConfig
from omopflow.dateshift import shift_table, write_shifts
from omopflow.errors import GateBlocked, LedgerMismatch, RunLocked, UsageError
from omopflow.ids import IdAllocator
from omopflow.landing import discover
from omopflow.spark import INTERPRETED, SMALL_BUILD_BYTES, interpret, restored
from omopflow.staging import StagingPaths, stage

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

    from transforms.base import TableOutput

Progress = Callable[[str], None]


@dataclass
class RunResult:
    run_id: str
    release: Path | None
    ledger: dict[str, Any]
    ledger_path: Path
    rows: dict[str, int] = field(default_factory=dict)
    catalog: Path | None = None


def new_run_id() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")


@contextmanager
def warehouse_lock(out_dir: Path) -> Iterator[None]:
    """One run per warehouse at a time; a second one is refused, not queued."""
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / ".lock", "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunLocked(f"another omopflow run holds the lock on {out_dir}") from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def check_folders(config: RunConfig) -> None:
    if not config.input_dir.is_dir():
        raise UsageError(f"input folder not found: {config.input_dir}")
    for vocab in config.vocab_dirs:
        if not vocab.is_dir():
            raise UsageError(f"vocabulary folder not found: {vocab}")
    out = config.out_dir
    if out.exists() and not out.is_dir():
        raise UsageError(f"output path exists and is not a folder: {out}")
    probe = out if out.exists() else out.parent
    if probe.exists() and not _writable(probe):
        raise UsageError(f"output folder is not writable: {out}")


def _writable(folder: Path) -> bool:
    import os

    return os.access(folder, os.W_OK | os.X_OK)


def run(
    spark: SparkSession,
    config: RunConfig,
    pseudonym_key: bytes,
    progress: Progress = lambda _msg: None,
) -> RunResult:
    check_folders(config)
    with (
        warehouse_lock(config.out_dir),
        _reading_needles(config, pseudonym_key) as reading,
        restored(spark, INTERPRETED),  # a small build runs interpreted (see _run_locked)
    ):
        return _run_locked(spark, config, pseudonym_key, progress, reading)


def _run_locked(
    spark: SparkSession,
    config: RunConfig,
    key: bytes,
    progress: Progress,
    reading: Reading | None,
) -> RunResult:
    repair_pointers(config)
    run_id = new_run_id()
    out = config.out_dir
    build = out / "build" / run_id
    record: dict[str, Any] = {
        "run_id": run_id,
        "software": f"omopflow {__version__}",
        "site": config.site,
        "input": str(config.input_dir),
        "as_of": config.as_of.isoformat(),
        "date_shift_days": config.date_shift_days,
        "timings_s": {},
    }
    timings = record["timings_s"]

    progress("staging")
    started = time.monotonic()
    site_root = config.staging_root / config.site
    previous = publish.read_pointer(site_root)
    staging_paths = StagingPaths(
        work=build / "_work",
        previous=site_root / previous if previous else None,
        target=site_root / run_id,
        quarantine=config.restricted / "quarantine" / run_id,
    )
    from transforms.registry import MAPPED_TYPES

    record["staging"] = stage(
        spark, discover(config.input_dir), config.site, staging_paths, MAPPED_TYPES
    )
    timings["stage"] = round(time.monotonic() - started, 2)
    faults.checkpoint("staging")

    progress("loading vocabulary")
    started = time.monotonic()
    vocab, vocab_meta = _load_vocabulary(spark, config)
    record["vocabulary"] = vocab_meta
    timings["vocabulary"] = round(time.monotonic() - started, 2)

    site_dirs = _site_staging_dirs(config, run_id)
    small = interpret_small_build(spark, [*site_dirs, vocab.release.path])
    progress("mapping (a small build: queries interpreted)" if small else "mapping")
    started = time.monotonic()
    crosswalk_root = config.restricted / "crosswalk"
    crosswalk_now = publish.read_pointer(crosswalk_root)
    ids = IdAllocator.open(spark, crosswalk_root / crosswalk_now if crosswalk_now else None)
    outputs, read_types, staged, events = _map(spark, config, site_dirs, ids, key, vocab)
    rows = {}
    # One table at a time: written from four threads, they took no less time at 1,000
    # patients and ran the 4 GB driver heap out of memory at 10,000 (docs/performance.md).
    for output in outputs:
        progress(f"writing {output.table}")
        # Computed once: the write counts then writes, and the ledger reads the provenance
        # columns again; without this each would re-run the table's whole transform.
        output.rows = output.rows.localCheckpoint()
        table = cdm.conform(output.rows, output.table)
        if config.date_shift_days:
            table = shift_table(table, output.table, key, config.date_shift_days)
        rows[output.table] = publish.write_table(table, output.table, build / output.table)
    from transforms.registry import NOT_MAPPED_REASON

    record["mapping"] = ledger.mapping_section(staged, read_types, outputs, NOT_MAPPED_REASON)
    record["coverage"] = _coverage(events, build / "report")
    timings["map"] = round(time.monotonic() - started, 2)
    faults.checkpoint("mapping")

    progress("deriving observation periods and eras")
    started = time.monotonic()
    record["derived"] = _derive(spark, config, build, rows, vocab, record["staging"])
    record["rows"] = rows
    timings["derive"] = round(time.monotonic() - started, 2)

    problems = ledger.check(record)
    record["ledger_problems"] = problems
    ledger_path = out / "runs" / f"{run_id}.json"
    if problems:
        ledger.write(record, ledger_path)
        raise LedgerMismatch("the ledger does not add up: " + "; ".join(problems))

    # The gate and the report need only the build, not each other: run together, Great
    # Expectations' Python and the report's Spark jobs share the two cores instead of
    # waiting in turn. The report waits for the gate only to write its verdict; the leak
    # scan (its reading of the input started with the run) searches the build once the
    # report and the Data Docs are in it (docs/performance.md). The report and the dictionary
    # go with the build whether or not it is published: a blocked build is diagnosed from them.
    progress("validating and reporting")
    started = time.monotonic()
    check = record["check_s"] = {}
    with ThreadPoolExecutor(1, thread_name_prefix="check") as side:
        validating = side.submit(_timed, _validate, spark, config, build, rows, vocab, record)
        ids.write(crosswalk_root / run_id)  # used only once its pointer moves (after publishing)
        if config.report:
            _report(spark, config, build, record, validating, crosswalk_root / run_id, vocab)
            check["report"] = round(time.monotonic() - started, 2)
        gate, check["validate"] = validating.result()
        record["validation"] = _validation_section(gate)
        timings["check"] = round(time.monotonic() - started, 2)
        progress("scanning for identifiers")
        started = time.monotonic()
        if reading is not None:  # how long the reading took, from the run's start
            check["needles"] = reading.read.result()[1]
        leaks = _leak_scan(reading, build, record)
        timings["leak_scan"] = round(time.monotonic() - started, 2)
    faults.checkpoint("validation")
    if not gate.passed or leaks:
        ledger.write(record, ledger_path)
        failed = [check.name for check in gate.errors] + leaks
        raise GateBlocked(
            f"validation gate blocked publishing ({len(failed)} failed): {', '.join(failed)}; "
            f"build kept in {build}; Data Docs: {gate.data_docs_index}"
        )

    progress("publishing")
    started = time.monotonic()
    from vocabularies.athena import VOCABULARY_TABLES

    published = sorted([*rows, *publish.link_tables(vocab.release.path, VOCABULARY_TABLES, build)])
    if config.date_shift_days:
        person = spark.read.parquet(str(build / "person"))
        write_shifts(person, key, config.date_shift_days, config.restricted, run_id)
    faults.checkpoint("publishing")
    shutil.rmtree(build / "_work", ignore_errors=True)
    docs = build / "report" / "data_docs" / "index.html"
    record["validation"]["data_docs_index"] = (
        str(out / "releases" / run_id / docs.relative_to(build)) if docs.is_file() else None
    )
    timings["publish"] = round(time.monotonic() - started, 2)
    ledger.write(record, build / "ledger.json")
    release = publish.publish_release(out, run_id, build)  # the commit point
    catalog = publish.write_catalog(out, published)
    faults.checkpoint("pointers")
    publish.switch_pointer(crosswalk_root, run_id)
    publish.switch_pointer(site_root, run_id)
    ledger.write(record, ledger_path)
    return RunResult(run_id, release, record, ledger_path, rows, catalog)


def _report(
    spark: SparkSession,
    config: RunConfig,
    build: Path,
    record: dict[str, Any],
    validating: Future[tuple[Any, float]],
    crosswalk: Path,
    vocab: Any,
) -> None:
    """The data dictionary and the run report (report.html), written into the build; the
    report waits for the gate (`validating`) only when it writes the verdict."""
    from omopflow.report import write_data_dictionary, write_report

    write_data_dictionary(spark, build)
    write_report(
        spark,
        build,
        record,
        previous_release=publish.current_release(config.out_dir),
        gate=lambda: validating.result()[0].to_json(),
        crosswalk=crosswalk,
        concept=vocab.release.table("concept"),
    )


def repair_pointers(config: RunConfig) -> None:
    """Move the crosswalk and staging pointers up to the live release if a run died after
    publishing it and before moving them. Pointers are never moved backwards: a release
    rolled back by hand keeps the newer ids, so no id is ever reused."""
    release = publish.current_release(config.out_dir)
    ledger_file = release / "ledger.json" if release else None
    if ledger_file is None or not ledger_file.is_file():
        return
    published = json.loads(ledger_file.read_text())
    run_id, site = published["run_id"], published["site"]
    for root in (config.restricted / "crosswalk", config.staging_root / site):
        pointer = publish.read_pointer(root)
        if (root / run_id).is_dir() and (pointer is None or pointer < run_id):
            publish.switch_pointer(root, run_id)


@dataclass
class Reading:
    """The leak scan's needles of the run's input, and their reading under way."""

    needles: Any  # omopflow.leakscan.InputNeedles
    read: Future[tuple[None, float]]


@contextmanager
def _reading_needles(config: RunConfig, key: bytes) -> Iterator[Reading | None]:
    """Start reading the input's identifiers (and the key) for the leak scan; None when the
    scan is off.

    The reading needs only the input, so it starts with the run: its worker processes, at
    a lower priority than Spark, use what staging and mapping leave of the cores instead
    of competing with the gate and the report at the end. At 10,000 patients it took about
    200 s beside them. Leaving closes the needles first: a run that fails early then waits
    only for the units being read, not for the whole input.
    """
    if not config.leak_scan:
        yield None
        return
    from omopflow.leakscan import InputNeedles

    with (
        ThreadPoolExecutor(1, thread_name_prefix="needles") as background,
        InputNeedles(config.input_dir, [key]) as needles,
    ):
        yield Reading(needles, background.submit(_timed, needles.read))


def _leak_scan(reading: Reading | None, build: Path, record: dict[str, Any]) -> list[str]:
    """Search the candidate release for the input's identifiers (once `reading` is done;
    None when the scan is off); the names of what leaked (kind and where), empty when clean.
    Recorded in the ledger either way."""
    if reading is None:
        record["leak_scan"] = {"skipped": "leak_scan is off in the run configuration"}
        return []
    reading.read.result()  # a failed reading fails the run here
    report = reading.needles.search(build)
    record["leak_scan"] = {
        "clean": report.clean,
        "needles_by_kind": report.needles_by_kind,
        "findings": len(report.findings),
        "problems": list(report.problems),
    }
    leaked = [f"leak:{f.kind}@{f.location}" for f in report.findings]
    return leaked + [f"leak:{problem}" for problem in report.problems]


def _timed(function: Callable[..., Any], *args: Any) -> tuple[Any, float]:
    """`function(*args)` and the seconds it took (for work run beside other work)."""
    started = time.monotonic()
    result = function(*args)
    return result, round(time.monotonic() - started, 2)


def _coverage(events: DataFrame | None, report: Path) -> list[dict[str, Any]]:
    """Share of coded clinical records mapped to a standard concept, per resource type and
    vocabulary; the unmapped codes go to an OHDSI Usagi import file beside the report."""
    from pyspark.sql import functions as F

    from vocabularies.coverage import coverage, write_usagi_csv

    if events is None:
        return []
    coded = events.select(
        F.col("_resource_type").alias("resource_type"),
        *[F.col(f"_code_{c}").alias(f"code_{c}") for c in ("system", "vocabulary_id", "display")],
        F.col("_code_concept_id").alias("code_concept_id"),
        F.col("source_value").alias("code_source_value"),
        F.col("source_concept_id").alias("code_source_concept_id"),
    )
    write_usagi_csv(coded, report / "unmapped_codes_usagi.csv", "code")
    return [row.asDict() for row in coverage(coded, "code").collect()]


def _validate(
    spark: SparkSession,
    config: RunConfig,
    build: Path,
    rows: dict[str, int],
    vocab: Any,
    record: dict[str, Any],
) -> Any:
    """Run the validation gate on the written build; its full result goes beside the report
    (the ledger's summary is `_validation_section`). Reads `record`, never changes it: the
    report reads it at the same time."""
    from expectations.gate import run_gate

    tables = _read_build(spark, build, rows)
    # Shifted dates may land up to `date_shift_days` after the run's day, legitimately.
    as_of = config.as_of + timedelta(days=config.date_shift_days)
    result = run_gate(
        spark, tables, vocab.release.table("concept"), build / "report", ledger=record, as_of=as_of
    )
    ledger.write(result.to_json(), build / "report" / "validation.json")
    return result


def _validation_section(gate: Any) -> dict[str, Any]:
    """The ledger's summary of the gate's result."""
    summary = gate.to_json()
    section = {key: summary[key] for key in ("passed", "seconds", "errors", "warnings")}
    section["checks_run"] = len(summary["checks"])
    return section


def _derive(
    spark: SparkSession,
    config: RunConfig,
    build: Path,
    rows: dict[str, int],
    vocab: Any,
    staging: dict[str, Any],
) -> dict[str, Any]:
    """Derived tables from the event tables just written; adds their row counts to `rows`."""
    from transforms.derived.build import derive

    events = _read_build(spark, build, rows)
    exports = [f"{config.site}/{export}" for export in staging["exports"]]
    source = config.source or default_source(config)
    derived = derive(
        spark, events, vocab.release, source, exports, config.observation_period_gap_days
    )
    for table, frame in derived.tables.items():
        rows[table] = publish.write_table(cdm.conform(frame, table), table, build / table)
    return derived.notes


def _read_build(spark: SparkSession, build: Path, tables: dict[str, int]) -> dict[str, DataFrame]:
    """The tables written so far, read back from the build (lazily: nothing is scanned)."""
    return {table: spark.read.parquet(str(build / table)) for table in tables}


def default_source(config: RunConfig) -> dict[str, str]:
    return {
        "cdm_source_name": "omopflow warehouse of FHIR R4 exports",
        "cdm_source_abbreviation": "omopflow",
        "cdm_holder": "omopflow platform",
        "source_description": "FHIR R4 exports of contributing sites, mapped by omopflow",
    }


def _site_staging_dirs(config: RunConfig, run_id: str) -> list[Path]:
    """This run's staging for its site, and the published staging of every other site."""
    dirs = [config.staging_root / config.site / run_id]
    if config.staging_root.is_dir():
        for site_root in sorted(p for p in config.staging_root.iterdir() if p.is_dir()):
            pointer = publish.read_pointer(site_root)
            if site_root.name != config.site and pointer:
                dirs.append(site_root / pointer)
    return dirs


def interpret_small_build(spark: SparkSession, inputs: list[Path]) -> bool:
    """Run the session's next queries interpreted if the folders the rest of the run reads
    (the staged Parquet and the vocabulary release) hold under
    `omopflow.spark.SMALL_BUILD_BYTES`; `run` restores the settings at its end."""
    size = sum(p.stat().st_size for d in inputs for p in d.rglob("*") if p.is_file())
    if size >= SMALL_BUILD_BYTES:
        return False
    interpret(spark)
    return True


def _load_vocabulary(spark: SparkSession, config: RunConfig) -> tuple[Any, dict[str, str]]:
    from vocabularies.athena import load_release
    from vocabularies.mapping import build_maps

    release = load_release(spark, list(config.vocab_dirs), config.vocab_cache)
    meta = {"version": release.version, "fingerprint": release.fingerprint}
    return build_maps(spark, release), meta


def _map(
    spark: SparkSession,
    config: RunConfig,
    site_dirs: list[Path],
    ids: IdAllocator,
    key: bytes,
    vocab: Any,
) -> tuple[list[TableOutput], list[str], dict[str, DataFrame], DataFrame | None]:
    from omopflow.fhir_schema import RESOURCE_TYPES
    from omopflow.staging import read_staged
    from transforms.base import MappingContext
    from transforms.registry import TABLE_MODULES

    ctx = MappingContext(spark, config, site_dirs, ids, key, vocab)
    outputs = []
    for module in TABLE_MODULES:
        output = module.build(ctx)
        ctx.outputs[output.table] = output.rows
        outputs.append(output)
    # Types nobody read are still accounted for, as "not mapped".
    present = sorted({p.name for d in site_dirs if d.is_dir() for p in d.iterdir() if p.is_dir()})
    staged = {
        t: ctx.staged(t) if t in ctx.read_types else read_staged(spark, site_dirs, t, parsed=False)
        for t in present
        if t in RESOURCE_TYPES
    }
    from transforms.events import EVENTS_KEY

    return outputs, sorted(ctx.read_types), staged, ctx.outputs.get(EVENTS_KEY)
