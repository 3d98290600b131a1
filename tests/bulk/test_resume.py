"""Resuming a killed landing, forgetting a pending export the server lost, two sites at once.

A real kill is a SIGKILL: the landing runs in a child interpreter that the test kills while
the server holds one of its requests (`BulkServer.hold`), so nothing of the landing's own
clean-up runs, as when a worker dies.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from omopflow.bulk.errors import ExportGoneError
from omopflow.bulk.landing import (
    JOURNAL_NAME,
    STATE_NAME,
    completed_exports,
    export_id,
    land_export,
    remove_stale_partials,
)
from omopflow.sites import Site

from .server import BulkServer, Hold, sample_site

REPO = Path(__file__).resolve().parents[2]
FIRST_TIME = "2024-08-06T18:12:57Z"
SECOND_TIME = "2024-08-07T09:00:00Z"
TYPES = ("AllergyIntolerance", "Patient")
# The server names its files `<Type>.<n>.ndjson` in type order.
FIRST_FILE, SECOND_FILE = "AllergyIntolerance.0.ndjson", "Patient.1.ndjson"

# The child: one landing, as a DAG task would run it, with no waits between polls.
LANDING_SCRIPT = """
import sys
from omopflow.bulk.client import BulkClient
from omopflow.bulk.landing import land_export
from omopflow.sites import Site

base_url, root, types = sys.argv[1], sys.argv[2], tuple(sys.argv[3].split(","))
site = Site(id="east", name="East", kind="bulk", base_url=base_url, level="group",
            group_id="sample-10", types=types)
with BulkClient(base_url, poll_cap_s=0.0) as client:
    land_export(client, site, root)
