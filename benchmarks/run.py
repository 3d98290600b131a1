"""The benchmark: the pipeline end to end and per stage against the bare-parse floor, same files.

    python -m benchmarks.run --patients 1000 3000 10000 [--source DIR] [--vocab DIR]
        [--work DIR] [--gzip] [--master local[*]] [--json PATH] [--doc docs/performance.md]

For each size: generate the patients (benchmarks.generate, reused when already there), time the
fastest bare parse of their NDJSON on all cores (benchmarks.baseline), then run
`omopflow run` on the same files in a fresh process and warehouse while a thread samples the
memory of its Python driver and JVM. Writes the results as JSON and as a table between the
markers of docs/performance.md, with the targets of issue 8 checked. Runs by hand, never in CI.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any

import orjson
import psutil

from benchmarks.baseline import bare_parse, find_ndjson
from benchmarks.generate import generate, site_name
from benchmarks.memory import PeakSampler
from omopflow.errors import OmopflowError, UsageError

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "data"
DEFAULT_SOURCE = SHARED_DATA / "fhir" / "synthea-bundles"
DEFAULT_VOCAB = SHARED_DATA / "vocab" / "athena-subset"
DEFAULT_WORK = Path("out") / "bench"
DEFAULT_DOC = REPO / "docs" / "performance.md"
SITE = site_name(0)
WARM_UP_PATIENTS = 5
# The 4 GB default of omopflow/spark.py ran out of heap at 10,000 patients (docs/performance.md).
DRIVER_MEMORY = "8g"
# The pipeline's stages as the ledger's timings_s names them, in run order.
STAGES = ("stage", "vocabulary", "map", "derive", "check", "leak_scan", "publish")
# The parts of the check stage, which run side by side (the ledger's check_s); `needles` is
# the leak scan's reading of the input, which starts with the run, beside all the stages.
CHECK_PARTS = ("validate", "report", "needles")
# Targets of issue 8 (each a ratio from one run).
MAX_RATIO_TO_BARE_PARSE = 25.0
MAX_TIME_GROWTH_PER_PATIENT_GROWTH = 1.1  # 10x the patients costs at most 11x the time
# "Flat": the largest size's peak driver memory within 25 % of the smallest size's.
MAX_DRIVER_MEMORY_GROWTH = 1.25
DOC_START = "<!-- benchmark:start -->"
DOC_END = "<!-- benchmark:end -->"
# Pseudonyms of synthetic clones protect nobody: a fixed key keeps runs comparable.
BENCHMARK_KEY = "benchmark-key-for-synthetic-clones-only"
MB = 10**6


class PipelineFailed(OmopflowError):
    """`omopflow run` exited non-zero on a benchmark input."""

    exit_code = 1


@dataclass
class PipelineRun:
    wall_s: float
    ledger: dict[str, Any]
    memory: dict[str, float | int]


# ---------------------------------------------------------------------------------------------
# Measuring


def prepare_data(
    source: Path, work: Path, patients: int, seed: int, compress: bool, workers: int
) -> tuple[Path, dict[str, Any]]:
    """The site folder with `patients` clones of source, generated unless already there."""
    folder = work / "data" / f"{patients}{'-gz' if compress else ''}-seed{seed}"
    summary_path = folder / "generate.json"
    if summary_path.is_file():
        summary: dict[str, Any] = orjson.loads(summary_path.read_bytes())
        if summary.get("source") == str(source):
            return folder / SITE, summary
    shutil.rmtree(folder, ignore_errors=True)
    summary = generate(source, folder, patients, seed=seed, compress=compress, workers=workers)
    summary["source"] = str(source)
    summary_path.write_bytes(orjson.dumps(summary, option=orjson.OPT_INDENT_2))
    return folder / SITE, summary


def fastest_bare_parse(folder: Path, workers: int, repeats: int) -> dict[str, Any]:
    """The quickest of `repeats` bare parses: the first one also warms the page cache."""
    paths = find_ndjson(folder)
    if not paths:
        raise UsageError(f"{folder}: no *.ndjson[.gz] to parse")
    runs = [bare_parse(paths, workers) for _ in range(repeats)]
    return min(runs, key=lambda run: float(run["seconds"]))


def pipeline_command(input_dir: Path, vocab: Path, out: Path, master: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "omopflow.cli",
        "run",
        "--input",
        str(input_dir),
        "--vocab",
        str(vocab),
        "--out",
        str(out),
        "--site",
        SITE,
        "--master",
        master,
    ]


def pipeline_env(vocab_cache: Path, driver_memory: str) -> dict[str, str]:
    env = dict(os.environ)
    env["OMOPFLOW_DRIVER_MEMORY"] = driver_memory
    env.setdefault("OMOPFLOW_PSEUDONYM_KEY", BENCHMARK_KEY)
    env.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    env.setdefault("GX_ANALYTICS_ENABLED", "false")
    env.setdefault("PYSPARK_PYTHON", sys.executable)
    env["OMOPFLOW_VOCAB_CACHE"] = str(vocab_cache)
    return env


def run_pipeline(command: list[str], env: dict[str, str], out: Path, log: Path) -> PipelineRun:
    """Run `omopflow run` in a fresh process (its own JVM), timing it and sampling its memory."""
    shutil.rmtree(out, ignore_errors=True)
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("wb") as output:
        started = time.perf_counter()
        process = subprocess.Popen(command, env=env, stdout=output, stderr=subprocess.STDOUT)
        sampler = PeakSampler(process.pid).start()
        status = process.wait()
        wall_s = time.perf_counter() - started
        peaks = sampler.stop()
    if status != 0:
        raise PipelineFailed(f"omopflow run exited {status}: {last_line(log)} (log: {log})")
    ledgers = sorted((out / "runs").glob("*.json"))
    if len(ledgers) != 1:
        raise PipelineFailed(f"expected one run ledger in {out / 'runs'}, found {len(ledgers)}")
    return PipelineRun(wall_s, orjson.loads(ledgers[0].read_bytes()), peaks.as_dict())


def last_line(log: Path) -> str:
    lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
    return lines[-1].strip() if lines else "no output"


# ---------------------------------------------------------------------------------------------
# Assembling the report (pure functions: tested without Spark)


def summarise(
    patients: int, generated: dict[str, Any], baseline: dict[str, Any], run: PipelineRun
) -> dict[str, Any]:
    """One size's row: the pipeline against the bare parse of the same files."""
    timings: dict[str, float] = run.ledger.get("timings_s", {})
    stages = {stage: timings.get(stage) for stage in STAGES}
    stages.update({name: seconds for name, seconds in timings.items() if name not in STAGES})
    in_stages = sum(seconds for seconds in stages.values() if seconds is not None)
    input_mb = baseline["bytes"] / MB
    return {
        "patients": patients,
        "resources": baseline["lines"],
        "input_mb": round(input_mb, 1),
        "file_mb": round(baseline["file_bytes"] / MB, 1),
        "generated_s": generated.get("seconds"),
        "baseline": baseline,
        "pipeline_s": round(run.wall_s, 2),
        "ratio": round(run.wall_s / baseline["seconds"], 1),
        "records_per_s": round(baseline["lines"] / run.wall_s),
        "mb_per_s": round(input_mb / run.wall_s, 2),
        "stages_s": stages,
        "check_s": {part: run.ledger.get("check_s", {}).get(part) for part in CHECK_PARTS},
        # JVM start, imports and CLI work outside the ledger's stages.
        "outside_stages_s": round(run.wall_s - in_stages, 2),
        "memory": run.memory,
        "rows": run.ledger.get("rows", {}),
        "run_id": run.ledger.get("run_id"),
    }


