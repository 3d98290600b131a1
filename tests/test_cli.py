"""The command-line contract: clear one-line errors and exit codes, a summary on success."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from omopflow.cli import SAMPLE_VOCAB, main
from tests.fhir_fixtures import patient, write_ndjson


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


def test_console_script_is_installed_and_keeps_the_exit_code_contract(tmp_path):
    """The installed `omopflow` command, in its own process: a refused run exits 2 with a
    one-line reason before Spark starts (a whole run in a second JVM would cost minutes;
    the summary of a real run is checked below, in process)."""
    write_ndjson(tmp_path / "in" / "Patient.ndjson", [patient("p1")])
    env = {k: v for k, v in os.environ.items() if k != "OMOPFLOW_PSEUDONYM_KEY"}
    script = Path(sys.executable).parent / "omopflow"
    args = ["run", "--input", str(tmp_path / "in"), "--vocab", str(SAMPLE_VOCAB)]
    done = subprocess.run(
        [str(script), *args, "--out", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1].startswith("omopflow: ")
    assert "OMOPFLOW_PSEUDONYM_KEY" in done.stderr


def test_summary_names_counts_release_report_and_catalog(sample_runs, capsys):
    from omopflow.cli import print_summary

    result = sample_runs.second
    print_summary(result, sample_runs.config)
    out = " ".join(capsys.readouterr().out.split())  # rich wraps long lines
    mapped = result.ledger["mapping"]["resources_mapped"]
    assert f"{mapped} resources mapped" in out
    assert f"{result.rows['person']} " in out and "visit_occurrence" in out
    for path in (result.release / "report.html", result.catalog):
        assert str(path).replace(" ", "") in out.replace(" ", "")
