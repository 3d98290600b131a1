"""Fault model: a run killed at any stage leaves `current/` and the crosswalk as they were,
and the next run gives the release an uninterrupted run gives.

Affordable on a shared 2-core machine: warehouse B gets a first release from export 1;
a copy of it becomes warehouse A, where export 2 runs uninterrupted (the reference). On B,
export 2 is then killed at each stage (at `staging` in a subprocess with a real SIGKILL;
the later stages in this process with `raise`, sharing its Spark session; `pointers`, after
the commit, last) and finally run to the end.
The same runs check governance: the released files are searched for every identifier of
the input (leakage scan), the crosswalk stays out of the warehouse and the key out of
every file, and the mapping-level bad inputs (dangling references, impossible and future
dates) are excluded with reasons that the ledger counts, without blocking the release.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from omopflow import faults, pipeline
from omopflow.cli import SAMPLE_VOCAB
from omopflow.config import RunConfig
from omopflow.leakscan import scan_release
from tests.fhir_fixtures import encounter, patient, write_ndjson

# Eight pipeline runs (about 17 minutes on this 2-core machine): run by `make drill`, not
# by `make test`, which must stay well under CI's half hour.
pytestmark = [pytest.mark.slow, pytest.mark.drill]

KEY = b"fault-test-key-0123456789abcdef!"
SITE = "site-f"
REPO = Path(__file__).resolve().parents[2]
# A real SIGKILL where it is cheapest (a second JVM costs its start-up), then the other
# stages in this process, sharing its Spark session.
SUBPROCESS_KILL = "staging"
IN_PROCESS_KILLS = ("mapping", "validation", "publishing")
AFTER_COMMIT = "pointers"  # last: the run after it repairs what it left


def person(pid: str, family: str, **fields: Any) -> dict[str, Any]:
    return patient(
        pid,
        identifier=[{"system": "urn:oid:1.2.3", "value": f"MRN-{pid}-77"}],
        name=[{"family": family, "given": ["Henrietta"]}],
        telecom=[{"system": "phone", "value": f"555-01{len(family):02d}-{len(pid):04d}"}],
        address=[{"line": [f"{len(family)} Larkspur Crescent"], "city": "Springfield"}],
        **fields,
    )


def condition(cid: str, pid: str, onset: str) -> dict[str, Any]:
    return {
        "resourceType": "Condition",
        "id": cid,
        "subject": {"reference": f"Patient/{pid}"},
        "code": {"coding": [{"system": "http://snomed.info/sct", "code": "44054006"}]},
        "onsetDateTime": onset,
    }


def write_inputs(root: Path) -> tuple[Path, Path]:
    first, second = root / "export-1", root / "export-2"
    people = [person("pat-aa01", "Vandermolen"), person("pat-bb02", "Oyelaran")]
    write_ndjson(first / "Patient.ndjson", people)
    write_ndjson(
        first / "Encounter.ndjson",
        [encounter("enc-aa01", "pat-aa01"), encounter("enc-bb02", "pat-bb02")],
    )
    write_ndjson(first / "Condition.ndjson", [condition("cnd-aa01", "pat-aa01", "2019-05-01")])
    write_ndjson(
        second / "Patient.ndjson",
        [
            person("pat-cc03", "Kowalczyk"),
            person("pat-impossible", "Abernathy", birthDate="2021-02-30"),
        ],
    )
    write_ndjson(
        second / "Encounter.ndjson",
        [encounter("enc-cc03", "pat-cc03"), encounter("enc-dangling", "pat-nobody")],
    )
    conditions = [
        condition("cnd-cc03", "pat-cc03", "2020-03-01"),
        condition("cnd-clock", "pat-cc03", "2999-01-01"),  # a source clock error
    ]
    write_ndjson(second / "Condition.ndjson", conditions)
    return first, second


def config(input_dir: Path, out: Path) -> RunConfig:
    return RunConfig(input_dir, (SAMPLE_VOCAB,), out, SITE)


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _files(folder: Path) -> dict[str, str]:
    if not folder.is_dir():
        return {}
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    return {str(p.relative_to(folder)): _digest(p) for p in files}


def snapshot(out: Path) -> dict[str, Any]:
    """What readers and the next run depend on: current/, the catalog, the crosswalk."""
    crosswalk = out / "restricted" / "crosswalk"
    pointer = (crosswalk / "CURRENT").read_text().strip()
    return {
        "current": os.readlink(out / "current"),
        "current files": _files(out / "current"),
        "catalog": _digest(out / "omop.duckdb"),
        "crosswalk pointer": pointer,
        "staging pointer": (out / "staging" / SITE / "CURRENT").read_text().strip(),
        "crosswalk files": _files(crosswalk / pointer),
    }


def kill_in_subprocess(input_dir: Path, out: Path, stage: str) -> subprocess.CompletedProcess:
    script = (
        "import sys\n"
        "from pathlib import Path\n"
        "from omopflow import pipeline\n"
        "from omopflow.spark import get_session\n"
        "from tests.reliability.test_faults import KEY, config\n"
        "spark = get_session(master='local[1]')\n"
        "pipeline.run(spark, config(Path(sys.argv[1]), Path(sys.argv[2])), KEY)\n"
    )
    env = {**os.environ, faults.FAIL_AT_VARIABLE: stage, faults.FAIL_MODE_VARIABLE: "kill"}
    return subprocess.run(
        [sys.executable, "-c", script, str(input_dir), str(out)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
    )


def _table_bytes(release: Path) -> dict[str, str]:
    return {k: v for k, v in _files(release).items() if k.endswith(".parquet")}


@pytest.fixture(scope="module")
def drill(spark, tmp_path_factory):
    root = tmp_path_factory.mktemp("faults")
    first, second = write_inputs(root)
    b_out, a_out = root / "b", root / "a"
    pipeline.run(spark, config(first, b_out), KEY)
    shutil.copytree(b_out, a_out, symlinks=True)  # `current` is a relative link: still valid
    reference = pipeline.run(spark, config(second, a_out), KEY)

    # Compared stage by stage: at `pointers` the release is live and the pointers lag.
    before: dict[str, dict[str, Any]] = {}
    after: dict[str, dict[str, Any]] = {}
    raised: dict[str, str] = {}

    def fail_in_process(stage: str) -> None:
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv(faults.FAIL_AT_VARIABLE, stage)
            patch.setenv(faults.FAIL_MODE_VARIABLE, "raise")
            before[stage] = snapshot(b_out)
            with pytest.raises(faults.InjectedFault) as fault:
                pipeline.run(spark, config(second, b_out), KEY)
            raised[stage] = str(fault.value)
            after[stage] = snapshot(b_out)

    before[SUBPROCESS_KILL] = snapshot(b_out)
    killed = kill_in_subprocess(second, b_out, SUBPROCESS_KILL)
    after[SUBPROCESS_KILL] = snapshot(b_out)
    for stage in IN_PROCESS_KILLS:
        fail_in_process(stage)
    fail_in_process(AFTER_COMMIT)
    pipeline.repair_pointers(config(second, b_out))  # what the next run does first
    repaired = snapshot(b_out)
    final = pipeline.run(spark, config(second, b_out), KEY)
    return {
        "b": b_out,
        "inputs": (first, second),
        "before": before,
        "after": after,
        "raised": raised,
        "killed": killed,
        "repaired": repaired,
        "reference": reference,
        "final": final,
    }


@pytest.mark.parametrize("stage", ["staging", "mapping", "validation", "publishing"])
def test_a_run_killed_before_its_commit_leaves_current_and_crosswalk_as_before(drill, stage):
    assert drill["after"][stage] == drill["before"][stage]


def test_a_run_killed_after_its_commit_has_published_and_kept_the_old_pointers(drill):
    after, before = drill["after"]["pointers"], drill["before"]["pointers"]
    assert after["current"] != before["current"]  # the release went live: the commit point
    assert after["crosswalk pointer"] == before["crosswalk pointer"]


def test_the_next_run_moves_lagging_pointers_up_to_the_live_release(drill):
    live = drill["after"][AFTER_COMMIT]["current"].rsplit("/", 1)[-1]
    repaired = drill["repaired"]
    assert repaired["crosswalk pointer"] == live
    assert repaired["staging pointer"] == live
    assert repaired["current"] == drill["after"][AFTER_COMMIT]["current"]


def test_the_subprocess_really_died_at_its_stage(drill):
    killed = drill["killed"]
    assert killed.returncode == -9, killed.stderr[-2000:]


def test_the_run_after_the_kills_gives_the_uninterrupted_release(drill):
    final, reference = drill["final"], drill["reference"]
    assert final.rows == reference.rows
    assert _table_bytes(final.release) == _table_bytes(reference.release)


def test_the_ledger_of_the_completing_run_adds_up(drill):
    record = drill["final"].ledger
    assert record["ledger_problems"] == []
    staging = record["staging"]
    assert staging["items"] + staging["file_problems"] == staging["staged"] + staging["quarantined"]
    mapping = record["mapping"]
    assert mapping["resources_in"] == mapping["resources_mapped"] + mapping["resources_excluded"]


def test_a_reference_to_a_missing_patient_is_an_exclusion_with_a_reason(drill):
    encounters = drill["final"].ledger["mapping"]["by_type"]["Encounter"]
    assert (encounters["in"], encounters["mapped"]) == (4, 3)
    assert encounters["excluded"] == {"patient not in staging": 1}


def test_a_date_in_the_future_is_an_exclusion_not_a_blocked_release(drill):
    conditions = drill["final"].ledger["mapping"]["by_type"]["Condition"]
    assert conditions["excluded"] == {"date in the future": 1}
    assert drill["final"].rows["condition_occurrence"] == 2


def test_an_impossible_birth_date_is_an_exclusion_with_a_reason(drill):
    patients = drill["final"].ledger["mapping"]["by_type"]["Patient"]
    assert patients["excluded"] == {"no usable birth date": 1}


@pytest.mark.parametrize("export", [0, 1])
def test_the_release_holds_no_identifier_of_the_input(drill, export):
    out = drill["b"]
    report = scan_release(
        None, drill["inputs"][export], out / "current", out / "omop.duckdb", secrets=[KEY]
    )
    assert report.clean, report.summary()
    assert report.needles_by_kind["name"] >= 2


def test_the_crosswalk_is_only_under_restricted(drill):
    out = drill["b"]
    published = [p for p in (out / "releases").rglob("*")] + [out / "omop.duckdb"]
    assert not [p for p in published if "crosswalk" in p.name]
    assert (out / "restricted" / "crosswalk" / "CURRENT").is_file()


def test_the_key_is_in_no_file_and_no_log(drill):
    out = drill["b"]
    forms = [KEY, KEY.hex().encode()]
    holding = [p for p in out.rglob("*") if p.is_file() and any(f in p.read_bytes() for f in forms)]
    assert holding == []
    logs = (drill["killed"].stdout + drill["killed"].stderr).encode()
    assert not any(f in logs for f in forms)


def test_the_killed_runs_left_their_reason_in_each_fault(drill):
    assert set(drill["raised"]) == {*IN_PROCESS_KILLS, AFTER_COMMIT}
    assert all("fault injected" in text for text in drill["raised"].values())


def test_the_ledger_file_records_the_run(drill):
    final = drill["final"]
    assert json.loads(final.ledger_path.read_text())["run_id"] == final.run_id
