"""Small-cell suppression: counts of persons or records below a threshold are not shown.

A count of 1..threshold-1 could single out a person, so aggregates show it as "<threshold"
(the OHDSI convention, Achilles' `minCellCount`); zero is shown, as it reveals nobody.
Default 5, the threshold most data-access committees of OHDSI network studies use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pyspark.sql import Column

DEFAULT_MIN_CELL = 5


def is_small(count: int | None, min_cell: int) -> bool:
    return count is not None and 0 < count < min_cell


def shown(count: int | None, min_cell: int) -> str:
    """The text a published aggregate shows for `count`."""
    if count is None:
        return ""
    if is_small(count, min_cell):
        return f"<{min_cell}"
    return f"{count:,}"


def masked(count: Column, min_cell: int) -> Column:
    """A Spark count column with small cells replaced by null (for written aggregates)."""
    from pyspark.sql import functions as F

    return F.when((count > 0) & (count < min_cell), F.lit(None)).otherwise(count)


def check_threshold(min_cell: int) -> int:
    if min_cell < 1:
        raise ValueError(f"the small-cell threshold must be at least 1, got {min_cell}")
    return min_cell
