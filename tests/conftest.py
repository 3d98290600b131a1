"""One SparkSession for the whole test session: a JVM start costs seconds."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")

REPO = Path(__file__).resolve().parent.parent
# Every test warehouse shares one loaded copy of each vocabulary release (keyed by its
# fingerprint), as a platform would: loading the sample vocabulary costs a minute.
os.environ.setdefault("OMOPFLOW_VOCAB_CACHE", str(REPO / "build" / "test-vocabulary-cache"))
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def spark() -> Iterator[object]:
    from omopflow.spark import get_session

    session = get_session(master="local[2]", app_name="omopflow-tests")
    yield session
    session.stop()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is not beside this checkout")
    return SHARED_DATA
