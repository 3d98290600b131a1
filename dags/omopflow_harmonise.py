"""`omopflow_harmonise`: stage, map, validate and publish every newly landed export.

Starts when any site's landing Asset is updated (or by hand, to catch up). Sites run one
after another, each site's exports oldest first (omopflow.orchestration.harmonise_site);
a failing site does not stop the others, but fails the DAG run. The warehouse pool (one
slot) keeps this DAG and `omopflow_vocabulary` from running the pipeline at the same time.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from airflow.sdk import Asset, AssetAny, TriggerRule, dag, task

from omopflow.orchestration import WAREHOUSE_POOL, landing_asset_uri, sites_file
from omopflow.sites import load_sites

SITES = load_sites(sites_file())


@dag(
    dag_id="omopflow_harmonise",
    description="Harmonise newly landed exports into the OMOP warehouse",
    schedule=AssetAny(*(Asset(landing_asset_uri(site.id)) for site in SITES)) if SITES else None,
    start_date=datetime(2026, 1, 1, tzinfo=UTC),
    catchup=False,
    max_active_runs=1,
    tags=["omopflow", "harmonise"],
)
def harmonise() -> None:
    # One retry, later: the warehouse lock may be held by a run started from the CLI.
    @task(pool=WAREHOUSE_POOL, retries=1, retry_delay=timedelta(minutes=10))
    def harmonise_site(site_id: str) -> list[dict[str, Any]]:
        from omopflow import orchestration

        return orchestration.harmonise_site_task(site_id)

    previous = None
    for site in SITES:
        current = harmonise_site.override(
            task_id=f"harmonise_{site.id}", trigger_rule=TriggerRule.ALL_DONE
        )(site.id)
        if previous is not None:
            previous >> current
        previous = current


harmonise()
