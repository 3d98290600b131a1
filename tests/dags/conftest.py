"""Airflow for the DAG tests: a throw-away AIRFLOW_HOME with a fresh SQLite database.

AIRFLOW_HOME must be set before Airflow is first imported (it reads its configuration at
import time), so it is set here, when pytest collects this folder.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DAGS = REPO / "dags"
AIRFLOW_HOME = Path(tempfile.mkdtemp(prefix="omopflow-airflow-"))

os.environ["AIRFLOW_HOME"] = str(AIRFLOW_HOME)
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(DAGS)
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
# Airflow sets the root logger to INFO; py4j then logs its shutdown into closed streams.
logging.getLogger("py4j").setLevel(logging.WARNING)


@pytest.fixture(scope="session")
def airflow_db() -> Iterator[Path]:
    """An initialised metadata database with the warehouse pool (what `airflow db migrate`
    and `airflow pools set` do for a real installation)."""
    from airflow.configuration import AIRFLOW_HOME as configured_home
    from airflow.models.pool import Pool
    from airflow.utils import db

    from omopflow.orchestration import WAREHOUSE_POOL

    if Path(configured_home) != AIRFLOW_HOME:
        pytest.skip(f"Airflow was imported earlier with AIRFLOW_HOME={configured_home}")
    db.resetdb()
    Pool.create_or_update_pool(WAREHOUSE_POOL, 1, "one omopflow run at a time", False)
    yield AIRFLOW_HOME
