"""Spark settings asked for by environment variables (no session is started)."""

from __future__ import annotations

from omopflow.spark import settings_from_environment


def test_no_variables_change_nothing():
    assert settings_from_environment({}) == {}
    assert settings_from_environment({"OMOPFLOW_EVENT_LOG": ""}) == {}


def test_driver_memory_and_event_log_become_settings(tmp_path):
    folder = tmp_path / "events"
    settings = settings_from_environment(
        {"OMOPFLOW_DRIVER_MEMORY": "8g", "OMOPFLOW_EVENT_LOG": str(folder)}
    )
    assert settings == {
        "spark.driver.memory": "8g",
        "spark.eventLog.enabled": "true",
        "spark.eventLog.dir": folder.as_uri(),
        "spark.eventLog.compress": "false",
    }
    assert folder.is_dir(), "Spark refuses to start with a missing event-log folder"
