"""Shared helpers of the DAG tests: sites files, tiny exports, a fake pipeline run."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omopflow.config import RunConfig
from omopflow.sites import KIND_BULK, KIND_FILE_DROP, Site


def drop_site(folder: Path, site_id: str = "north") -> Site:
    return Site(id=site_id, name="North", kind=KIND_FILE_DROP, folder=folder)


def bulk_site(base_url: str, site_id: str = "east") -> Site:
    return Site(id=site_id, name="East", kind=KIND_BULK, base_url=base_url, level="system")


def landed_export(
    landing: Path, site_id: str, export: str, lines: int = 1, error_lines: int = 0
) -> Path:
    """A landed export folder as omopflow.bulk.landing leaves it (contents are not read)."""
    folder = landing / site_id / export
    folder.mkdir(parents=True)
    files = {}
    if lines:
        files["Patient.000.ndjson"] = {"sha256": "-", "bytes": 1, "lines": lines}
    if error_lines:
        errors = {"sha256": "-", "bytes": 1, "lines": error_lines}
        files["error/OperationOutcome.000.ndjson"] = errors
    (folder / "_COMPLETE").write_text(json.dumps({"exportId": export, "files": files}))
    return folder


@dataclass
class FakeResult:
    run_id: str
    release: Path | None = None
    rows: dict[str, int] = field(default_factory=lambda: {"person": 1})
    ledger: dict[str, Any] = field(default_factory=dict)


@dataclass
class FakeRun:
    """Stands in for omopflow.pipeline.run: records its configs, fails when told to."""

    fail_on: str | None = None
    configs: list[RunConfig] = field(default_factory=list)

    def __call__(self, spark: Any, config: RunConfig, key: bytes, progress: Any) -> FakeResult:
        if self.fail_on and config.input_dir.name == self.fail_on:
            raise RuntimeError(f"pipeline failed on {self.fail_on}")
        self.configs.append(config)
        return FakeResult(run_id=f"run{len(self.configs)}")
