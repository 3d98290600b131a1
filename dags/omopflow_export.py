"""One export DAG per site in the sites file: land what is new, then announce it.

`omopflow_export_<site>` runs on the site's schedule. `land` pulls a bulk site's `$export`
or picks up a file-drop site's complete drops (omopflow.orchestration.land_site);
`announce` updates the site's landing Asset only when an export with data landed, which is
what starts `omopflow_harmonise`. Wiring only: the work is in omopflow.orchestration.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from airflow.sdk import Asset, dag, task

from omopflow.orchestration import landing_asset_uri, sites_file
from omopflow.sites import Site, load_sites

START = datetime(2026, 1, 1, tzinfo=UTC)


def export_dag(site: Site) -> None:
    landing = Asset(landing_asset_uri(site.id))

    @dag(
        dag_id=f"omopflow_export_{site.id}",
        description=f"Land new data of {site.name} ({site.kind})",
        schedule=site.schedule,
        start_date=START,
        catchup=False,
        max_active_runs=1,
        tags=["omopflow", "export", site.id],
    )
    def export() -> None:
        # A server that is down now may answer in a few minutes.
        @task(retries=2, retry_delay=timedelta(minutes=5))
        def land() -> list[str]:
            from omopflow import orchestration

            settings = orchestration.airflow_settings()
            return orchestration.land_site(orchestration.load_site(site.id), settings.landing)

        @task(outlets=[landing])
        def announce(new_exports: list[str]) -> list[str]:
            from airflow.sdk.exceptions import AirflowSkipException

            if not new_exports:
                # A skipped task updates no Asset: harmonise is not started for nothing.
                raise AirflowSkipException("nothing new landed")
            return new_exports

        announce(land())  # type: ignore[arg-type]  # an XComArg, the list at run time

    export()


for configured_site in load_sites(sites_file()):
    export_dag(configured_site)