"""


def site(site_id: str = "east", types: tuple[str, ...] = TYPES) -> Site:
    return sample_site(types, site_id)


@pytest.fixture
def quick_server(bulk_data: Path) -> Iterator[BulkServer]:
    """No Retry-After wait, so the child interpreter never sleeps."""
    bulk = BulkServer(bulk_data, retry_after_s=0)
    bulk.transaction_time = FIRST_TIME
    bulk.start()
    yield bulk
    bulk.stop()


def kill_landing_at(bulk: BulkServer, hold: Hold, root: Path) -> None:
    """Run a landing in a child interpreter and SIGKILL it once it reaches `hold`."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    child = subprocess.Popen(
        [sys.executable, "-c", LANDING_SCRIPT, bulk.base_url, str(root), ",".join(TYPES)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 60
        while not hold.reached.wait(timeout=0.02):
            if child.poll() is not None or time.monotonic() > deadline:
                stderr = child.stderr.read().decode() if child.stderr else ""
                pytest.fail(f"the landing never reached the held request:\n{stderr}")
    finally:
        child.kill()
        child.wait()
        if child.stderr:
            child.stderr.close()
        hold.release.set()  # the server thread may answer the dead client now


def state_of(site_dir: Path) -> dict[str, Any]:
    result: dict[str, Any] = json.loads((site_dir / STATE_NAME).read_text())
    return result


def status_paths(bulk: BulkServer) -> set[str]:
    return {path for method, path, _ in bulk.requests if method == "GET" and "/_jobs/" in path}


def tree(folder: Path) -> dict[str, bytes]:
    """Every file of a landed export, by relative path; manifest `source_url`s left out, as
    they name the server's job."""
    files = {
        path.relative_to(folder).as_posix(): path.read_bytes()
        for path in folder.rglob("*")
        if path.is_file()
    }
    manifest = json.loads(files.pop("manifest.json"))
    for key in ("output", "error", "deleted"):
        for entry in manifest.get(key, []):
            entry.pop("source_url")
    files["manifest.json"] = json.dumps(manifest, sort_keys=True).encode()
    return files


def uninterrupted_landing(bulk: BulkServer, make_client: Any, root: Path) -> Path:
    return land_export(make_client(bulk), site(), root)


def test_landing_killed_while_polling_resumes_the_same_export(
    quick_server, make_client, tmp_path: Path
):
    hold = quick_server.hold("status")
    kill_landing_at(quick_server, hold, tmp_path)
    pending = state_of(tmp_path / "east")["pending"]
    (job_id,) = quick_server.jobs
    assert pending["status_url"] == f"{quick_server.base_url}/_jobs/{job_id}"
    assert completed_exports(tmp_path / "east") == []

    landed = land_export(make_client(quick_server), site(), tmp_path)

    assert quick_server.kickoffs == 1
    assert status_paths(quick_server) == {f"/fhir/_jobs/{job_id}"}
    assert state_of(tmp_path / "east") == {
        "transactionTime": FIRST_TIME,
        "exportId": "20240806T181257Z",
    }
    reference = uninterrupted_landing(quick_server, make_client, tmp_path / "reference")
    assert tree(landed) == tree(reference)


def test_landing_killed_while_downloading_reuses_the_files_it_finished(
    quick_server, make_client, tmp_path: Path
):
    hold = quick_server.hold(SECOND_FILE)
    kill_landing_at(quick_server, hold, tmp_path)
    site_dir = tmp_path / "east"
    partial = site_dir / state_of(site_dir)["pending"]["partial"]
    assert (partial / JOURNAL_NAME).is_file()

    landed = land_export(make_client(quick_server), site(), tmp_path)

    assert quick_server.kickoffs == 1
    assert len(status_paths(quick_server)) == 1
    assert quick_server.downloads[FIRST_FILE] == 1  # finished before the kill: reused
    assert quick_server.downloads[SECOND_FILE] == 2  # cut by the kill: fetched again
    assert not partial.exists()
    assert {path.name for path in site_dir.iterdir()} == {STATE_NAME, landed.name}
    assert JOURNAL_NAME not in tree(landed)
    reference = uninterrupted_landing(quick_server, make_client, tmp_path / "reference")
    assert tree(landed) == tree(reference)


def test_a_finished_file_changed_since_the_kill_is_downloaded_again(
    quick_server, make_client, tmp_path: Path
):
    hold = quick_server.hold(SECOND_FILE)
    kill_landing_at(quick_server, hold, tmp_path)
    partial = tmp_path / "east" / state_of(tmp_path / "east")["pending"]["partial"]
    finished = partial / "AllergyIntolerance.000.ndjson"
    content = bytearray(finished.read_bytes())
    content[10] ^= 1  # same size, other bytes: only the sha256 can tell
    finished.write_bytes(bytes(content))

    landed = land_export(make_client(quick_server), site(), tmp_path)

    assert quick_server.kickoffs == 1
    assert quick_server.downloads[FIRST_FILE] == 2
    reference = uninterrupted_landing(quick_server, make_client, tmp_path / "reference")
    assert tree(landed) == tree(reference)


def write_pending(site_dir: Path, bulk: BulkServer, status_url: str, **extra: Any) -> None:
    site_dir.mkdir(parents=True, exist_ok=True)
    pending = {
        "status_url": status_url,
        "since": None,
        "kicked_off_at": FIRST_TIME,
        "export_url": f"{bulk.base_url}/Group/sample-10/$export",
        "types": list(TYPES),
        **extra,
    }
    (site_dir / STATE_NAME).write_text(json.dumps({"pending": pending}))


@pytest.mark.parametrize("gone_with", [404, 410])
def test_pending_export_the_server_no_longer_knows_is_replaced_by_a_new_one(
    quick_server, make_client, tmp_path: Path, gone_with: int
):
    client = make_client(quick_server)
    old_url = client.kick_off("group", "sample-10", list(TYPES))
    if gone_with == 404:
        client.cancel(old_url)  # the server drops the export and forgets it
    else:
        quick_server.faults.status_gone = 1
    site_dir = tmp_path / "east"
    old_partial = site_dir / ".partial-20240806T181257Z-0ld0ld00"
    old_partial.mkdir(parents=True)
    (old_partial / "Patient.000.ndjson").write_text("{}\n")
    write_pending(site_dir, quick_server, old_url, partial=old_partial.name)

    landed = land_export(client, site(), tmp_path)

    assert quick_server.kickoffs == 2  # the old one, then the new one
    polled = [path for method, path, _ in quick_server.requests if "/_jobs/" in path]
    assert polled[0] == old_url.removeprefix(quick_server.origin)  # asked about first
    assert completed_exports(site_dir) == [landed]
    assert not old_partial.exists()
    assert state_of(site_dir) == {"transactionTime": FIRST_TIME, "exportId": landed.name}


def test_pending_export_asked_for_other_types_is_cancelled_not_resumed(
    quick_server, make_client, tmp_path: Path
):
    client = make_client(quick_server)
    old_url = client.kick_off("group", "sample-10", ["Patient"])
    write_pending(tmp_path / "east", quick_server, old_url, types=["Patient"])

    landed = land_export(client, site(), tmp_path)

    assert ("DELETE", old_url.removeprefix(quick_server.origin)) in {
        (method, path) for method, path, _ in quick_server.requests
    }
    manifest = json.loads((landed / "manifest.json").read_text())
    assert sorted(manifest["counts"]["output"]) == sorted(TYPES)


def test_partial_folder_of_the_pending_export_survives_stale_clean_up(tmp_path: Path):
    in_use = tmp_path / ".partial-20240806T181257Z-aaaa"
    abandoned = tmp_path / ".partial-20240801T000000Z-bbbb"
    for folder in (in_use, abandoned):
        folder.mkdir()
        two_days_ago = time.time() - 2 * 24 * 3600
        os.utime(folder, (two_days_ago, two_days_ago))
    pending = {"status_url": "http://x/_jobs/1", "partial": in_use.name}
    (tmp_path / STATE_NAME).write_text(json.dumps({"pending": pending}))

    assert remove_stale_partials(tmp_path) == 1
    assert in_use.is_dir() and not abandoned.exists()


def test_two_sites_land_at_once_without_mixing(bulk_data: Path, make_client, tmp_path: Path):
    servers = [BulkServer(bulk_data).start(), BulkServer(bulk_data).start()]
    servers[0].transaction_time, servers[1].transaction_time = FIRST_TIME, SECOND_TIME
    sites = [site("east", ("Patient",)), site("west", ("Condition",))]
    # Each poll waits for the other site's: both exports are in flight at the same time.
    together = threading.Barrier(2, timeout=10)
    landed: dict[str, Path] = {}
    failures: list[BaseException] = []

    def land(bulk: BulkServer, one: Site) -> None:
        try:
            client = make_client(bulk, sleep=lambda _: together.wait())
            landed[one.id] = land_export(client, one, tmp_path)
        except BaseException as exc:
            failures.append(exc)

    threads = [
        threading.Thread(target=land, args=pair) for pair in zip(servers, sites, strict=True)
    ]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
    finally:
        for bulk in servers:
            bulk.stop()

    assert failures == []
    assert landed == {
        "east": tmp_path / "east" / "20240806T181257Z",
        "west": tmp_path / "west" / "20240807T090000Z",
    }
    for one, transaction_time in (("east", FIRST_TIME), ("west", SECOND_TIME)):
        expected = {"transactionTime": transaction_time, "exportId": export_id(transaction_time)}
        assert state_of(tmp_path / one) == expected
    for one, resource_type in (("east", "Patient"), ("west", "Condition")):
        data = {name: body for name, body in tree(landed[one]).items() if "ndjson" in name}
        source = (bulk_data / f"{resource_type}.000.ndjson").read_bytes()
        assert data == {f"{resource_type}.000.ndjson": source}
        assert {path.name for path in (tmp_path / one).iterdir()} == {STATE_NAME, landed[one].name}
    assert [bulk.kickoffs for bulk in servers] == [1, 1]


def test_interrupted_wait_leaves_the_export_running_for_the_next_run(quick_server, make_client):
    def interrupt(_: float) -> None:
        raise KeyboardInterrupt

    client = make_client(quick_server, sleep=interrupt)
    quick_server.retry_after_s = 1
    status_url = client.kick_off("system", types=["Patient"])

    with pytest.raises(KeyboardInterrupt):
        client.wait(status_url)

    assert len(quick_server.jobs) == 1
    assert "DELETE" not in {method for method, _, _ in quick_server.requests}


def test_status_url_the_server_forgot_raises_export_gone(quick_server, make_client):
    client = make_client(quick_server)
    status_url = client.kick_off("system", types=["Patient"])
    client.cancel(status_url)

    with pytest.raises(ExportGoneError, match="404"):
        client.wait(status_url)

    # Nothing to cancel: only the test's own DELETE was sent.
    assert [method for method, _, _ in quick_server.requests].count("DELETE") == 1
