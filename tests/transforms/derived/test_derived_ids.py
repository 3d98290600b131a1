"""Derived-table ids: deterministic, collision-free, below 2^53, loud when they cannot be."""

from __future__ import annotations

from typing import Any

import pytest

from transforms.derived.ids import ID_MASK, person_scoped_ids


def test_person_scoped_ids_rank_rows_within_each_person(spark: Any) -> None:
    rows = spark.createDataFrame(
        [(7, "2020-02-01"), (7, "2020-01-01"), (3, "2020-01-01")], "person_id long, start string"
    )
    result = person_scoped_ids(rows, ["person_id", "start"], "row_id")
    ids = {(r.person_id, r.start): r.row_id for r in result.collect()}
    assert ids == {
        (7, "2020-01-01"): (7 << 22) + 1,
        (7, "2020-02-01"): (7 << 22) + 2,
        (3, "2020-01-01"): (3 << 22) + 1,
    }


def test_largest_person_id_still_fits_53_bits(spark: Any) -> None:
    rows = spark.createDataFrame([((1 << 31) - 1, "x")], "person_id long, start string")
    [row] = person_scoped_ids(rows, ["person_id", "start"], "row_id").collect()
    assert 0 < row.row_id <= ID_MASK


def test_person_id_beyond_31_bits_fails_loudly(spark: Any) -> None:
    rows = spark.createDataFrame([(1 << 31, "x")], "person_id long, start string")
    with pytest.raises(Exception, match="person ids must be below 2\\^31"):
        person_scoped_ids(rows, ["person_id", "start"], "row_id").collect()


def test_key_without_person_first_is_refused(spark: Any) -> None:
    rows = spark.createDataFrame([(1, "x")], "person_id long, start string")
    with pytest.raises(ValueError, match="person_id first"):
        person_scoped_ids(rows, ["start", "person_id"], "row_id")
