"""Small DataFrame helpers shared by the pipeline's stages."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pyspark.sql import DataFrame


def union_all(frames: Sequence[DataFrame], *, allow_missing_columns: bool = False) -> DataFrame:
    """The rows of every frame (at least one), columns matched by name: one query, so that
    a count over several tables is one Spark job chain, not one per table."""
    union = frames[0]
    for frame in frames[1:]:
        union = union.unionByName(frame, allowMissingColumns=allow_missing_columns)
    return union
