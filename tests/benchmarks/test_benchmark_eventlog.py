"""The event-log summary: queries named by what they do, seconds put in the right stage."""

from __future__ import annotations

import json

from benchmarks.eventlog import Run, query_label, read_events, report, summarise

WRITE_PLAN = (
    "== Physical Plan ==\nExecute InsertIntoHadoopFsRelationCommand (9)\n...\n"
    "(9) Execute InsertIntoHadoopFsRelationCommand\nInput: []\n"
    "Arguments: file:/w/build/r1/measurement, false, Parquet, [path=/w/build/r1/measurement]"
)
SCAN_PLAN = (
    "(1) Scan parquet \nLocation: InMemoryFileIndex [file:/w/vocab/concept, file:/w/b/person]\n"
    "(2) Scan parquet \nLocation: InMemoryFileIndex [file:/w/vocab/concept]\n"
)


def test_queries_are_named_by_their_output_or_their_inputs():
    assert query_label("parquet at NativeMethodAccessorImpl.java:0", WRITE_PLAN) == (
        "write measurement"
    )
    assert query_label("collect at NativeMethodAccessorImpl.java:0", SCAN_PLAN) == (
        "collect <- concept,person"
    )
    assert query_label("count at X.java:0", "") == "count"


def _events():
    def query(execution, description, plan):
        return {
            "Event": "org.apache.spark.sql.execution.ui.SparkListenerSQLExecutionStart",
            "executionId": execution,
            "description": description,
            "physicalPlanDescription": plan,
        }

    def job(job_id, execution, stages, start, end):
        return [
            {
                "Event": "SparkListenerJobStart",
                "Job ID": job_id,
                "Submission Time": start,
                "Stage IDs": stages,
                "Properties": {"spark.sql.execution.id": str(execution)},
            },
            {"Event": "SparkListenerJobEnd", "Job ID": job_id, "Completion Time": end},
        ]

    def task(stage, run_ms):
        return {
            "Event": "SparkListenerTaskEnd",
            "Stage ID": stage,
            "Task Metrics": {"Executor Run Time": run_ms},
        }

    return [
        query(0, "parquet at a:0", WRITE_PLAN),
        *job(0, 0, [0], start=1_000, end=4_000),
        task(0, 2_000),
        task(0, 1_500),
        query(1, "collect at a:0", SCAN_PLAN),
        *job(1, 1, [1, 2], start=12_000, end=13_000),
        task(2, 500),
    ]


def test_task_time_is_added_to_its_query_and_the_query_to_its_stage():
    summary = summarise(_events())
    assert summary.executor_s == {"write measurement": 3.5, "collect <- concept,person": 0.5}
    assert summary.job_s == {"write measurement": 3.0, "collect <- concept,person": 1.0}
    # Staging began 0.5 s before the first job: 1.0 s and 12.0 s after the epoch's start.
    run = Run.from_ledger(
        {"run_id": "19700101T000000500000Z", "timings_s": {"stage": 10.0, "map": 5.0}}
    )
    assert run.started_ms == 500
    assert summary.stage_of("write measurement", run) == "stage"
    assert summary.stage_of("collect <- concept,person", run) == "map"
    text = report(summary, run, top=5)
    assert "executor s by stage: stage 4, map 0" in text
    assert "[stage] write measurement" in text


def test_the_newest_application_log_is_read_and_a_cut_last_line_skipped(tmp_path):
    app = tmp_path / "eventlog_v2_local-1"
    app.mkdir()
    lines = [json.dumps(event) for event in _events()]
    (app / "events_1_local-1").write_text("\n".join(lines[:3]) + "\n")
    (app / "events_2_local-1").write_text("\n".join(lines[3:]) + '\n{"Event": "cut')
    assert list(read_events(tmp_path)) == _events()
