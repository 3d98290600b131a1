"""Where a pipeline run's Spark time goes: executor and job seconds per query, per stage.

    OMOPFLOW_EVENT_LOG=/tmp/ev python -m omopflow.cli run ...     # writes the event log
    python -m benchmarks.eventlog /tmp/ev --ledger <out>/runs/<run>.json [--top 30]

Spark's event log records every SQL query (with its physical plan), job and task. A query
is named by what it does and to which files: `write <table>` for a write (the last part of
its output path), otherwise `<action> <- <inputs>` (e.g. `collect <- concept,person`). Each
task's executor run time is added to its query: that is the compute spent, whereas job wall
seconds overlap when jobs run from several threads. With the run's ledger, each query is put
in the pipeline stage during which its first job started (the run id is the time staging
started; stage lengths come from `timings_s`).

`OMOPFLOW_EVENT_LOG` writes plain JSON lines. Logs that Spark compressed with its default
codec (zstd) are read too, where the `zstd` command is installed.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

# The pipeline's stages in the order it runs them (omopflow/pipeline.py).
STAGE_ORDER = ("stage", "vocabulary", "map", "derive", "check", "leak_scan")
_WRITE = re.compile(
    r"Execute InsertIntoHadoopFsRelationCommand\nInput: \[\]\nArguments: file:([^\s,]+)"
)
_SCAN = re.compile(r"Location: InMemoryFileIndex[^\[]*\[([^\]]*)\]")


def query_label(description: str, plan: str) -> str:
    """A query's name: `write <last path part>` or `<action> <- <input names>`."""
    written = _WRITE.search(plan)
    if written:
        return "write " + Path(written.group(1)).name
    paths = [p.strip() for listed in _SCAN.findall(plan) for p in listed.split(",")]
    inputs = sorted({Path(p.removeprefix("file:")).name for p in paths if p.startswith("file:")})
    action = description.split(" at ")[0]
    return f"{action} <- {','.join(inputs)}" if inputs else action


@dataclass
class Summary:
    executor_s: Counter[str] = field(default_factory=Counter)  # summed task run time
    job_s: Counter[str] = field(default_factory=Counter)  # summed job wall time (overlaps)
    jobs: Counter[str] = field(default_factory=Counter)
    first_job_ms: dict[str, int] = field(default_factory=dict)

    def stage_of(self, label: str, run: Run) -> str:
        """The pipeline stage running when the query's first job started."""
        elapsed_ms = self.first_job_ms[label] - run.started_ms
        end_ms = 0.0
        for stage in STAGE_ORDER:
            end_ms += run.timings_s.get(stage, 0.0) * 1000
            if elapsed_ms <= end_ms:
                return stage
        return "after the stages"


@dataclass(frozen=True)
class Run:
    """What the ledger tells about the run's clock: when staging began, each stage's length."""

    started_ms: int
    timings_s: dict[str, float]

    @classmethod
    def from_ledger(cls, ledger: dict[str, Any]) -> Run:
        # The run id is the UTC time taken just before staging starts (omopflow/pipeline.py).
        started = datetime.strptime(ledger["run_id"], "%Y%m%dT%H%M%S%fZ").replace(tzinfo=UTC)
        return cls(round(started.timestamp() * 1000), ledger["timings_s"])


def summarise(events: Iterable[dict[str, Any]]) -> Summary:
    """Add up one application's events (in log order)."""
    summary = Summary()
    label_of_query: dict[int, str] = {}
    label_of_job: dict[int, str] = {}
    job_of_stage: dict[int, int] = {}
    job_started: dict[int, int] = {}
    for event in events:
        kind = event.get("Event", "")
        if kind.endswith("SQLExecutionStart"):
            label_of_query[event["executionId"]] = query_label(
                event.get("description", ""), event.get("physicalPlanDescription", "")
            )
        elif kind == "SparkListenerJobStart":
            job, properties = event["Job ID"], event.get("Properties") or {}
            query = properties.get("spark.sql.execution.root.id")
            query = query if query is not None else properties.get("spark.sql.execution.id")
            label = label_of_query.get(int(query), "?") if query is not None else "not SQL"
            label_of_job[job] = label
            job_started[job] = event["Submission Time"]
            job_of_stage.update({stage: job for stage in event["Stage IDs"]})
            summary.first_job_ms.setdefault(label, event["Submission Time"])
        elif kind == "SparkListenerJobEnd":
            label = label_of_job[event["Job ID"]]
            summary.job_s[label] += (event["Completion Time"] - job_started[event["Job ID"]]) / 1000
            summary.jobs[label] += 1
        elif kind == "SparkListenerTaskEnd":
            job = job_of_stage.get(event["Stage ID"])
            metrics = event.get("Task Metrics") or {}
            label = label_of_job.get(job, "?") if job is not None else "?"
            summary.executor_s[label] += metrics.get("Executor Run Time", 0) / 1000
    return summary


def read_events(folder: Path) -> Iterator[dict[str, Any]]:
    """Events of the newest application logged in `folder` (Spark's rolling layout)."""
    apps = sorted((p for p in folder.iterdir() if p.is_dir()), key=lambda p: p.stat().st_mtime)
    if not apps:
        raise SystemExit(f"eventlog: no Spark application log in {folder}")
    for part in sorted(apps[-1].glob("events_*"), key=_part_number):
        raw = part.read_bytes()
        if part.suffix == ".zstd":
            if shutil.which("zstd") is None:
                raise SystemExit(f"eventlog: {part} is zstd-compressed; install zstd to read it")
            # A log still being written ends mid-frame: what decompressed is kept.
            raw = subprocess.run(["zstd", "-dc"], input=raw, capture_output=True).stdout
        for line in raw.decode("utf-8", "replace").splitlines():
            try:
                yield json.loads(line)
            except ValueError:
                continue  # the cut last line of a log in progress


def _part_number(path: Path) -> int:
    return int(path.name.split("_")[1])


def report(summary: Summary, run: Run | None, top: int) -> str:
    """The busiest queries, and executor seconds per stage when the run is known."""
    lines = [f"executor s {sum(summary.executor_s.values()):.0f} in total"]
    stages: dict[str, str] = {}
    if run is not None:
        stages = {label: summary.stage_of(label, run) for label in summary.first_job_ms}
        per_stage: Counter[str] = Counter()
        for label, seconds in summary.executor_s.items():
            per_stage[stages.get(label, "?")] += seconds
        lines.append(
            "executor s by stage: "
            + ", ".join(f"{stage} {seconds:.0f}" for stage, seconds in per_stage.most_common())
        )
    lines.append(f"{'executor s':>10} {'job s':>8} {'jobs':>5}  query")
    for label, seconds in summary.executor_s.most_common(top):
        stage = f"[{stages[label]}] " if label in stages else ""
        lines.append(
            f"{seconds:10.1f} {summary.job_s[label]:8.1f} {summary.jobs[label]:5d}  {stage}{label}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.eventlog", description=__doc__)
    parser.add_argument("folder", type=Path, help="spark.eventLog.dir of the run")
    parser.add_argument("--ledger", type=Path, help="the run's ledger (runs/<run>.json)")
    parser.add_argument("--top", type=int, default=30, help="queries to list (default 30)")
    args = parser.parse_args(argv)
    run = Run.from_ledger(json.loads(args.ledger.read_text())) if args.ledger else None
    print(report(summarise(read_events(args.folder)), run, args.top))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
