"""Landing an export: the folder layout, `_COMPLETE`, atomicity, replays, `_since` state."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from pathlib import Path

import pytest

from omopflow.bulk.errors import BulkExportError
from omopflow.bulk.landing import (
    STATE_NAME,
    client_for_site,
    completed_exports,
    export_id,
    land_export,
    read_complete,
    remove_stale_partials,
)
from omopflow.sites import Site

from .server import BulkServer, sample_site

FIRST_TIME = "2024-08-06T18:12:57Z"
SECOND_TIME = "2024-08-07T09:00:00Z"


def site(types: tuple[str, ...] = ("Patient", "AllergyIntolerance")) -> Site:
    return sample_site(types)


@pytest.fixture
def timed_server(server: BulkServer) -> BulkServer:
    server.transaction_time = FIRST_TIME
    return server


def test_export_lands_complete_in_a_folder_named_by_transaction_time(
    timed_server, make_client, tmp_path: Path
):
    landed = land_export(make_client(timed_server), site(), tmp_path)

    assert landed == tmp_path / "east" / "20240806T181257Z"
    assert sorted(path.name for path in landed.iterdir() if path.is_file()) == [
        "AllergyIntolerance.000.ndjson",
        "Patient.000.ndjson",
        "_COMPLETE",
        "manifest.json",
    ]
    assert completed_exports(tmp_path / "east") == [landed]


def test_manifest_points_at_local_files_with_counts(timed_server, make_client, tmp_path: Path):
    landed = land_export(make_client(timed_server), site(), tmp_path)

    manifest = json.loads((landed / "manifest.json").read_text())
    assert manifest["transactionTime"] == FIRST_TIME
    for entry in manifest["output"]:
        assert (landed / entry["url"]).is_file()
        assert entry["source_url"].startswith(timed_server.base_url)
    assert manifest["counts"]["output"]["Patient"] == 13


def test_complete_marker_carries_checksums_of_the_files_on_disk(
    timed_server, make_client, tmp_path: Path
):
    landed = land_export(make_client(timed_server), site(), tmp_path)

    complete = read_complete(landed)
    assert complete["transactionTime"] == FIRST_TIME
    for name, facts in complete["files"].items():
        assert hashlib.sha256((landed / name).read_bytes()).hexdigest() == facts["sha256"]
    assert complete["counts"]["files"] == 2


def test_error_and_deleted_files_land_in_their_own_folders(
    timed_server, make_client, tmp_path: Path
):
    timed_server.faults.error_file = True
    timed_server.faults.deleted = ["Patient/gone-1", "Patient/gone-2"]

    landed = land_export(make_client(timed_server), site(("Patient",)), tmp_path)

    manifest = json.loads((landed / "manifest.json").read_text())
    assert [entry["url"] for entry in manifest["error"]] == ["error/OperationOutcome.000.ndjson"]
    assert [entry["url"] for entry in manifest["deleted"]] == ["deleted/Bundle.000.ndjson"]
    assert manifest["counts"]["error_lines"] == 2
    bundle = json.loads((landed / "deleted" / "Bundle.000.ndjson").read_text())
    assert [entry["request"]["url"] for entry in bundle["entry"]] == [
        "Patient/gone-1",
        "Patient/gone-2",
    ]


def test_gzipped_files_land_as_ndjson_gz(timed_server, make_client, tmp_path: Path):
    timed_server.faults.gzip = True

    landed = land_export(make_client(timed_server), site(("Patient",)), tmp_path)

    manifest = json.loads((landed / "manifest.json").read_text())
    assert [entry["url"] for entry in manifest["output"]] == ["Patient.000.ndjson.gz"]
    assert manifest["output"][0]["count"] == 13


def test_next_export_asks_since_the_last_transaction_time(
    timed_server, make_client, tmp_path: Path
):
    client = make_client(timed_server)
    land_export(client, site(), tmp_path)
    timed_server.transaction_time = SECOND_TIME

    second = land_export(client, site(), tmp_path)

    kickoffs = [path for _, path, _ in timed_server.requests if "$export" in path]
    assert "_since" not in kickoffs[0]
    assert "_since=2024-08-06T18%3A12%3A57Z" in kickoffs[1]
    assert second.name == "20240807T090000Z"
    assert len(completed_exports(tmp_path / "east")) == 2
    state = json.loads((tmp_path / "east" / STATE_NAME).read_text())
    assert state["transactionTime"] == SECOND_TIME


def test_replayed_export_lands_in_the_same_place_without_downloading_again(
    timed_server, make_client, tmp_path: Path
):
    client = make_client(timed_server)
    first = land_export(client, site(), tmp_path)
    downloads = sum(timed_server.downloads.values())

    again = land_export(client, site(), tmp_path)

    assert again == first
    assert sum(timed_server.downloads.values()) == downloads


def test_landing_releases_the_servers_files(timed_server, make_client, tmp_path: Path):
    land_export(make_client(timed_server), site(), tmp_path)

    assert timed_server.requests[-1][0] == "DELETE"
    assert timed_server.jobs == {}


def test_expired_file_restarts_the_export(timed_server, make_client, tmp_path: Path):
    timed_server.faults.expire_file = 1

    landed = land_export(make_client(timed_server), site(), tmp_path)

    assert timed_server.kickoffs == 2
    assert completed_exports(tmp_path / "east") == [landed]


def test_files_that_keep_expiring_give_up_and_leave_nothing(
    timed_server, make_client, tmp_path: Path
):
    timed_server.faults.expire_file = 10

    with pytest.raises(BulkExportError, match="expired 2 times in a row"):
        land_export(make_client(timed_server), site(), tmp_path, max_restarts=1)

    assert list((tmp_path / "east").iterdir()) == []


def test_failed_download_lands_nothing_and_leaves_the_export_pending(
    timed_server, make_client, tmp_path: Path
):
    timed_server.faults.truncate = 100  # every download is cut short

    with pytest.raises(BulkExportError, match="gave up after 3 tries"):
        land_export(make_client(timed_server, max_retries=2), site(), tmp_path)

    assert completed_exports(tmp_path / "east") == []
    state = json.loads((tmp_path / "east" / STATE_NAME).read_text())
    assert "transactionTime" not in state  # the next run asks for the same `_since`
    assert state["pending"]["status_url"].startswith(timed_server.base_url)

    timed_server.faults.truncate = 0
    landed = land_export(make_client(timed_server), site(), tmp_path)

    assert timed_server.kickoffs == 1  # the pending export was resumed
    assert completed_exports(tmp_path / "east") == [landed]


def test_truncated_download_is_retried_and_lands(timed_server, make_client, tmp_path: Path):
    timed_server.faults.truncate = 1

    landed = land_export(make_client(timed_server), site(("Patient",)), tmp_path)

    assert json.loads((landed / "manifest.json").read_text())["counts"]["output_lines"] == 13


def test_folders_without_complete_marker_are_never_listed(tmp_path: Path):
    (tmp_path / "20240101T000000Z").mkdir()  # a half-copied export
    (tmp_path / ".partial-20240102T000000Z-abcd").mkdir()
    done = tmp_path / "20240103T000000Z"
    done.mkdir()
    (done / "_COMPLETE").write_text("{}")

    assert completed_exports(tmp_path) == [done]


def test_completed_exports_of_a_site_never_landed_is_empty(tmp_path: Path):
    assert completed_exports(tmp_path / "nobody") == []


def test_file_drop_site_cannot_be_exported(make_client, server, tmp_path: Path):
    drop = Site(id="demo", name="Demo", kind="file_drop", folder=tmp_path)

    with pytest.raises(BulkExportError, match="'demo' is not a bulk site"):
        land_export(make_client(server), drop, tmp_path)


def test_corrupt_state_file_is_a_clear_error(timed_server, make_client, tmp_path: Path):
    (tmp_path / "east").mkdir()
    (tmp_path / "east" / STATE_NAME).write_text("{not json")

    with pytest.raises(BulkExportError, match=r"_state\.json is not valid JSON"):
        land_export(make_client(timed_server), site(), tmp_path)


@pytest.mark.parametrize(
    ("transaction_time", "expected"),
    [
        ("2024-08-06T18:12:57Z", "20240806T181257Z"),
        ("2024-08-06T14:12:57-04:00", "20240806T181257Z"),
        ("2024-08-06T18:12:57.25Z", "20240806T181257_250000Z"),
    ],
)
def test_export_id_is_compact_utc(transaction_time: str, expected: str):
    assert export_id(transaction_time) == expected


def test_export_ids_sort_in_time_order():
    times = ["2024-08-06T18:12:58Z", "2024-08-06T18:12:57.5Z", "2024-08-06T18:12:57Z"]
    assert sorted(export_id(one) for one in times) == [export_id(one) for one in reversed(times)]


def test_export_id_needs_a_time_zone():
    with pytest.raises(BulkExportError, match="no time zone"):
        export_id("2024-08-06T18:12:57")


def test_old_partial_folders_are_removed_and_young_ones_kept(tmp_path: Path):
    old = tmp_path / ".partial-20240101T000000Z-aaaa"
    young = tmp_path / ".partial-20240102T000000Z-bbbb"
    for folder in (old, young):
        folder.mkdir()
    two_days_ago = time.time() - 2 * 24 * 3600
    os.utime(old, (two_days_ago, two_days_ago))

    assert remove_stale_partials(tmp_path) == 1
    assert [path.name for path in tmp_path.iterdir()] == [young.name]


def test_losing_a_landing_race_keeps_the_winners_copy(timed_server, make_client, tmp_path: Path):
    client = make_client(timed_server)
    winners_copy = land_export(client, site(), tmp_path / "elsewhere")
    target = tmp_path / "east" / winners_copy.name
    original_rename = Path.rename

    def winner_lands_first(self: Path, destination: Path) -> Path:
        shutil.copytree(winners_copy, destination)  # the other landing renames just before us
        return original_rename(self, destination)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Path, "rename", winner_lands_first)
        landed = land_export(client, site(), tmp_path)

    assert landed == target
    assert (target / "_COMPLETE").read_bytes() == (winners_copy / "_COMPLETE").read_bytes()
    assert [path.name for path in (tmp_path / "east").iterdir() if path.is_dir()] == [target.name]


def test_client_for_site_uses_the_sites_url(server):
    bulk = Site(id="east", name="East", kind="bulk", base_url=server.base_url, level="system")

    with client_for_site(bulk) as client:
        result = client.export(types=["Patient"], since=None)

    assert [entry.type for entry in result.output] == ["Patient"]


def test_progress_is_logged(timed_server, make_client, tmp_path: Path, caplog):
    with caplog.at_level(logging.INFO, logger="omopflow.bulk.client"):
        land_export(make_client(timed_server), site(), tmp_path)

    assert "exporting (1/2)" in caplog.text
