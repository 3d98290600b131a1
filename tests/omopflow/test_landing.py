"""Whole-file checks at discovery: empty and unreadable gzip files become file problems
before Spark reads anything (one broken gzip would otherwise fail the read of every file)."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from omopflow import landing
from omopflow.landing import EMPTY_FILE, UNREADABLE_GZIP, discover

LINES = b'{"resourceType":"Patient","id":"p1"}\n' * 200


def reasons(folder: Path) -> dict[str, str]:
    found = discover(folder)
    return {Path(p.path).name: p.reason for p in found.problems}


def staged_names(folder: Path) -> list[str]:
    return sorted(f.path.name for f in discover(folder).files)


def test_a_good_gzip_file_is_staged(tmp_path):
    (tmp_path / "Patient.ndjson.gz").write_bytes(gzip.compress(LINES))
    assert staged_names(tmp_path) == ["Patient.ndjson.gz"]
    assert reasons(tmp_path) == {}


def test_concatenated_gzip_members_are_one_good_file(tmp_path, monkeypatch):
    # A small read size puts member boundaries inside and at the edge of chunks.
    monkeypatch.setattr(landing, "GZIP_CHUNK", 7)
    (tmp_path / "Patient.ndjson.gz").write_bytes(gzip.compress(LINES) + gzip.compress(LINES))
    assert reasons(tmp_path) == {}


def test_a_truncated_gzip_is_a_file_problem_and_the_other_files_stay(tmp_path):
    whole = gzip.compress(LINES)
    (tmp_path / "Patient.ndjson.gz").write_bytes(whole[: len(whole) // 2])
    (tmp_path / "Encounter.ndjson").write_bytes(b'{"resourceType":"Encounter","id":"e"}\n')
    assert reasons(tmp_path) == {"Patient.ndjson.gz": UNREADABLE_GZIP}
    assert staged_names(tmp_path) == ["Encounter.ndjson"]


def test_a_gz_name_on_plain_text_is_a_file_problem(tmp_path):
    (tmp_path / "Patient.ndjson.gz").write_bytes(LINES)
    problem = discover(tmp_path).problems[0]
    assert (problem.reason, problem.detail) == (
        UNREADABLE_GZIP,
        "not gzip data (no gzip magic bytes)",
    )


@pytest.mark.parametrize(
    ("name", "content"),
    # mtime=0: the gzip header's clock would otherwise make each test worker collect a
    # differently named test (pytest-xdist then refuses to run).
    [("Patient.ndjson", b""), ("Patient.ndjson.gz", gzip.compress(b"", mtime=0)), ("b.json", b"")],
    ids=["ndjson", "gzip", "bundle"],
)
def test_an_empty_file_is_a_file_problem(tmp_path, name, content):
    (tmp_path / name).write_bytes(content)
    assert reasons(tmp_path) == {name: EMPTY_FILE}
    assert staged_names(tmp_path) == []


def test_a_file_listed_in_a_manifest_is_checked_too(tmp_path):
    (tmp_path / "Patient.ndjson.gz").write_bytes(b"not gzip")
    manifest = '{"output": [{"type": "Patient", "url": "Patient.ndjson.gz"}]}'
    (tmp_path / "manifest.json").write_text(manifest)
    assert reasons(tmp_path) == {"Patient.ndjson.gz": UNREADABLE_GZIP}
