"""The command-line contract: clear one-line errors and exit codes, a summary on success."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from omopflow.cli import SAMPLE_VOCAB, main
from tests.fhir_fixtures import encounter, patient, write_ndjson


def _run(args, capsys):
    code = main(args)
    return code, capsys.readouterr().err.strip()


def test_missing_input_folder(tmp_path, capsys):
    code, err = _run(
        [
            "run",
            "--input",
            str(tmp_path / "no"),
            "--vocab",
            str(SAMPLE_VOCAB),
            "--out",
            str(tmp_path / "out"),
        ],
        capsys,
    )
    assert code == 2
    assert err == f"omopflow: input folder not found: {tmp_path / 'no'}"


def test_missing_vocabulary_folder(tmp_path, capsys):
    code, err = _run(
        [
            "run",
            "--input",
            str(tmp_path),
            "--vocab",
            str(tmp_path / "v"),
            "--out",
            str(tmp_path / "out"),
        ],
        capsys,
    )
    assert code == 2
    assert "vocabulary folder not found" in err


def test_output_path_that_is_a_file(tmp_path, capsys):
    (tmp_path / "out").write_text("")
    code, err = _run(
        [
            "run",
            "--input",
            str(tmp_path),
            "--vocab",
            str(SAMPLE_VOCAB),
            "--out",
            str(tmp_path / "out"),
        ],
        capsys,
    )
    assert code == 2
    assert "not a folder" in err


def test_unwritable_output_folder(tmp_path, capsys):
    if os.geteuid() == 0:
        pytest.skip("root can write anywhere")
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    code, err = _run(
        [
            "run",
            "--input",
            str(tmp_path),
            "--vocab",
            str(SAMPLE_VOCAB),
            "--out",
            str(locked / "out"),
        ],
        capsys,
    )
    assert code == 2 and "not writable" in err


def test_run_without_a_pseudonym_key_is_refused(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("OMOPFLOW_PSEUDONYM_KEY", raising=False)
    code, err = _run(
        [
            "run",
            "--input",
            str(tmp_path),
            "--vocab",
            str(SAMPLE_VOCAB),
            "--out",
            str(tmp_path / "out"),
        ],
        capsys,
    )
    assert code != 0
    assert "OMOPFLOW_PSEUDONYM_KEY" in err


def test_console_script_runs_and_prints_a_summary(tmp_path):
    """The installed `omopflow` command, in its own process, on a two-patient export."""
    write_ndjson(tmp_path / "in" / "Patient.ndjson", [patient("p1"), patient("p2")])
    write_ndjson(tmp_path / "in" / "Encounter.ndjson", [encounter("e1", "p1")])
    env = {**os.environ, "OMOPFLOW_PSEUDONYM_KEY": "x" * 32, "SPARK_LOCAL_IP": "127.0.0.1"}
    script = Path(sys.executable).parent / "omopflow"
    done = subprocess.run(
        [
            str(script),
            "run",
            "--input",
            str(tmp_path / "in"),
            "--vocab",
            str(SAMPLE_VOCAB),
            "--out",
            str(tmp_path / "out"),
            "--site",
            "tiny",
            "--master",
            "local[1]",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=1200,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "2 resources mapped" not in done.stdout  # persons and the visit: 3
    assert "3 resources mapped" in done.stdout
    assert "omop.duckdb" in done.stdout
    assert (tmp_path / "out" / "current" / "person").is_dir()
