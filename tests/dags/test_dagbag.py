"""The DAG files parse without errors, stay light to import, and wire sites to Assets."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from omopflow.orchestration import ENV_SITES, WAREHOUSE_POOL, landing_asset_uri

from .conftest import DAGS, REPO

SITES = """
sites:
  - {id: north, name: North, kind: file_drop, folder: drops, schedule: "@hourly"}
  - {id: east, name: East, kind: bulk, base_url: "https://fhir.example.org/r4"}
"""


@pytest.fixture
def dagbag(tmp_path: Path, monkeypatch):
    from airflow.dag_processing.dagbag import DagBag

    sites = tmp_path / "sites.yaml"
    sites.write_text(SITES)
    monkeypatch.setenv(ENV_SITES, str(sites))
    return DagBag(dag_folder=str(DAGS))


def test_dag_files_import_without_errors(dagbag) -> None:
    assert dagbag.import_errors == {}
    assert sorted(dagbag.dags) == [
        "omopflow_export_east",
        "omopflow_export_north",
        "omopflow_harmonise",
        "omopflow_vocabulary",
    ]


def test_each_site_export_runs_on_its_schedule_and_announces_its_landing(dagbag) -> None:
    north = dagbag.dags["omopflow_export_north"]
    assert north.schedule == "@hourly"
    assert dagbag.dags["omopflow_export_east"].schedule is None  # by hand only
    [asset] = north.get_task("announce").outlets
    assert asset.uri == landing_asset_uri("north")


def test_harmonise_listens_to_every_landing_and_queues_on_the_pool(dagbag) -> None:
    harmonise = dagbag.dags["omopflow_harmonise"]
    uris = {asset.uri for asset in harmonise.timetable.asset_condition.objects}
    assert uris == {landing_asset_uri("north"), landing_asset_uri("east")}
    assert harmonise.max_active_runs == 1
    assert {task.pool for task in harmonise.tasks} == {WAREHOUSE_POOL}
    # Sites run one after the other, and a failed site does not hold the next one back.
    assert harmonise.get_task("harmonise_north").downstream_task_ids == {"harmonise_east"}
    assert harmonise.get_task("harmonise_east").trigger_rule == "all_done"


def test_broken_sites_file_is_an_import_error_naming_the_field(tmp_path, monkeypatch) -> None:
    from airflow.dag_processing.dagbag import DagBag

    sites = tmp_path / "sites.yaml"
    sites.write_text("sites:\n  - {id: x, name: X, kind: ftp}\n")
    monkeypatch.setenv(ENV_SITES, str(sites))
    errors = DagBag(dag_folder=str(DAGS)).import_errors
    assert errors and all("field 'kind'" in message for message in errors.values())


def test_importing_the_dags_does_not_import_spark() -> None:
    code = (
        "import sys\n"
        f"sys.path.insert(0, {str(DAGS)!r})\n"
        "import omopflow_export, omopflow_harmonise, omopflow_vocabulary\n"
        "heavy = sorted({'pyspark', 'great_expectations', 'duckdb'} & set(sys.modules))\n"
        "assert not heavy, heavy\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-2000:]
