"""The same code on a Spark standalone cluster publishes the same release as on local Spark.

Starts a master and one worker on 127.0.0.1 (free ports, logs and pid files in a tmp folder,
stopped in teardown), then runs `omopflow run --master spark://127.0.0.1:<port>` in a
subprocess (the test session's own SparkSession cannot switch master) on the input of the
session's `sample_runs`: the shipped sample (NDJSON and Bundles) with three broken lines,
the demo's site and key. Its first run, on the session's `local[2]` SparkSession, is the
local release the cluster's must equal.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from omopflow.cli import DEMO_SITE, SAMPLE_VOCAB
from omopflow.pseudonym import DEMO_KEY
from tests.conftest import write_sample_input

pytestmark = [
    pytest.mark.cluster,
    pytest.mark.slow,
]

MASTER = "org.apache.spark.deploy.master.Master"
WORKER = "org.apache.spark.deploy.worker.Worker"
# A loaded CI machine can take minutes to start two JVMs and register the worker.
START_TIMEOUT_S = 300
RUN_TIMEOUT_S = 1800
DRIVER_MEMORY = "1500m"


def _spark_home() -> Path:
    import pyspark

    return Path(pyspark.__file__).resolve().parent


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _daemon(env: dict[str, str], *args: str, check: bool = True) -> None:
    script = Path(env["SPARK_HOME"]) / "sbin" / "spark-daemon.sh"
    subprocess.run(["bash", str(script), *args], env=env, check=check, capture_output=True)


def _wait_for(log_dir: Path, pattern: str, what: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if any(pattern in log.read_text(errors="replace") for log in log_dir.glob("*.out")):
            return
        time.sleep(1)
    logs = "\n".join(log.read_text(errors="replace")[-2000:] for log in log_dir.glob("*.out"))
    pytest.fail(f"{what} did not start within {START_TIMEOUT_S} s:\n{logs}")


@pytest.fixture(scope="module")
def standalone(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """spark://127.0.0.1:<port> of a master with one registered 2-core worker."""
    root = tmp_path_factory.mktemp("standalone")
    (root / "conf").mkdir()  # no spark-defaults.conf or spark-env.sh from elsewhere
    env = {
        **os.environ,
        "SPARK_HOME": str(_spark_home()),
        "SPARK_CONF_DIR": str(root / "conf"),
        "SPARK_LOG_DIR": str(root / "logs"),
        "SPARK_PID_DIR": str(root / "pids"),
        "SPARK_WORKER_DIR": str(root / "work"),
        "SPARK_IDENT_STRING": f"omopflow-test-{os.getpid()}",
        "SPARK_LOCAL_IP": "127.0.0.1",
        "PYSPARK_PYTHON": sys.executable,
    }
    url = f"spark://127.0.0.1:{_free_port()}"
    master_args = ["--host", "127.0.0.1", "--port", url.rsplit(":", 1)[1]]
    master_args += ["--webui-port", str(_free_port())]
    worker_args = ["--host", "127.0.0.1", "--port", str(_free_port())]
    worker_args += ["--webui-port", str(_free_port()), "--cores", "2", "--memory", "1g", url]
    try:
        _daemon(env, "start", MASTER, "1", *master_args)
        _daemon(env, "start", WORKER, "1", *worker_args)
        _wait_for(root / "logs", "Successfully registered with master", "the worker")
        yield url
    finally:
        # spark-daemon.sh stops exactly the processes named in this fixture's pid files.
        for daemon in (WORKER, MASTER):
            _daemon(env, "stop", daemon, "1", check=False)


def _omopflow_run(input_dir: Path, out: Path, master: str) -> None:
    env = {
        **os.environ,
        "OMOPFLOW_PSEUDONYM_KEY": "hex:" + DEMO_KEY.hex(),
        "PYSPARK_PYTHON": sys.executable,
        "SPARK_LOCAL_IP": "127.0.0.1",
        # A smaller driver heap than spark.py's 4g keeps CI's memory in check; the sample needs
        # little, and an explicit --driver-memory wins over the session's spark.driver.memory.
        "PYSPARK_SUBMIT_ARGS": f"--driver-memory {DRIVER_MEMORY} pyspark-shell",
    }
    command = [sys.executable, "-m", "omopflow.cli", "run", "--input", str(input_dir)]
    command += ["--vocab", str(SAMPLE_VOCAB), "--out", str(out), "--site", DEMO_SITE]
    command += ["--master", master]
    done = subprocess.run(
        command, env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT_S, check=False
    )
    assert done.returncode == 0, f"omopflow run --master {master} failed:\n{done.stderr[-3000:]}"


def _table_files(release: Path) -> dict[str, Path]:
    """The Parquet files of the published tables, by path relative to the release.

    The release's ledger.json and report/ (Data Docs) name the run and its times, so they
    differ between any two runs; the tables must not.
    """
    return {str(path.relative_to(release)): path for path in sorted(release.rglob("*.parquet"))}


def _content(path: Path) -> pa.Table:
    """A file's schema (with Spark's metadata) and rows in file order: all but its footer.

    Not bytes: the order of each column chunk's encodings in the footer changes from one JVM
    to the next (seen: RLE, PLAIN, BIT_PACKED against PLAIN, BIT_PACKED, RLE; docs/cluster.md),
    so a local run and a cluster run write files that differ in that order alone.
    """
    return pq.read_table(path)


@pytest.fixture(scope="module")
def cluster_release(standalone: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cluster-run")
    _omopflow_run(write_sample_input(root / "input"), root / "out", standalone)
    return (root / "out" / "current").resolve()


def test_cluster_release_has_the_same_files_schemas_and_rows_as_the_local_one(
    cluster_release: Path, request: pytest.FixtureRequest
) -> None:
    # Asked for only now: while the cluster ran, the other worker may still be building it.
    local = request.getfixturevalue("sample_runs").first.release
    local_files, cluster_files = _table_files(local), _table_files(cluster_release)
    assert any(name.startswith("person/") for name in local_files)
    assert sorted(cluster_files) == sorted(local_files)
    for name, path in local_files.items():
        expected, found = _content(path), _content(cluster_files[name])
        assert found.equals(expected, check_metadata=True), f"{name} differs"
