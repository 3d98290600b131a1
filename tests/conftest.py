"""One SparkSession per test process: a JVM start costs seconds.

`make test` runs the suite on two pytest-xdist workers (two processes, two JVMs, files
dealt out whole with `--dist loadfile`, so module fixtures run once): a pipeline run keeps
Python busy about half the time and the JVM the other half, so two workers overlap them.
`sample_runs` is built once per test session even across workers (a file lock in the
session's shared temporary folder; the other worker waits and reads the result).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")

REPO = Path(__file__).resolve().parent.parent
# Every test warehouse shares one loaded copy of each vocabulary release (keyed by its
# fingerprint), as a platform would: loading the sample vocabulary costs a minute.
os.environ.setdefault("OMOPFLOW_VOCAB_CACHE", str(REPO / "build" / "test-vocabulary-cache"))
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def spark() -> Iterator[object]:
    from omopflow.spark import get_session

    session = get_session(master="local[2]", app_name="omopflow-tests")
    yield session
    session.stop()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is not beside this checkout")
    return SHARED_DATA


@dataclass
class SampleRuns:
    """The shipped sample with three broken lines added, run twice on one warehouse."""

    config: Any  # omopflow.config.RunConfig
    first: Any  # omopflow.pipeline.RunResult
    first_tables: dict[str, dict[str, bytes]]  # table -> part file -> bytes, of the first run
    second: Any


BROKEN_LINES = ['{"resourceType": "Patient", "id": ', "[]", '{"resourceType": "Patient"}']


def table_bytes(release: Path, table: str) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((release / table).glob("*.parquet"))}


@pytest.fixture(scope="session")
def sample_runs(spark, tmp_path_factory, worker_id) -> SampleRuns:
    """The demo's warehouse, shared by the end-to-end, CLI and query-docs tests: a pipeline
    run is the most expensive thing the suite does. Same key and site as `omopflow demo`,
    so the numbers docs/querying.md shows are the ones this warehouse gives."""
    import fcntl
    import pickle

    base = tmp_path_factory.getbasetemp()
    shared = base if worker_id == "master" else base.parent  # xdist: one folder per session
    with open(shared / "sample-runs.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        done = shared / "sample-runs.pickle"
        if done.is_file():
            runs: SampleRuns = pickle.loads(done.read_bytes())
            return runs
        runs = _run_sample_twice(spark, shared / "sample-runs")
        done.write_bytes(pickle.dumps(runs))
        return runs


def write_sample_input(folder: Path) -> Path:
    """The shipped sample with `BROKEN_LINES` added, copied to `folder`."""
    import shutil

    from omopflow.cli import SAMPLE_INPUT
    from tests.fhir_fixtures import write_ndjson

    shutil.copytree(SAMPLE_INPUT, folder)
    write_ndjson(folder / "broken" / "Patient.ndjson", BROKEN_LINES)
    return folder


def _run_sample_twice(spark: Any, root: Path) -> SampleRuns:
    from omopflow import pipeline
    from omopflow.cli import DEMO_SITE, SAMPLE_VOCAB
    from omopflow.config import RunConfig
    from omopflow.pseudonym import DEMO_KEY

    data = write_sample_input(root / "input")
    config = RunConfig(data, (SAMPLE_VOCAB,), root / "out", DEMO_SITE)
    first = pipeline.run(spark, config, DEMO_KEY)
    first_tables = {t: table_bytes(first.release, t) for t in first.rows}
    second = pipeline.run(spark, config, DEMO_KEY)
    return SampleRuns(config, first, first_tables, second)


# The files that run whole pipelines, dealt out first so that none starts near the end.
# `make test` passes `--no-loadscope-reorder`: pytest-xdist would otherwise deal files out
# by their number of tests, and the cluster test (one test, several minutes) came last.
# The end-to-end file builds `sample_runs`; the other files that read it come later. The
# cluster test compares its release with `sample_runs`' first: dealt out after the DAG runs,
# it finds it built instead of waiting for it.
SLOW_FIRST = (
    "tests/test_end_to_end.py",
    "tests/dags/test_dag_runs.py",
    "tests/test_cluster.py",
    "tests/test_dateshift.py",
    "tests/transforms/test_golden.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        path = item.path.relative_to(REPO).as_posix()
        return SLOW_FIRST.index(path) if path in SLOW_FIRST else len(SLOW_FIRST)

    items.sort(key=rank)  # stable: the order within a file is kept
