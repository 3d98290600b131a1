"""The bare-parse baseline counts every line once, however files are cut into tasks."""

from __future__ import annotations

import gzip
from pathlib import Path

import orjson
import pytest

from benchmarks.baseline import bare_parse, find_ndjson, main

# 5 JSON lines, a blank line, a line that is not JSON, no newline at the end.
PLAIN = b'{"a":1}\n{"bb":[1,2,3]}\n\n{"c":"x y"}\nnot json\n{}\n{"last":true}'
GZIPPED = b'{"resourceType":"Patient"}\n{"resourceType":"Encounter"}\n'


@pytest.fixture
def export(tmp_path: Path) -> Path:
    (tmp_path / "site" / "nested").mkdir(parents=True)
    (tmp_path / "site" / "Observation.000.ndjson").write_bytes(PLAIN)
    (tmp_path / "site" / "nested" / "Patient.000.ndjson.gz").write_bytes(gzip.compress(GZIPPED))
    (tmp_path / "site" / "log.ndjson").write_bytes(b'{"eventId":"kickoff"}\n')
    (tmp_path / "site" / "manifest.json").write_bytes(b"{}")
    return tmp_path / "site"


def test_finds_plain_and_gzip_files_but_not_the_exporter_log(export: Path) -> None:
    assert [p.name for p in find_ndjson(export)] == [
        "Observation.000.ndjson",
        "Patient.000.ndjson.gz",
    ]


def test_counts_lines_and_bytes_of_plain_and_gzip_files(export: Path) -> None:
    result = bare_parse(find_ndjson(export), workers=1)
    assert (result["lines"], result["invalid_lines"]) == (5 + 2, 1)
    assert result["bytes"] == len(PLAIN) + len(GZIPPED)
    assert result["file_bytes"] < result["bytes"] + 100  # gzip of a tiny file barely shrinks


@pytest.mark.parametrize("chunk_bytes", range(1, len(PLAIN) + 2))
def test_every_line_counted_once_wherever_a_chunk_boundary_falls(
    export: Path, chunk_bytes: int
) -> None:
    result = bare_parse([export / "Observation.000.ndjson"], workers=1, chunk_bytes=chunk_bytes)
    assert (result["lines"], result["invalid_lines"], result["bytes"]) == (5, 1, len(PLAIN))


def test_a_pool_of_workers_gives_the_same_counts(export: Path) -> None:
    single = bare_parse(find_ndjson(export), workers=1, chunk_bytes=10)
    pooled = bare_parse(find_ndjson(export), workers=2, chunk_bytes=10)
    keys = ("files", "lines", "invalid_lines", "bytes", "file_bytes")
    assert [pooled[key] for key in keys] == [single[key] for key in keys]


def test_cli_prints_json_and_refuses_a_folder_without_ndjson(
    export: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([str(export), "--workers", "1"]) == 0
    assert orjson.loads(capsys.readouterr().out)["lines"] == 7
    assert main([str(tmp_path / "missing")]) == 2
    assert "no *.ndjson" in capsys.readouterr().err
