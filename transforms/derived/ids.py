"""Ids for derived rows, from each row's natural key.

Derived rows have a natural key that is unique by construction (a person's period or era
starts on one date only), and the tables are rebuilt whole on every run, so they do not go
through the crosswalk of `omopflow.ids.IdAllocator` (which would keep every key ever seen).

- `person_scoped_ids` (the default for person-level tables): the person id in the high 31
  bits, the row's rank among that person's rows (ordered by the rest of the natural key) in
  the low 22. Same input, same ids; no collisions; all ids below 2^53 (the OHDSI R tools'
  limit); only a window per person, no global sort. It needs person ids below 2^31, as
  DESIGN.md promises, and fewer than 4,194,304 rows per person; otherwise the job fails with
  a message saying so rather than writing a wrong id.
- `small_table_ids`: 1..n in natural-key order through one global window, for tables of a
  few rows (METADATA).
- `hashed_ids`: Spark's `xxhash64` of the key masked to 53 bits; stable across unrelated
  changes but with a birthday risk (about 0.5% at 10^7 rows, even odds near 10^8).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

ID_BITS = 53
ID_MASK = (1 << ID_BITS) - 1
PERSON_BITS = 31
ROW_BITS = ID_BITS - PERSON_BITS  # 22: up to 4,194,303 rows per person and table

# ids(rows, natural_key_columns, id_column) -> rows with the id column added
IdAssigner = Callable[["DataFrame", Sequence[str], str], "DataFrame"]


def person_scoped_ids(rows: DataFrame, natural_key: Sequence[str], id_column: str) -> DataFrame:
    """person_id << 22 | rank of the row within the person, in natural-key order."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    if not natural_key or natural_key[0] != "person_id":
        raise ValueError(f"person_scoped_ids needs person_id first in the key, got {natural_key}")
    rank = F.row_number().over(Window.partitionBy("person_id").orderBy(*natural_key[1:]))
    person = F.col("person_id").cast("long")
    out_of_range = (person < 0) | (person >= 1 << PERSON_BITS) | (rank >= 1 << ROW_BITS)
    message = F.concat(
        F.lit(f"cannot make a 53-bit {id_column} for person_id "),
        person.cast("string"),
        F.lit(f": person ids must be below 2^{PERSON_BITS} and rows per person below "),
        F.lit(f"2^{ROW_BITS}"),
    )
    value = F.shiftleft(person, ROW_BITS) + rank
    return rows.withColumn(
        id_column, F.when(out_of_range, F.raise_error(message)).otherwise(value).cast("long")
    )


def small_table_ids(rows: DataFrame, natural_key: Sequence[str], id_column: str) -> DataFrame:
    """1..n in natural-key order. One global window: only for tables of a few rows."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    ordered = Window.orderBy(*natural_key)
    return rows.withColumn(id_column, F.row_number().over(ordered).cast("long"))


def hashed_ids(rows: DataFrame, natural_key: Sequence[str], id_column: str) -> DataFrame:
    """A 53-bit hash of the natural key: stable across runs, collisions possible."""
    from pyspark.sql import functions as F

    hashed = F.xxhash64(*[F.col(column) for column in natural_key]).bitwiseAND(F.lit(ID_MASK))
    return rows.withColumn(id_column, hashed.cast("long"))
