"""Two runs on one warehouse at once: the second is refused with a clear message, at once."""

from __future__ import annotations

import fcntl
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from omopflow import cli, pipeline
from omopflow.cli import SAMPLE_VOCAB
from omopflow.config import RunConfig
from omopflow.errors import RunLocked
from omopflow.pseudonym import KEY_VARIABLE
from tests.fhir_fixtures import patient, write_ndjson

KEY = b"lock-test-key-0123456789abcdef!!"


@contextmanager
def run_in_progress(out: Path) -> Iterator[None]:
    """Hold the warehouse lock as a running `omopflow run` does."""
    out.mkdir(parents=True, exist_ok=True)
    with open(out / ".lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        yield


@pytest.fixture
def input_dir(tmp_path: Path) -> Path:
    write_ndjson(tmp_path / "in" / "Patient.ndjson", [patient("p1")])
    return tmp_path / "in"


def test_a_second_run_is_refused_while_one_holds_the_warehouse(spark, input_dir, tmp_path):
    out = tmp_path / "out"
    with run_in_progress(out), pytest.raises(RunLocked, match="another omopflow run holds"):
        pipeline.run(spark, RunConfig(input_dir, (SAMPLE_VOCAB,), out), KEY)
    assert not (out / "build").exists(), "the refused run did no work"


def test_the_refusal_is_one_line_and_exit_status_4(spark, input_dir, tmp_path, capsys, monkeypatch):
    out = tmp_path / "out"
    monkeypatch.setenv(KEY_VARIABLE, KEY.decode())
    argv = ["run", "--input", str(input_dir), "--vocab", str(SAMPLE_VOCAB), "--out", str(out)]
    with run_in_progress(out):
        status = cli.main(argv)
    err = capsys.readouterr().err.strip()
    assert status == 4
    assert err.startswith("omopflow: another omopflow run holds the lock")
    assert len(err.splitlines()) == 1
    assert KEY.decode() not in err
