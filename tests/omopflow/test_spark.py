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


def _codegen(spark) -> str:
    return spark.conf.get("spark.sql.codegen.factoryMode")


def test_restored_puts_back_changed_and_unset_settings(spark):
    from omopflow.spark import INTERPRETED, interpret, restored

    spark.conf.set("spark.sql.codegen.wholeStage", "true")
    spark.conf.unset("spark.sql.codegen.factoryMode")
    with restored(spark, INTERPRETED):
        interpret(spark)
        assert _codegen(spark) == "NO_CODEGEN"
        assert spark.conf.get("spark.sql.codegen.wholeStage") == "false"
    assert _codegen(spark) == "FALLBACK"  # Spark's default again
    assert spark.conf.get("spark.sql.codegen.wholeStage") == "true"


def test_only_a_small_build_runs_interpreted(spark, tmp_path):
    from omopflow.pipeline import interpret_small_build
    from omopflow.spark import INTERPRETED, SMALL_BUILD_BYTES, restored

    small, large = tmp_path / "small" / "Patient", tmp_path / "large" / "Observation"
    for folder, size in ((small, 1024), (large, SMALL_BUILD_BYTES)):
        folder.mkdir(parents=True)
        with open(folder / "part-0.parquet", "wb") as part:
            part.truncate(size)  # sparse: the size counts, not the disk it takes
    with restored(spark, INTERPRETED):
        assert not interpret_small_build(spark, [small.parent, large.parent])
        assert _codegen(spark) == "FALLBACK"
        assert interpret_small_build(spark, [small.parent, tmp_path / "no-such-site"])
        assert _codegen(spark) == "NO_CODEGEN"
