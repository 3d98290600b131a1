"""Task bodies of the DAGs, without Airflow and (except the release diff) without Spark."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from omopflow import orchestration as orch
from omopflow.errors import UsageError
from omopflow.sites import SiteConfigError
from tests.bulk.server import BulkServer
from tests.fhir_fixtures import patient, write_ndjson

from .fixtures import FakeRun, bulk_site, drop_site, landed_export

KEY = "a-secret-of-at-least-16-bytes"
NOW = 2_000_000_000.0  # a fixed "now" for settle checks, well after any file's mtime


# -- settings and key ----------------------------------------------------------------------


def test_settings_default_under_home_and_sample_vocabulary(tmp_path: Path) -> None:
    settings = orch.settings_from({orch.ENV_HOME: str(tmp_path)}.get)
    assert settings.landing == tmp_path / "landing"
    assert settings.warehouse == tmp_path / "warehouse"
    assert settings.vocab_dirs == (orch.SAMPLE_VOCAB,)
    assert settings.restricted is None


def test_settings_vocabulary_may_merge_several_folders(tmp_path: Path) -> None:
    value = os.pathsep.join([str(tmp_path / "athena"), str(tmp_path / "local")])
    settings = orch.settings_from({orch.ENV_VOCAB: value}.get)
    assert settings.vocab_dirs == (tmp_path / "athena", tmp_path / "local")


def test_key_from_environment_wins_over_connection() -> None:
    key = orch.pseudonym_key({orch.ENV_KEY: KEY}, lambda: "another-secret-of-16-bytes+")
    assert bytes(key) == KEY.encode()


def test_key_from_connection_when_environment_has_none() -> None:
    assert bytes(orch.pseudonym_key({}, lambda: KEY)) == KEY.encode()


def test_no_key_anywhere_is_refused_naming_both_places() -> None:
    with pytest.raises(UsageError, match=f"{orch.ENV_KEY}.*{orch.KEY_CONNECTION}"):
        orch.pseudonym_key({}, lambda: None)


def test_short_key_from_connection_is_refused() -> None:
    with pytest.raises(UsageError, match="too short"):
        orch.pseudonym_key({}, lambda: "short")


# -- file drops ----------------------------------------------------------------------------


def _drop(folder: Path, name: str, marker: str | None = None) -> Path:
    drop = folder / name
    write_ndjson(drop / "Patient.000.ndjson", [patient("p1")])
    if marker:
        (drop / marker).write_text("{}")
    return drop


def test_settled_drop_lands_with_complete_marker_and_checksums(tmp_path: Path) -> None:
    _drop(tmp_path / "drops", "week-1")
    site = drop_site(tmp_path / "drops")
    [export] = orch.land_drops(site, tmp_path / "landing", NOW, settle_s=600)
    landed = tmp_path / "landing" / "north" / export
    assert export.endswith("-week-1")
    assert (landed / "Patient.000.ndjson").read_bytes() == (
        tmp_path / "drops" / "week-1" / "Patient.000.ndjson"
    ).read_bytes()
    record = json.loads((landed / "_COMPLETE").read_text())
    assert set(record["files"]) == {"Patient.000.ndjson"}
    assert len(record["files"]["Patient.000.ndjson"]["sha256"]) == 64


def test_drop_still_being_written_waits(tmp_path: Path) -> None:
    drop = _drop(tmp_path / "drops", "today")
    just_now = (drop / "Patient.000.ndjson").stat().st_mtime + 5
    assert orch.land_drops(drop_site(tmp_path / "drops"), tmp_path / "l", just_now, 600) == []
    assert not (tmp_path / "l" / "north" / "today").exists()


def test_drop_with_manifest_lands_at_once(tmp_path: Path) -> None:
    drop = _drop(tmp_path / "drops", "export-7", marker="manifest.json")
    just_now = (drop / "Patient.000.ndjson").stat().st_mtime + 5
    landed = orch.land_drops(drop_site(tmp_path / "drops"), tmp_path / "l", just_now, 600)
    assert len(landed) == 1
    assert (tmp_path / "l" / "north" / landed[0] / "manifest.json").is_file()


def test_same_drop_lands_once(tmp_path: Path) -> None:
    _drop(tmp_path / "drops", "week-1")
    site = drop_site(tmp_path / "drops")
    assert len(orch.land_drops(site, tmp_path / "landing", NOW, 600)) == 1
    assert orch.land_drops(site, tmp_path / "landing", NOW, 600) == []


def test_rewritten_drop_lands_again_as_a_new_export(tmp_path: Path) -> None:
    drop = _drop(tmp_path / "drops", "week-1")
    site = drop_site(tmp_path / "drops")
    [first] = orch.land_drops(site, tmp_path / "landing", NOW, 600)
    data = drop / "Patient.000.ndjson"
    write_ndjson(data, [patient("p1"), patient("p2")])
    os.utime(data, (NOW - 1000, NOW - 1000))
    [second] = orch.land_drops(site, tmp_path / "landing", NOW, 600)
    assert second != first
    assert (tmp_path / "landing" / "north" / first / "_COMPLETE").is_file()


def test_loose_files_beside_drops_are_left_alone(tmp_path: Path, caplog) -> None:
    folder = tmp_path / "drops"
    write_ndjson(folder / "Patient.000.ndjson", [patient("loose")])
    assert orch.land_drops(drop_site(folder), tmp_path / "landing", NOW, 600) == []
    assert "not inside a drop folder" in caplog.text


def test_missing_drop_folder_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="site 'north': drop folder not found"):
        orch.land_drops(drop_site(tmp_path / "nowhere"), tmp_path / "landing", NOW, 600)


# -- bulk sites ----------------------------------------------------------------------------


@pytest.fixture
def bulk_server(tmp_path: Path):
    data = tmp_path / "server"
    write_ndjson(data / "Patient.000.ndjson", [patient("p1"), patient("p2")])
    server = BulkServer(data, polls_before_done=0).start()
    yield server
    server.stop()


def test_bulk_site_lands_an_export_and_reports_it(tmp_path: Path, bulk_server) -> None:
    site = bulk_site(bulk_server.base_url)
    bulk_server.transaction_time = "2026-03-01T02:00:00Z"
    new = orch.land_site(site, tmp_path / "landing", client_options={"sleep": lambda _s: None})
    assert new == ["20260301T020000Z"]
    assert (tmp_path / "landing" / "east" / new[0] / "Patient.000.ndjson").is_file()


def test_bulk_export_without_changes_is_not_reported(tmp_path: Path, bulk_server) -> None:
    site = bulk_site(bulk_server.base_url)
    options = {"sleep": lambda _s: None}
    bulk_server.transaction_time = "2026-03-01T02:00:00Z"
    orch.land_site(site, tmp_path / "landing", client_options=options)
    bulk_server.transaction_time = "2026-03-02T02:00:00Z"  # nothing updated since the first
    assert orch.land_site(site, tmp_path / "landing", client_options=options) == []
    # It landed all the same, so the next `_since` moves on.
    assert (tmp_path / "landing" / "east" / "20260302T020000Z" / "_COMPLETE").is_file()


# -- harmonising ---------------------------------------------------------------------------


def _settings(tmp_path: Path) -> orch.Settings:
    return orch.Settings(tmp_path / "landing", tmp_path / "warehouse", (tmp_path / "vocab",))


def test_pending_exports_run_oldest_first_and_are_recorded(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    landed_export(settings.landing, "east", "20260302T000000Z")
    landed_export(settings.landing, "east", "20260301T000000Z")
    run = FakeRun()
    done = orch.harmonise_site(None, settings, "east", b"k", run)  # type: ignore[arg-type]
    assert [c.input_dir.name for c in run.configs] == ["20260301T000000Z", "20260302T000000Z"]
    assert all(c.site == "east" and c.out_dir == settings.warehouse for c in run.configs)
    assert [entry["run_id"] for entry in done] == ["run1", "run2"]
    assert set(orch.harmonised_exports(settings.warehouse, "east")) == {
        "20260301T000000Z",
        "20260302T000000Z",
    }


def test_replay_runs_nothing(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    landed_export(settings.landing, "east", "20260301T000000Z")
    orch.harmonise_site(None, settings, "east", b"k", FakeRun())  # type: ignore[arg-type]
    again = FakeRun()
    assert orch.harmonise_site(None, settings, "east", b"k", again) == []  # type: ignore[arg-type]
    assert again.configs == []


def test_failed_run_stops_the_site_and_is_retried_next_time(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    landed_export(settings.landing, "east", "20260301T000000Z")
    landed_export(settings.landing, "east", "20260302T000000Z")
    failing = FakeRun(fail_on="20260302T000000Z")
    with pytest.raises(RuntimeError, match="pipeline failed"):
        orch.harmonise_site(None, settings, "east", b"k", failing)  # type: ignore[arg-type]
    assert list(orch.harmonised_exports(settings.warehouse, "east")) == ["20260301T000000Z"]
    assert [p.name for p in orch.pending_exports(settings, "east")] == ["20260302T000000Z"]


def test_empty_export_is_recorded_without_a_run(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    landed_export(settings.landing, "east", "20260301T000000Z", lines=0)
    run = FakeRun()
    [entry] = orch.harmonise_site(None, settings, "east", b"k", run)  # type: ignore[arg-type]
    assert run.configs == [] and entry["empty"] is True


def test_export_with_only_server_errors_is_recorded_without_a_run(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    landed_export(settings.landing, "east", "20260301T000000Z", lines=0, error_lines=2)
    run = FakeRun()
    [entry] = orch.harmonise_site(None, settings, "east", b"k", run)  # type: ignore[arg-type]
    assert run.configs == [] and entry["empty"] is True


def test_half_landed_export_is_not_harmonised(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    (settings.landing / "east" / "20260301T000000Z").mkdir(parents=True)  # no _COMPLETE
    (settings.landing / "east" / ".partial-20260302T000000Z-ab12").mkdir()
    assert orch.pending_exports(settings, "east") == []


def test_corrupt_state_file_is_a_clear_error(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    state = orch.harmonised_state_path(settings.warehouse, "east")
    state.parent.mkdir(parents=True)
    state.write_text("{not json")
    with pytest.raises(UsageError, match=r"_harmonised\.json is not valid JSON"):
        orch.pending_exports(settings, "east")


def test_harmonise_uses_the_vocabulary_last_loaded(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    release = tmp_path / "athena-v6"
    (settings.warehouse).mkdir(parents=True)
    (settings.warehouse / orch.VOCABULARY_STATE).write_text(json.dumps({"folders": [str(release)]}))
    landed_export(settings.landing, "east", "20260301T000000Z")
    run = FakeRun()
    orch.harmonise_site(None, settings, "east", b"k", run)  # type: ignore[arg-type]
    assert run.configs[0].vocab_dirs == (release,)


# -- vocabulary ----------------------------------------------------------------------------


def test_vocabulary_param_must_name_a_folder() -> None:
    with pytest.raises(UsageError, match="'folder' param"):
        orch.release_folders(" ")


def test_vocabulary_folder_without_concept_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"no CONCEPT\.csv"):
        orch.check_vocabulary_folder(tmp_path)


def _release(tmp_path: Path) -> Path:
    release = tmp_path / "athena-v6"
    release.mkdir()
    (release / "CONCEPT.csv").write_text("concept_id\n")
    return release


def test_vocabulary_refresh_remaps_once_by_replaying_a_harmonised_export(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    for site_id in ("west", "east"):
        landed_export(settings.landing, site_id, "20260301T000000Z")
        landed_export(settings.landing, site_id, "20260302T000000Z")
        orch.harmonise_site(None, settings, site_id, b"k", FakeRun())  # type: ignore[arg-type]
        (settings.warehouse / "staging" / site_id / "CURRENT").write_text("run2\n")
    release = _release(tmp_path)
    run = FakeRun()
    report = orch.refresh_vocabulary(None, settings, (release,), b"k", run)  # type: ignore[arg-type]
    [config] = run.configs  # one run re-maps every site
    assert (config.site, config.input_dir.name) == ("east", "20260302T000000Z")
    assert config.vocab_dirs == (release,)
    assert Path(report["report"]).is_file()
    assert orch.active_vocabulary(settings) == (release.resolve(),)


def test_vocabulary_refresh_before_any_data_only_records_the_release(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    release = _release(tmp_path)
    run = FakeRun()
    orch.refresh_vocabulary(None, settings, (release,), b"k", run)  # type: ignore[arg-type]
    assert run.configs == []
    assert orch.active_vocabulary(settings) == (release.resolve(),)


def test_sites_file_errors_name_the_file(tmp_path: Path, monkeypatch) -> None:
    sites = tmp_path / "sites.yaml"
    sites.write_text("sites: [{id: x, name: X, kind: file_drop, folder: d}]\n")
    monkeypatch.setenv(orch.ENV_SITES, str(sites))
    with pytest.raises(SiteConfigError, match="unknown site 'y'"):
        orch.load_site("y")
