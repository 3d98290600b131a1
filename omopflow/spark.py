"""The one place where Spark settings live.

Every stage takes a SparkSession as an argument; only the CLI (and the test fixture) call
`get_session`. On a cluster, `spark-submit` provides the master and these settings are
applied on top of whatever the cluster configured.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

# Settings chosen for correctness first (UTC everywhere, no silent ANSI overflows), then
# for a 2-core machine with small-to-medium exports.
SPARK_DEFAULTS: dict[str, str] = {
    "spark.sql.session.timeZone": "UTC",
    "spark.sql.ansi.enabled": "false",
    "spark.sql.shuffle.partitions": "8",
    "spark.sql.adaptive.enabled": "true",
    "spark.sql.adaptive.coalescePartitions.enabled": "true",
    "spark.sql.parquet.outputTimestampType": "TIMESTAMP_MICROS",
    "spark.sql.parquet.compression.codec": "zstd",
    "spark.sql.sources.partitionOverwriteMode": "dynamic",
    "spark.sql.autoBroadcastJoinThreshold": str(64 * 1024 * 1024),
    "spark.sql.files.maxPartitionBytes": str(64 * 1024 * 1024),
    # A cached batch is built on the heap: 10,000 (the default) typed FHIR resources with
    # their JSON ran a 4 GB driver out of memory at 10,000 patients (staging cached its typed
    # parse then; the setting stays for what is cached now, such as the extract's tables).
    "spark.sql.inMemoryColumnarStorage.batchSize": "1000",
    "spark.ui.enabled": "false",
    "spark.ui.showConsoleProgress": "false",
    "spark.driver.memory": "4g",
    "spark.sql.legacy.timeParserPolicy": "CORRECTED",
    "spark.sql.caseSensitive": "true",
    "spark.sql.jsonGenerator.ignoreNullFields": "true",
    # Parse every field of a FHIR resource whatever a query reads: a value of the wrong JSON
    # type makes the whole record corrupt, and pruning would let such a record pass in one
    # query and fail in another.
    "spark.sql.optimizer.enableJsonExpressionOptimization": "false",
    # The pseudonym key's HMAC pads are literals in query plans: keep them out of
    # explain(), the UI and logs (omopflow.pseudonym.PLAN_REDACTION_REGEX).
    "spark.sql.redaction.string.regex": "(?i)(0x|x')[0-9a-f]{128}",
    # PySpark 4 wraps each DataFrame and Column call to send its Python call site to the
    # JVM for error messages: four more py4j round trips (and a stack walk) per call, a
    # quarter of the driver's time on a small export. Errors still name the failing
    # expression, just not the Python line that built it.
    "spark.python.sql.dataFrameDebugging.enabled": "false",
}


def settings_from_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """Settings asked for by variables: $OMOPFLOW_DRIVER_MEMORY (the driver's heap) and
    $OMOPFLOW_EVENT_LOG (a folder for Spark's event log: `python -m benchmarks.eventlog`
    reads it to show where a run's time goes)."""
    settings = {}
    if environ.get("OMOPFLOW_DRIVER_MEMORY"):
        settings["spark.driver.memory"] = environ["OMOPFLOW_DRIVER_MEMORY"]
    if environ.get("OMOPFLOW_EVENT_LOG"):
        folder = Path(environ["OMOPFLOW_EVENT_LOG"]).resolve()
        folder.mkdir(parents=True, exist_ok=True)  # Spark refuses a missing folder
        settings["spark.eventLog.enabled"] = "true"
        settings["spark.eventLog.dir"] = folder.as_uri()
        settings["spark.eventLog.compress"] = "false"  # plain JSON lines: no codec to read
    return settings


def get_session(
    master: str | None = None,
    app_name: str = "omopflow",
    extra: dict[str, str] | None = None,
) -> SparkSession:
    """Return the active session or build one from SPARK_DEFAULTS.

    `master` defaults to $OMOPFLOW_SPARK_MASTER, then to `local[*]`; under spark-submit the
    master spark-submit was given is kept. See `settings_from_environment` for the others.
    """
    from pyspark.sql import SparkSession

    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    active = SparkSession.getActiveSession()
    if active is not None:
        return active
    builder = SparkSession.builder.appName(app_name)
    master = master or os.environ.get("OMOPFLOW_SPARK_MASTER")
    launched_by_spark_submit = "PYSPARK_GATEWAY_PORT" in os.environ
    if master:
        builder = builder.master(master)
    elif not launched_by_spark_submit:
        builder = builder.master("local[*]")
    settings = {**SPARK_DEFAULTS, **(extra or {}), **settings_from_environment(os.environ)}
    for key, value in settings.items():
        builder = builder.config(key, value)
    session = builder.getOrCreate()
    session.sparkContext.setLogLevel("ERROR")
    return session


# Compiling Java for a projection over a full FHIR resource schema (thousands of nested
# fields) takes seconds per query, more than the interpreted path costs on any realistic
# file; staging's typed parse and its writes run interpreted for that reason.
INTERPRETED = {
    "spark.sql.codegen.wholeStage": "false",
    "spark.sql.codegen.factoryMode": "NO_CODEGEN",
}
# Below this much Parquet to read (staged data plus the vocabulary release), a run maps,
# checks and reports interpreted too: it is hundreds of small queries, and compiling each
# one's Java costs more than it saves. A full Athena vocabulary alone is above the line. One
# `omopflow run` each with a 2.4 MB vocabulary, interpreted against compiled
# (docs/performance.md): 5 patients (2 MB staged) 135 against 157 s, 100 patients (5 MB)
# 190 against 234 s, 1,000 patients (36 MB) 290 against 276 s.
SMALL_BUILD_BYTES = 16 * 1024 * 1024


@contextmanager
def restored(spark: SparkSession, keys: Iterable[str]) -> Iterator[None]:
    """Put the settings `keys` back as they were when the enclosed block ends."""
    before = {key: spark.conf.get(key, None) for key in keys}
    try:
        yield
    finally:
        for key, old in before.items():
            if old is None:
                spark.conf.unset(key)
            else:
                spark.conf.set(key, old)


def interpret(spark: SparkSession) -> None:
    """Run the session's next queries without Java code generation."""
    for key, value in INTERPRETED.items():
        spark.conf.set(key, value)


@contextmanager
def interpreted(spark: SparkSession) -> Iterator[None]:
    """Run the enclosed queries without Java code generation, then restore the settings."""
    with restored(spark, INTERPRETED):
        interpret(spark)
        yield
