"""The benchmark runner's report: ratios, targets and the document section (no Spark here)."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import pytest

from benchmarks.memory import PeakSampler
from benchmarks.run import (
    DOC_END,
    DOC_START,
    PipelineFailed,
    PipelineRun,
    check_sizes,
    check_targets,
    main,
    markdown,
    replace_section,
    run_pipeline,
    summarise,
)
from omopflow.errors import UsageError

BASELINE = {"lines": 20_000, "bytes": 50_000_000, "file_bytes": 50_000_000, "seconds": 2.0}


def _run(
    wall_s: float,
    driver_mb: float = 300.0,
    timings: dict[str, float] | None = None,
    check: dict[str, float] | None = None,
):
    ledger = {"run_id": "r1", "timings_s": timings or {}, "rows": {"person": 10}}
    if check is not None:
        ledger["check_s"] = check
    memory = {"driver_mb": driver_mb, "jvm_mb": 2000.0, "workers_mb": 700.0, "total_mb": 3000.0}
    return PipelineRun(wall_s, ledger, memory)


def _row(patients: int, wall_s: float, driver_mb: float = 300.0) -> dict[str, Any]:
    return summarise(patients, {"seconds": 1.0}, BASELINE, _run(wall_s, driver_mb))


def test_row_compares_the_pipeline_with_the_bare_parse_of_the_same_files() -> None:
    row = _row(100, wall_s=40.0)
    assert row["ratio"] == 20.0  # 40 s against 2 s
    assert row["records_per_s"] == 500  # 20,000 resources in 40 s
    assert row["mb_per_s"] == 1.25  # 50 MB in 40 s


def test_time_outside_the_ledgers_stages_is_what_the_stages_do_not_explain() -> None:
    timings = {"stage": 10.0, "map": 15.0, "publish": 5.0, "vocabulary": 2.0}
    row = summarise(100, {}, BASELINE, _run(40.0, timings=timings))
    assert row["outside_stages_s"] == 8.0
    assert row["stages_s"]["check"] is None  # a stage the ledger lacks stays visible


def test_the_check_stages_parts_overlap_and_are_not_added_to_the_stages() -> None:
    check = {"validate": 9.0, "report": 8.0, "needles": 6.0}
    row = summarise(100, {}, BASELINE, _run(40.0, timings={"check": 10.0}, check=check))
    assert row["check_s"] == check
    assert row["outside_stages_s"] == 30.0
    assert "| 9.0 | 8.0 | 6.0 |" in markdown(_report([row]))


def test_a_stage_the_runner_does_not_know_is_kept() -> None:
    row = summarise(100, {}, BASELINE, _run(40.0, timings={"stage": 1.0, "index": 3.0}))
    assert row["stages_s"]["index"] == 3.0
    assert row["outside_stages_s"] == 36.0


def test_linear_cost_and_flat_memory_are_met_within_their_limits() -> None:
    targets = check_targets([_row(10_000, 500.0, 330.0), _row(1_000, 50.0, 300.0)])
    growth, memory = targets[1:]
    assert (growth["value"], growth["met"]) == (1.0, True)
    assert (memory["value"], memory["met"]) == (1.1, True)


def test_superlinear_cost_fails_its_target() -> None:
    # 10x the patients for 12x the time: more than the 11x allowed.
    growth = check_targets([_row(1_000, 50.0), _row(10_000, 600.0)])[1]
    assert (growth["value"], growth["met"]) == (1.2, False)


def test_growing_driver_memory_fails_its_target() -> None:
    memory = check_targets([_row(1_000, 50.0, 300.0), _row(3_000, 150.0, 600.0)])[2]
    assert (memory["value"], memory["met"]) == (2.0, False)


def test_ratio_target_is_taken_at_the_largest_size() -> None:
    ratio = check_targets([_row(1_000, 30.0), _row(3_000, 60.0)])[0]
    assert ratio["target"].endswith("at 3000 patients")
    assert (ratio["value"], ratio["met"]) == (30.0, False)


def test_one_size_checks_only_the_ratio() -> None:
    assert len(check_targets([_row(1_000, 30.0)])) == 1


def _report(rows: list[dict[str, Any]]) -> dict[str, Any]:
    machine = {"cpus": 2, "memory_gb": 23.5, "pyspark": "4.3.0"}
    return {
        "started": "2026-11-28 21:00 UTC",
        "command": "python -m benchmarks.run --patients 100 300",
        "master": "local[*]",
        "source": "synthea-bundles",
        "vocab": "athena-subset",
        "machine": machine | {"load_before": "1.0", "load_after": "1.2"},
        "rows": rows,
        "targets": check_targets(rows),
    }


def test_table_has_one_line_per_size_with_as_many_cells_as_columns() -> None:
    text = markdown(_report([_row(300, 60.0), _row(100, 30.0)]))
    table = [line for line in text.splitlines() if line.startswith("| ")]
    header, sizes = table[0], table[1:3]
    assert [line.split(" | ")[0] for line in sizes] == ["| 100", "| 300"]
    assert {line.count("|") for line in sizes} == {header.count("|")}
    assert "| – |" in sizes[0]  # the stages this ledger lacks
    # The driver's memory, then its worker processes' (leak scan, GX), then the JVM's.
    assert sizes[0].endswith("| 300 | 700 | 2,000 |")


def test_an_unmet_target_stands_out() -> None:
    text = markdown(_report([_row(100, 30.0), _row(300, 200.0)]))
    assert "| **no** |" in text


def test_section_between_the_markers_is_replaced_and_the_prose_kept() -> None:
    document = f"# Performance\n\nprose\n\n{DOC_START}\nold table\n{DOC_END}\n\nmore prose\n"
    updated = replace_section(replace_section(document, "new table\n"), "newer table\n")
    assert updated == (
        f"# Performance\n\nprose\n\n{DOC_START}\nnewer table\n{DOC_END}\n\nmore prose\n"
    )


def test_a_document_without_markers_is_refused() -> None:
    with pytest.raises(UsageError, match="markers"):
        replace_section("# Performance\n", "table\n")


@pytest.mark.parametrize("sizes", [[0, 100], [100, 100]])
def test_bad_sizes_are_refused(sizes: list[int]) -> None:
    with pytest.raises(UsageError, match="--patients"):
        check_sizes(sizes)


def test_cli_refuses_before_working_when_the_document_lacks_markers(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    doc = tmp_path / "performance.md"
    doc.write_text("# Performance\n")
    assert main(["--patients", "10", "--doc", str(doc), "--work", str(tmp_path / "w")]) == 2
    assert "markers" in capsys.readouterr().err
    assert not (tmp_path / "w").exists()


def test_a_failing_pipeline_is_reported_with_its_last_line(tmp_path: Path) -> None:
    # `omopflow run` refuses a missing input folder before starting Spark.
    command = [sys.executable, "-m", "omopflow.cli", "run", "--input", str(tmp_path / "none")]
    command += ["--vocab", str(tmp_path), "--out", str(tmp_path / "out")]
    with pytest.raises(PipelineFailed, match="exited 2: omopflow: input folder not found"):
        run_pipeline(command, dict(os.environ), tmp_path / "out", tmp_path / "run.log")


def test_memory_sampler_sees_the_process_it_watches() -> None:
    result = PeakSampler(os.getpid(), interval_s=0.01).start().stop()
    assert result.samples >= 1
    assert result.driver_mb > 10  # a Python interpreter with pytest loaded


def test_python_children_are_workers_and_other_helpers_are_left_out() -> None:
    """A JVM's helper commands share its pages until they exec: counting them as workers
    showed the JVM's size twice. Watched here: a process with a Python child and a shell."""
    import subprocess

    import psutil

    from benchmarks.memory import tree_rss

    child = "import time; print('up', flush=True); time.sleep(30)"
    helper = "x=$(printf '%4000000s'); echo up; sleep 30; echo done"  # a shell holding 4 MB
    parent = (
        "import subprocess, sys, time\n"
        f"py = subprocess.Popen([sys.executable, '-c', {child!r}], stdout=subprocess.PIPE)\n"
        "py.stdout.readline()\n"
        f"sh = subprocess.Popen(['bash', '-c', {helper!r}], stdout=subprocess.PIPE)\n"
        "sh.stdout.readline()\n"
        "print(py.pid, sh.pid, flush=True)\n"
        "time.sleep(30)\n"
    )
    root = subprocess.Popen([sys.executable, "-c", parent], stdout=subprocess.PIPE, text=True)
    try:
        assert root.stdout is not None
        python_pid, helper_pid = map(int, root.stdout.readline().split())
        python_mb, helper_mb = (
            psutil.Process(pid).memory_info().rss / 10**6 for pid in (python_pid, helper_pid)
        )
        _, jvm, workers = tree_rss(psutil.Process(root.pid))
        assert jvm == 0.0 and helper_mb > 4
        assert workers == pytest.approx(python_mb, abs=1)  # the Python child, not the shell
    finally:
        for process in psutil.Process(root.pid).children(recursive=True):
            process.kill()
        root.kill()
        root.wait()