def check_targets(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The targets of issue 8 against the measured rows (growth needs two sizes)."""
    ordered = sorted(rows, key=lambda row: row["patients"])
    small, large = ordered[0], ordered[-1]
    targets = [
        _target(
            f"end to end / bare parse at {large['patients']} patients",
            large["ratio"],
            MAX_RATIO_TO_BARE_PARSE,
        )
    ]
    if large["patients"] > small["patients"]:
        patient_growth = large["patients"] / small["patients"]
        time_growth = large["pipeline_s"] / small["pipeline_s"]
        sizes = f"{small['patients']} -> {large['patients']} patients"
        targets.append(
            _target(
                f"time growth / patient growth, {sizes}",
                time_growth / patient_growth,
                MAX_TIME_GROWTH_PER_PATIENT_GROWTH,
            )
        )
        targets.append(
            _target(
                f"peak driver memory growth, {sizes}",
                large["memory"]["driver_mb"] / small["memory"]["driver_mb"],
                MAX_DRIVER_MEMORY_GROWTH,
            )
        )
    return targets


def _target(name: str, value: float, limit: float) -> dict[str, Any]:
    return {"target": name, "value": round(value, 2), "limit": limit, "met": value <= limit}


def _seconds(value: float | None) -> str:
    return "–" if value is None else f"{value:.1f}"


TABLE_COLUMNS = (
    "patients",
    "resources",
    "input MB",
    "bare parse s",
    "pipeline s",
    "ratio",
    "records/s",
    "MB/s",
    *(f"{stage} s" for stage in STAGES),
    *(f"check: {part} s" for part in CHECK_PARTS),
    "outside stages s",
    "driver peak MB",
    "workers peak MB",
    "JVM peak MB",
)


def markdown(report: dict[str, Any]) -> str:
    """The generated section of docs/performance.md: conditions, the table, the targets."""
    machine = report["machine"]
    lines = [
        f"Measured {report['started']} with `{report['command']}`: {machine['cpus']} cores, "
        f"{machine['memory_gb']} GB, load average {machine['load_before']} before and "
        f"{machine['load_after']} after, pyspark {machine['pyspark']}, master "
        f"`{report['master']}`, driver heap {report.get('driver_memory', 'default')}, "
        f"source `{report['source']}`, vocabulary `{report['vocab']}`.",
        "",
        "| " + " | ".join(TABLE_COLUMNS) + " |",
        "|" + "---:|" * len(TABLE_COLUMNS),
    ]
    for row in sorted(report["rows"], key=lambda row: row["patients"]):
        stages = " | ".join(
            [_seconds(row["stages_s"].get(stage)) for stage in STAGES]
            + [_seconds(row.get("check_s", {}).get(part)) for part in CHECK_PARTS]
        )
        lines.append(
            f"| {row['patients']:,} | {row['resources']:,} | {row['input_mb']:,.1f} "
            f"| {row['baseline']['seconds']:.2f} | {row['pipeline_s']:.1f} | {row['ratio']:.1f} "
            f"| {row['records_per_s']:,} | {row['mb_per_s']:.2f} | {stages} "
            f"| {row['outside_stages_s']:.1f} | {row['memory']['driver_mb']:,.0f} "
            f"| {row['memory'].get('workers_mb', 0):,.0f} | {row['memory']['jvm_mb']:,.0f} |"
        )
    lines += ["", "| target | value | limit | met |", "|---|---:|---:|---|"]
    for target in report["targets"]:
        met = "yes" if target["met"] else "**no**"
        lines.append(f"| {target['target']} | {target['value']} | {target['limit']} | {met} |")
    return "\n".join(lines) + "\n"


def replace_section(document: str, section: str) -> str:
    """The document with the text between the benchmark markers replaced by `section`."""
    start, end = document.find(DOC_START), document.find(DOC_END)
    if start < 0 or end < start:
        raise UsageError(f"the document lacks the markers {DOC_START} ... {DOC_END}")
    return document[: start + len(DOC_START)] + "\n" + section + document[end:]


def check_sizes(patients: list[int]) -> list[int]:
    if any(count < 1 for count in patients):
        raise UsageError("--patients: every size must be at least 1")
    if len(set(patients)) != len(patients):
        raise UsageError("--patients: each size once")
    return sorted(patients)


# ---------------------------------------------------------------------------------------------
# The command


def machine_state() -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        "pyspark": version("pyspark"),
    }


def _load() -> str:
    return "/".join(f"{value:.1f}" for value in os.getloadavg())


def benchmark(args: argparse.Namespace, command_line: str) -> dict[str, Any]:
    sizes = check_sizes(args.patients)
    for folder, option in ((args.source, "--source"), (args.vocab, "--vocab")):
        if not folder.is_dir():
            raise UsageError(f"{option} {folder}: not a folder")
    work: Path = args.work.resolve()
    env = pipeline_env(args.vocab_cache or work / "vocabulary-cache", args.driver_memory)
    report: dict[str, Any] = {
        "started": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "command": command_line,
        "master": args.master,
        "driver_memory": args.driver_memory,
        "source": str(args.source),
        "vocab": str(args.vocab),
        "machine": machine_state() | {"load_before": _load()},
        "rows": [],
    }
    if not args.no_warm_up:
        # Load the vocabulary into its cache and the JVM's classes into the page cache, so
        # that the first size does not pay for what every later one gets for free.
        folder, _ = prepare_data(
            args.source, work, WARM_UP_PATIENTS, args.seed, args.gzip, args.workers
        )
        out = work / "warehouse" / "warm-up"
        command = pipeline_command(folder, args.vocab, out, args.master)
        run_pipeline(command, env, out, work / "logs" / "warm-up.log")
    for patients in sizes:
        _progress(f"{patients} patients: generating")
        folder, generated = prepare_data(
            args.source, work, patients, args.seed, args.gzip, args.workers
        )
        _progress(f"{patients} patients: bare parse")
        baseline = fastest_bare_parse(folder, args.workers, args.baseline_repeats)
        _progress(f"{patients} patients: pipeline")
        out = work / "warehouse" / str(patients)
        command = pipeline_command(folder, args.vocab, out, args.master)
        run = run_pipeline(command, env, out, work / "logs" / f"{patients}.log")
        report["rows"].append(summarise(patients, generated, baseline, run))
    report["machine"]["load_after"] = _load()
    report["targets"] = check_targets(report["rows"])
    return report


def _progress(message: str) -> None:
    print(f"benchmarks.run: {message}", file=sys.stderr, flush=True)


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.run", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--patients", type=int, nargs="+", required=True, help="sizes to run")
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE, help="export to clone")
    parser.add_argument("--vocab", type=Path, default=DEFAULT_VOCAB, help="Athena folder")
    parser.add_argument("--vocab-cache", type=Path, help="default: WORK/vocabulary-cache")
    parser.add_argument("--work", type=Path, default=DEFAULT_WORK, help="data and warehouses")
    parser.add_argument("--gzip", action="store_true", help="benchmark .ndjson.gz input")
    parser.add_argument("--seed", type=int, default=0, help="generator seed")
    parser.add_argument("--master", default="local[*]", help="Spark master of the pipeline")
    parser.add_argument(
        "--driver-memory", default=DRIVER_MEMORY, help="JVM heap of the pipeline's driver"
    )
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="bare parse")
    parser.add_argument("--baseline-repeats", type=int, default=2, help="fastest one counts")
    parser.add_argument("--no-warm-up", action="store_true", help="skip the warm-up run")
    parser.add_argument("--json", type=Path, help="default: WORK/results.json")
    parser.add_argument("--doc", type=Path, default=DEFAULT_DOC, help="table goes here")
    parser.add_argument("--no-doc", action="store_true", help="leave the document alone")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """CLI entry point: prints the table; a one-line reason and non-zero on error."""
    args = _arguments(argv)
    command_line = "python -m benchmarks.run " + " ".join(sys.argv[1:] if argv is None else argv)
    try:
        if not args.no_doc:
            replace_section(args.doc.read_text(), "")  # refuse before an hour of work
        report = benchmark(args, command_line)
    except (OmopflowError, OSError) as error:
        print(f"benchmarks.run: {error}", file=sys.stderr)
        return error.exit_code if isinstance(error, OmopflowError) else UsageError.exit_code
    json_path: Path = args.json or args.work / "results.json"
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))
    section = markdown(report)
    if not args.no_doc:
        args.doc.write_text(replace_section(args.doc.read_text(), section))
    sys.stdout.write(section)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
