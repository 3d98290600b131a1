"""The Bulk Data client against the spec-following test server: kick-off, polling, faults."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from omopflow.bulk.client import retry_after_seconds
from omopflow.bulk.errors import BulkExportError, FileExpiredError

from .conftest import SleepRecorder
from .server import BulkServer

SMALL_TYPES = ["Patient", "AllergyIntolerance"]


def kickoff_requests(bulk: BulkServer) -> list[tuple[str, str, dict[str, str]]]:
    return [request for request in bulk.requests if "$export" in request[1]]


def status_requests(bulk: BulkServer) -> list[str]:
    return [path for method, path, _ in bulk.requests if method == "GET" and "/_jobs/" in path]


def test_get_kickoff_sends_the_spec_headers_and_polls_until_the_manifest(
    server, make_client, sleeps: SleepRecorder
):
    result = make_client(server).export(types=SMALL_TYPES)

    method, path, headers = kickoff_requests(server)[0]
    assert (method, path.split("?")[0]) == ("GET", "/fhir/$export")
    assert headers["Prefer"] == "respond-async"
    assert headers["Accept"] == "application/fhir+json"
    assert "_type=Patient%2CAllergyIntolerance" in path
    assert sorted(entry.type for entry in result.output) == ["AllergyIntolerance", "Patient"]
    assert result.transaction_time
    # Two "in progress" answers, each asking for Retry-After: 1.
    assert sleeps.waits == [1.0, 1.0]


def test_post_kickoff_sends_a_parameters_resource(server, make_client):
    result = make_client(server).export(types=["Patient"], method="POST")

    method, _, headers = kickoff_requests(server)[0]
    assert method == "POST"
    assert headers["Content-Type"] == "application/fhir+json"
    assert [entry.type for entry in result.output] == ["Patient"]


def test_group_level_kickoff_uses_the_group_url(server, make_client):
    make_client(server).export(level="group", group_id="sample-10", types=["Patient"])

    assert kickoff_requests(server)[0][1].startswith("/fhir/Group/sample-10/$export?")


def test_patient_level_kickoff_uses_the_patient_url(server, make_client):
    result = make_client(server).export(level="patient", types=["Patient", "Organization"])

    assert kickoff_requests(server)[0][1].startswith("/fhir/Patient/$export?")
    # Organization is outside the Patient compartment.
    assert [entry.type for entry in result.output] == ["Patient"]


def test_group_level_needs_a_group_id(server, make_client):
    with pytest.raises(ValueError, match="group_id"):
        make_client(server).export(level="group")


def test_unknown_group_is_a_clear_error(server, make_client):
    with pytest.raises(BulkExportError, match=r"404 \[not-found\]"):
        make_client(server).export(level="group", group_id="no-such-group")


def test_refused_kickoff_reports_the_operation_outcome_without_retrying(server, make_client):
    with pytest.raises(BulkExportError, match=r"400 \[invalid\] _type: not a resource type"):
        make_client(server).export(types=["not_a_type"])
    assert len(kickoff_requests(server)) == 1


def test_retry_after_seconds_on_429_is_honoured(server, make_client, sleeps: SleepRecorder):
    server.faults.status_429_seconds = 1
    server.faults.retry_after_429 = 7

    make_client(server).export(types=["Patient"])

    assert sleeps.waits[0] == 7.0


def test_retry_after_is_capped(server, make_client, sleeps: SleepRecorder):
    server.faults.status_429_seconds = 1
    server.faults.retry_after_429 = 7

    make_client(server, poll_cap_s=2.0).export(types=["Patient"])

    assert sleeps.waits[0] == 2.0


def test_retry_after_http_date_on_429_is_honoured(server, make_client, sleeps: SleepRecorder):
    server.faults.status_429_date = 1
    server.faults.retry_after_date_s = 30

    make_client(server).export(types=["Patient"])

    assert 25.0 <= sleeps.waits[0] <= 30.0


def test_503_without_retry_after_backs_off_and_recovers(server, make_client, sleeps):
    server.faults.status_503 = 2

    result = make_client(server, backoff_s=0.5).export(types=["Patient"])

    assert sleeps.waits[:2] == [0.5, 1.0]  # exponential
    assert [entry.type for entry in result.output] == ["Patient"]


def test_transient_operation_outcome_is_retried(server, make_client):
    server.faults.status_transient = 2

    result = make_client(server).export(types=["Patient"])

    assert [entry.type for entry in result.output] == ["Patient"]
    assert server.faults.status_transient == 0


def test_transient_kickoff_is_retried(server, make_client):
    server.faults.kickoff_transient = 1

    make_client(server).export(types=["Patient"])

    assert len(kickoff_requests(server)) == 2


def test_failed_job_raises_at_once_and_cancels(server, make_client):
    server.faults.job_fails = True

    with pytest.raises(BulkExportError, match=r"\[processing\] export failed: disk full"):
        make_client(server).export(types=["Patient"])

    assert len(status_requests(server)) == 1
    assert any(method == "DELETE" for method, _, _ in server.requests)


def test_retries_are_bounded(server, make_client):
    server.faults.status_503 = 100

    with pytest.raises(BulkExportError, match="gave up after 3 tries: HTTP 503"):
        make_client(server, max_retries=2).export(types=["Patient"])


def test_polling_is_bounded(bulk_data: Path, make_client):
    slow = BulkServer(bulk_data, polls_before_done=50).start()
    try:
        with pytest.raises(BulkExportError, match="not done after 3 polls"):
            make_client(slow, max_polls=3).export(types=["Patient"])
    finally:
        slow.stop()


def test_paged_manifest_is_followed_through_next_links(bulk_data: Path, make_client):
    paged = BulkServer(bulk_data, page_size=1).start()
    try:
        result = make_client(paged).export(types=["Patient", "AllergyIntolerance", "Device"])
    finally:
        paged.stop()

    assert sorted(entry.type for entry in result.output) == [
        "AllergyIntolerance",
        "Device",
        "Patient",
    ]
    assert len(result.manifests) == 3
    assert any("page=3" in path for path in status_requests(paged))


def test_error_and_deleted_lists_are_read(server, make_client):
    server.faults.error_file = True
    server.faults.deleted = ["Patient/gone-1"]

    result = make_client(server).export(types=["Patient"])

    assert [entry.type for entry in result.error] == ["OperationOutcome"]
    assert [entry.type for entry in result.deleted] == ["Bundle"]


def test_cancel_deletes_the_running_export(server, make_client):
    client = make_client(server)
    status_url = client.kick_off(types=["Patient"])

    client.cancel(status_url)

    assert server.jobs == {}
    with pytest.raises(BulkExportError, match="404"):
        client._wait_for_manifest(status_url)


def write_ndjson(folder: Path, name: str, resources: list[dict]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    lines = "".join(json.dumps(resource) + "\n" for resource in resources)
    (folder / name).write_text(lines, encoding="utf-8")


@pytest.fixture
def dated_server(tmp_path: Path):
    """Three patients updated at known times (one without meta.lastUpdated), one Condition."""
    data = tmp_path / "data"
    write_ndjson(
        data,
        "Patient.000.ndjson",
        [
            {
                "resourceType": "Patient",
                "id": "old",
                "meta": {"lastUpdated": "2024-01-01T00:00:00Z"},
            },
            {
                "resourceType": "Patient",
                "id": "new",
                "meta": {"lastUpdated": "2024-06-01T00:00:00Z"},
            },
            {"resourceType": "Patient", "id": "undated"},
        ],
    )
    write_ndjson(data, "Condition.000.ndjson", [{"resourceType": "Condition", "id": "c1"}])
    bulk = BulkServer(data, default_last_updated="2024-08-06T00:00:00Z").start()
    yield bulk
    bulk.stop()


def test_since_keeps_only_resources_updated_after_it(dated_server, make_client):
    result = make_client(dated_server).export(types=["Patient"], since="2024-03-01T00:00:00Z")

    assert [(entry.type, entry.count) for entry in result.output] == [("Patient", 2)]
    assert "_since=2024-03-01T00%3A00%3A00Z" in kickoff_requests(dated_server)[0][1]


def test_without_type_every_type_is_exported(dated_server, make_client):
    result = make_client(dated_server).export()

    assert sorted(entry.type for entry in result.output) == ["Condition", "Patient"]


def test_download_retries_a_truncated_body(server, make_client, tmp_path: Path):
    client = make_client(server)
    result = client.export(types=["Patient"])
    server.faults.truncate = 1

    saved = client.download(result.output[0].url, tmp_path / "Patient.000.ndjson", False)

    assert saved.lines == 13
    assert saved.bytes == saved.path.stat().st_size
    assert server.downloads[result.output[0].url.rsplit("/", 1)[1]] == 2


def test_gzip_download_is_kept_compressed_and_counted(server, make_client, tmp_path: Path):
    server.faults.gzip = True
    client = make_client(server)
    result = client.export(types=["Patient"])

    saved = client.download(result.output[0].url, tmp_path / "Patient.000.ndjson", False)

    assert saved.gzipped
    assert saved.path.name == "Patient.000.ndjson.gz"
    assert saved.lines == 13


def test_expired_file_raises_file_expired(server, make_client, tmp_path: Path):
    client = make_client(server)
    result = client.export(types=["Patient"])
    server.faults.expire_file = 1

    with pytest.raises(FileExpiredError, match="410"):
        client.download(result.output[0].url, tmp_path / "x.ndjson", False)


def test_token_is_never_sent_to_another_host(server, make_client, tmp_path: Path):
    client = make_client(server)

    with pytest.raises(BulkExportError, match="needs the access token but is not on"):
        client.download("https://elsewhere.example/f.ndjson", tmp_path / "f.ndjson", True)


def test_retry_after_delta_seconds():
    assert retry_after_seconds("120") == 120.0


def test_retry_after_http_date():
    now = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
    assert retry_after_seconds("Thu, 01 Jan 2026 12:01:30 GMT", now) == 90.0


def test_retry_after_in_the_past_means_now():
    now = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
    assert retry_after_seconds("Thu, 01 Jan 2026 11:00:00 GMT", now) == 0.0


def test_unreadable_retry_after_is_ignored():
    assert retry_after_seconds("soon") is None
