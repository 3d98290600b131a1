"""Per-person date shift: one secret shift per person, applied to every date of that person."""

from __future__ import annotations

from datetime import date, datetime, timedelta

import pytest

from omopflow.dateshift import (
    UnshiftableTable,
    shift_frame,
    shift_table,
    shift_tables,
    write_shifts,
)

KEY = b"date-shift-test-key-0123456789ab"
MAX_DAYS = 30


@pytest.fixture(scope="module")
def visits(spark):
    rows = [
        (1, date(2020, 1, 10), datetime(2020, 1, 10, 8, 30), date(2020, 1, 12), "v1"),
        (1, date(2021, 6, 1), datetime(2021, 6, 1, 0, 0), date(2021, 6, 1), "v2"),
        (2, date(2020, 1, 10), datetime(2020, 1, 10, 8, 30), date(2020, 1, 12), "v3"),
        (None, date(2020, 1, 10), None, None, "orphan"),
    ]
    schema = (
        "person_id long, visit_start_date date, visit_start_datetime timestamp_ntz, "
        "visit_end_date date, visit_source_value string"
    )
    return spark.createDataFrame(rows, schema)


@pytest.fixture(scope="module")
def conditions(spark):
    rows = [(1, date(2020, 1, 11)), (2, date(2020, 1, 11))]
    return spark.createDataFrame(rows, "person_id long, condition_start_date date")


def _by_source(df):
    return {r["visit_source_value"]: r for r in df.collect()}


def _days(after: date, before: date) -> int:
    return (after - before).days


def test_every_date_of_a_person_moves_by_the_same_days_in_every_table(visits, conditions):
    shifted = shift_tables(
        {"visit_occurrence": visits, "condition_occurrence": conditions}, KEY, MAX_DAYS
    )
    v = _by_source(shifted["visit_occurrence"])
    c = {r["person_id"]: r for r in shifted["condition_occurrence"].collect()}
    shift = _days(v["v1"]["visit_start_date"], date(2020, 1, 10))
    assert _days(v["v1"]["visit_end_date"], date(2020, 1, 12)) == shift
    assert _days(v["v2"]["visit_start_date"], date(2021, 6, 1)) == shift
    assert v["v1"]["visit_start_datetime"] == datetime(2020, 1, 10, 8, 30) + (
        v["v1"]["visit_start_date"] - date(2020, 1, 10)
    )
    assert _days(c[1]["condition_start_date"], date(2020, 1, 11)) == shift


def test_shifts_are_secret_bounded_and_differ_between_people(spark):
    people = spark.createDataFrame(
        [(i, date(2020, 1, 1)) for i in range(1, 41)], "person_id long, visit_start_date date"
    )
    shifts = [
        _days(r["visit_start_date"], date(2020, 1, 1))
        for r in shift_table(people, "visit_occurrence", KEY, MAX_DAYS).collect()
    ]
    assert all(-MAX_DAYS <= s <= MAX_DAYS for s in shifts)
    assert len(set(shifts)) > 10, "a shift shared by everyone would hide nothing"
    other_key = shift_table(people, "visit_occurrence", KEY[::-1], MAX_DAYS).collect()
    assert shifts != [_days(r["visit_start_date"], date(2020, 1, 1)) for r in other_key]


def test_the_same_key_gives_the_same_shift_on_every_run(visits):
    first = shift_table(visits, "visit_occurrence", KEY, MAX_DAYS).collect()
    assert shift_table(visits, "visit_occurrence", KEY, MAX_DAYS).collect() == first


def test_a_row_without_person_gets_null_dates_so_the_gate_blocks_it(visits):
    orphan = _by_source(shift_table(visits, "visit_occurrence", KEY, MAX_DAYS))["orphan"]
    assert orphan["visit_start_date"] is None


def test_a_full_birth_date_moves_with_its_parts(spark, visits):
    person = spark.createDataFrame(
        [(1, 1980, 2, 3, datetime(1980, 2, 3, 0, 0)), (2, 1975, None, None, None)],
        "person_id long, year_of_birth int, month_of_birth int, day_of_birth int, "
        "birth_datetime timestamp_ntz",
    )
    rows = {r["person_id"]: r for r in shift_table(person, "person", KEY, MAX_DAYS).collect()}
    visit_shift = _days(
        _by_source(shift_table(visits, "visit_occurrence", KEY, MAX_DAYS))["v1"][
            "visit_start_date"
        ],
        date(2020, 1, 10),
    )
    born = date(rows[1]["year_of_birth"], rows[1]["month_of_birth"], rows[1]["day_of_birth"])
    assert _days(born, date(1980, 2, 3)) == visit_shift, "age at each visit is kept"
    assert rows[1]["birth_datetime"].date() == born
    assert (rows[2]["year_of_birth"], rows[2]["month_of_birth"]) == (1975, None)


