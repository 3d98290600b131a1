"""Stable ids: same keys same ids, new keys never move old ones, no collisions."""

from __future__ import annotations

from omopflow.ids import IdAllocator, sequence


def _keys(spark, rows):
    return spark.createDataFrame(rows, "site string, resource_type string, source_key string")


def _ids(frame, column):
    return {(r["site"], r["source_key"]): r[column] for r in frame.collect()}


def test_sequence_numbers_rows_in_key_order_across_partitions(spark):
    frame = spark.range(0, 1000).selectExpr("cast(999 - id as string) as k").repartition(7)
    numbered = sequence(frame, ["k"], 10, "n").collect()
    ordered = sorted(numbered, key=lambda r: r["k"])
    assert [r["n"] for r in ordered] == list(range(11, 1011))


def test_same_keys_get_the_same_ids_on_a_fresh_crosswalk(spark):
    rows = [("a", "Patient", "p2"), ("a", "Patient", "p1"), ("b", "Patient", "p1")]
    first = _ids(IdAllocator.open(spark, None).assign(_keys(spark, rows), "person", "id"), "id")
    again = _ids(
        IdAllocator.open(spark, None).assign(_keys(spark, list(reversed(rows))), "person", "id"),
        "id",
    )
    assert first == again
    assert sorted(first.values()) == [1, 2, 3], "no collision across sites"


def test_new_keys_never_change_existing_ids(spark, tmp_path):
    allocator = IdAllocator.open(spark, None)
    before = _ids(allocator.assign(_keys(spark, [("a", "Patient", "m")]), "person", "id"), "id")
    allocator.write(tmp_path / "xw")
    later = IdAllocator.open(spark, tmp_path / "xw")
    rows = [("a", "Patient", "a-first-in-order"), ("a", "Patient", "m")]
    after = _ids(later.assign(_keys(spark, rows), "person", "id"), "id")
    assert after[("a", "m")] == before[("a", "m")] == 1
    assert after[("a", "a-first-in-order")] == 2


def test_lookup_finds_ids_assigned_in_this_run_and_null_for_unknown(spark):
    from pyspark.sql import functions as F

    allocator = IdAllocator.open(spark, None)
    allocator.assign(_keys(spark, [("a", "Patient", "p1")]), "person", "person_id")
    refs = spark.createDataFrame(
        [("a", "p1"), ("a", "ghost"), ("b", "p1")], "_site string, ref string"
    )
    found = allocator.lookup(refs, "person", F.col("_site"), "Patient", F.col("ref"), "person_id")
    assert {(r["_site"], r["ref"]): r["person_id"] for r in found.collect()} == {
        ("a", "p1"): 1,
        ("a", "ghost"): None,
        ("b", "p1"): None,
    }


def test_tables_number_independently(spark):
    allocator = IdAllocator.open(spark, None)
    key = _keys(spark, [("a", "Encounter", "e1")])
    visit = _ids(allocator.assign(key, "visit_occurrence", "id"), "id")
    detail = _ids(allocator.assign(key, "visit_detail", "id"), "id")
    assert visit == detail == {("a", "e1"): 1}
