"""`omopflow_vocabulary`: load a new Athena release, re-map everything, report the changes.

Triggered by hand with the release folder as the `folder` param (several folders joined
by `:` are merged). One pipeline run without new input re-maps every site's staged data;
the report (per table: records whose standard concept changed, added, removed) is the
task's return value and `<warehouse>/runs/<run id>.vocabulary-changes.json`. Later
harmonise runs use this release.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from airflow.sdk import Param, dag, get_current_context, task

from omopflow.orchestration import WAREHOUSE_POOL


@dag(
    dag_id="omopflow_vocabulary",
    description="Load a new OMOP vocabulary release and re-map all staged data",
    schedule=None,
    start_date=datetime(2026, 1, 1, tzinfo=UTC),
    catchup=False,
    max_active_runs=1,
    params={
        "folder": Param(
            "", type="string", description="Athena release folder (CONCEPT.csv, ...) to load"
        )
    },
    tags=["omopflow", "vocabulary"],
)
def vocabulary() -> None:
    @task(pool=WAREHOUSE_POOL)
    def refresh() -> dict[str, Any]:
        from omopflow import orchestration

        folder = str(get_current_context()["params"]["folder"])
        return orchestration.refresh_vocabulary(
            orchestration.spark_session(),
            orchestration.airflow_settings(),
            orchestration.release_folders(folder),
            orchestration.airflow_pseudonym_key(),
        )

    refresh()


vocabulary()
