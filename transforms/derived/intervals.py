"""The one interval-collapsing rule behind observation periods and every era.

OHDSI's era scripts collapse a person's intervals by padding each end date with the
persistence window and counting open intervals; the same result comes from a running
maximum: sorted by start date, a span opens a new island when it starts more than
`gap_days` after the latest end date seen so far for that key. A span starting exactly
`gap_days` after that end joins the island, as in OHDSI's scripts (their start events sort
before end events on the same day).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame

ISLAND = "_island"


def collapse_spans(
    spans: DataFrame, keys: Sequence[str], gap_days: int, *aggregates: Column
) -> DataFrame:
    """Merge `spans` (keys..., start_date, end_date) per key into islands.

    Returns one row per island: the keys, `start_date` (earliest start), `end_date`
    (latest end) and the extra `aggregates` computed over the island's spans.
    Every span must have end_date >= start_date; callers normalise that first.
    """
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    if gap_days < 0:
        raise ValueError(f"gap_days must be 0 or more, got {gap_days}")
    # Ties on (start, end) cannot change the result: a tied span never opens an island
    # after its twin, so the island numbers are the same whatever order Spark picks.
    ordered = Window.partitionBy(*keys).orderBy("start_date", "end_date")
    reach = F.max("end_date").over(ordered.rowsBetween(Window.unboundedPreceding, -1))
    opens_island = reach.isNull() | (F.datediff("start_date", reach) > gap_days)
    running = ordered.rowsBetween(Window.unboundedPreceding, Window.currentRow)
    numbered = spans.withColumn(ISLAND, F.sum(opens_island.cast("int")).over(running))
    return (
        numbered.groupBy(*keys, ISLAND)
        .agg(
            F.min("start_date").alias("start_date"),
            F.max("end_date").alias("end_date"),
            *aggregates,
        )
        .drop(ISLAND)
    )
