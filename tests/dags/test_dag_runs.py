"""`dag.test()` runs: export then harmonise against the Bulk Data test server, three rounds.

Round 1 lands and publishes two patients and three encounters; round 2 finds nothing new
and changes nothing; round 3 brings an updated patient and a deleted encounter. Kept tiny
and to two pipeline runs: this module is the slowest of the DAG tests.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from omopflow import orchestration as orch
from tests.bulk.server import BulkServer
from tests.fhir_fixtures import encounter, patient, write_ndjson

from .conftest import DAGS

pytestmark = pytest.mark.slow

FEMALE = 8532
SITE = "east"
KEY = "dag-test-key-of-enough-bytes"


@pytest.fixture(scope="module")
def world(tmp_path_factory, spark, airflow_db) -> Any:
    """Server, sites file and folders; the DAGs read them through the environment."""
    from airflow.dag_processing.dagbag import DagBag

    root = tmp_path_factory.mktemp("dags")
    data = root / "server"
    write_ndjson(data / "Patient.000.ndjson", [patient("p1"), patient("p2", gender="male")])
    write_ndjson(
        data / "Encounter.000.ndjson",
        [encounter("e1", "p1"), encounter("e2", "p2"), encounter("e3", "p2")],
    )
    server = BulkServer(data, polls_before_done=0).start()
    sites = root / "sites.yaml"
    sites.write_text(
        f"sites:\n  - {{id: {SITE}, name: East, kind: bulk, base_url: '{server.base_url}'}}\n"
    )
    env = {
        orch.ENV_SITES: str(sites),
        orch.ENV_LANDING: str(root / "landing"),
        orch.ENV_WAREHOUSE: str(root / "warehouse"),
        orch.ENV_VOCAB: str(orch.SAMPLE_VOCAB),
        orch.ENV_KEY: KEY,
    }
    with pytest.MonkeyPatch.context() as patch:
        for name, value in env.items():
            patch.setenv(name, value)
        bag = DagBag(dag_folder=str(DAGS))
        assert bag.import_errors == {}
        yield type("World", (), {"server": server, "dags": bag.dags, "root": root, "data": data})
    server.stop()


def _run(world: Any, dag_id: str, **options: Any) -> dict[str, str]:
    """Run a DAG once; return its task states."""
    run = world.dags[dag_id].test(**options)
    return {ti.task_id: str(ti.state) for ti in run.get_task_instances()}


def _published(spark, world: Any, table: str) -> list[tuple]:
    rows = spark.read.parquet(str(world.root / "warehouse" / "current" / table)).collect()
    return sorted(tuple(row) for row in rows)


def _tree_digest(folder: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(path.relative_to(folder).as_posix().encode() + path.read_bytes())
    return digest.hexdigest()


def _asset_events() -> int:
    from airflow.models.asset import AssetEvent
    from airflow.utils.session import create_session

    with create_session() as session:
        return session.query(AssetEvent).count()


def test_first_export_lands_and_updates_the_landing_asset(world) -> None:
    world.server.transaction_time = "2026-03-01T02:00:00Z"
    states = _run(world, f"omopflow_export_{SITE}")
    assert states == {"land": "success", "announce": "success"}
    assert (world.root / "landing" / SITE / "20260301T020000Z" / "_COMPLETE").is_file()
    assert _asset_events() == 1


def test_harmonise_publishes_the_landed_export(spark, world) -> None:
    assert _run(world, "omopflow_harmonise") == {f"harmonise_{SITE}": "success"}
    persons = _published(spark, world, "person")
    assert len(persons) == 2
    assert len(_published(spark, world, "visit_occurrence")) == 3
    assert list(orch.harmonised_exports(world.root / "warehouse", SITE)) == ["20260301T020000Z"]


def test_second_round_without_changes_changes_nothing(world) -> None:
    warehouse = world.root / "warehouse"
    release = (warehouse / "current").resolve()
    before = _tree_digest(release)
    world.server.transaction_time = "2026-03-02T02:00:00Z"
    assert _run(world, f"omopflow_export_{SITE}") == {"land": "success", "announce": "skipped"}
    assert _asset_events() == 1  # a skipped announce does not start harmonise
    assert _run(world, "omopflow_harmonise") == {f"harmonise_{SITE}": "success"}
    assert (warehouse / "current").resolve() == release
    assert _tree_digest(release) == before


def test_incremental_export_applies_updates_and_deletes(spark, world) -> None:
    ids_before = [row[0] for row in _published(spark, world, "person")]
    changed = patient("p2", gender="female", meta={"lastUpdated": "2026-03-02T12:00:00Z"})
    write_ndjson(world.data / "Patient.000.ndjson", [patient("p1"), changed])
    world.server.faults.deleted = ["Encounter/e3"]
    world.server.transaction_time = "2026-03-03T02:00:00Z"
    assert _run(world, f"omopflow_export_{SITE}")["announce"] == "success"
    landed = world.root / "landing" / SITE / "20260303T020000Z"
    assert (landed / "deleted").is_dir()
    assert _run(world, "omopflow_harmonise") == {f"harmonise_{SITE}": "success"}
    persons = _published(spark, world, "person")  # (person_id, gender_concept_id, ...)
    assert [row[0] for row in persons] == ids_before  # the crosswalk keeps ids stable
    assert sorted(row[1] for row in persons) == [FEMALE, FEMALE]
    assert len(_published(spark, world, "visit_occurrence")) == 2


def test_vocabulary_run_with_a_folder_that_is_no_release_fails_and_changes_nothing(
    world, tmp_path: Path
) -> None:
    release = (world.root / "warehouse" / "current").resolve()
    states = _run(world, "omopflow_vocabulary", run_conf={"folder": str(tmp_path)})
    assert states == {"refresh": "failed"}
    assert (world.root / "warehouse" / "current").resolve() == release


def test_vocabulary_run_remaps_staged_data_and_reports_no_change_for_the_same_release(
    spark, world
) -> None:
    warehouse = world.root / "warehouse"
    previous = (warehouse / "current").resolve()
    persons = _published(spark, world, "person")
    states = _run(world, "omopflow_vocabulary", run_conf={"folder": str(orch.SAMPLE_VOCAB)})
    assert states == {"refresh": "success"}
    assert (warehouse / "current").resolve() != previous  # re-mapped and published anew
    assert _published(spark, world, "person") == persons
    [report_path] = (warehouse / "runs").glob("*.vocabulary-changes.json")
    report = json.loads(report_path.read_text())
    assert report["previous"] == previous.name
    for table in ("person", "visit_occurrence"):
        changes = report["tables"][table]
        assert (changes["changed"], changes["added"], changes["removed"]) == (0, 0, 0)