def test_a_birth_shifted_across_a_month_or_year_boundary_keeps_every_part(spark):
    # First and last days of months and years: any shift but 0 crosses a boundary.
    births = [date(1961, 3, 1), date(1962, 2, 28), date(1963, 12, 31), date(1964, 1, 1)]
    person = spark.createDataFrame(
        [(i, b.year, b.month, b.day) for i, b in enumerate(births, start=1)],
        "person_id long, year_of_birth int, month_of_birth int, day_of_birth int",
    )
    shifts = {r["person_id"]: r["date_shift_days"] for r in shift_frame(person, KEY, 30).collect()}
    shifted = shift_table(person, "person", KEY, 30).collect()
    assert any(shifts.values())
    for row in shifted:
        born = date(row["year_of_birth"], row["month_of_birth"], row["day_of_birth"])
        assert born - timedelta(days=shifts[row["person_id"]]) == births[row["person_id"] - 1]


def test_tables_without_person_dates_are_unchanged(spark):
    source = spark.createDataFrame([("x", date(2024, 1, 1))], "name string, release_date date")
    assert shift_table(source, "cdm_source", KEY, MAX_DAYS).collect() == source.collect()


def test_an_unknown_table_with_dates_and_no_person_is_refused(spark):
    notes = spark.createDataFrame([(7, date(2024, 1, 1))], "note_id long, nlp_date date")
    with pytest.raises(UnshiftableTable, match="note_nlp has dates"):
        shift_table(notes, "note_nlp", KEY, MAX_DAYS)


def test_zero_days_means_no_shift(visits):
    assert shift_table(visits, "visit_occurrence", KEY, 0) is visits


def test_shifts_are_kept_in_restricted_by_run(spark, visits, tmp_path):
    person = spark.createDataFrame([(1,), (2,)], "person_id long")
    folder = write_shifts(person, KEY, MAX_DAYS, tmp_path / "restricted", "run-1")
    assert folder == tmp_path / "restricted" / "date_shift" / "run-1"
    kept = {r["person_id"]: r["date_shift_days"] for r in spark.read.parquet(str(folder)).collect()}
    v1 = _by_source(shift_table(visits, "visit_occurrence", KEY, MAX_DAYS))["v1"]
    assert kept[1] == _days(v1["visit_start_date"], date(2020, 1, 10))
    assert set(kept) == {1, 2}


# --- wired into a run: `RunConfig.date_shift_days` ----------------------------------------


@pytest.fixture(scope="module")
def shifted_run(spark, tmp_path_factory):
    from omopflow import pipeline
    from omopflow.cli import SAMPLE_VOCAB
    from omopflow.config import RunConfig
    from tests.fhir_fixtures import encounter, patient, write_ndjson

    root = tmp_path_factory.mktemp("shifted-run")
    people = [patient(f"p{i}", birthDate=f"{1960 + i}-03-0{i}") for i in range(1, 6)]
    write_ndjson(root / "in" / "Patient.ndjson", people)
    visits = [encounter(f"e{i}", f"p{i}") for i in range(1, 6)]  # all on 2020-01-01
    write_ndjson(root / "in" / "Encounter.ndjson", visits)
    config = RunConfig(
        root / "in", (SAMPLE_VOCAB,), root / "out", "site-s", date_shift_days=MAX_DAYS
    )
    return config, pipeline.run(spark, config, KEY)


def test_a_shifted_run_moves_birth_visits_and_periods_by_the_persons_shift(spark, shifted_run):
    config, result = shifted_run
    current = config.out_dir / "current"
    shifts = {
        r["person_id"]: r["date_shift_days"]
        for r in spark.read.parquet(str(config.restricted / "date_shift" / result.run_id)).collect()
    }
    persons = {r["person_id"]: r for r in spark.read.parquet(str(current / "person")).collect()}
    visits = spark.read.parquet(str(current / "visit_occurrence")).collect()
    periods = spark.read.parquet(str(current / "observation_period")).collect()
    assert set(shifts) == set(persons) and len(persons) == 5
    assert any(shifts.values()) and all(abs(d) <= MAX_DAYS for d in shifts.values())
    for visit in visits:
        assert _days(visit["visit_start_date"], date(2020, 1, 1)) == shifts[visit["person_id"]]
    for period in periods:
        start = period["observation_period_start_date"]
        assert _days(start, date(2020, 1, 1)) == shifts[period["person_id"]]
    births = {
        date(p["year_of_birth"], p["month_of_birth"], p["day_of_birth"])
        - timedelta(days=shifts[person_id])
        for person_id, p in persons.items()
    }
    assert births == {date(1960 + i, 3, i) for i in range(1, 6)}


def test_a_small_run_gives_its_session_back_compiling_queries(spark, shifted_run):
    # The run mapped and checked interpreted (omopflow.spark.SMALL_BUILD_BYTES); a session
    # kept for the next, larger run must not stay so.
    assert spark.conf.get("spark.sql.codegen.factoryMode") == "FALLBACK"
    assert spark.conf.get("spark.sql.codegen.wholeStage") == "true"


def test_the_shifts_stay_out_of_the_release(shifted_run):
    config, result = shifted_run
    assert result.ledger["date_shift_days"] == MAX_DAYS
    published = [p.name for p in (config.out_dir / "releases").rglob("*")]
    assert not [name for name in published if "shift" in name]
