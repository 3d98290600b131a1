"""Pseudonyms equal Python's HMAC-SHA256; keys stay hidden; date shifts are stable and bounded."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import logging
from collections.abc import Sequence
from typing import Any

import pytest
from pyspark.sql import functions as F
from pyspark.sql.types import DateType, StringType, StructField, StructType, TimestampType

from omopflow.errors import UsageError
from omopflow.pseudonym import (
    DATE_SHIFT_LABEL,
    DEMO_KEY,
    KEY_VARIABLE,
    PLAN_REDACTION_REGEX,
    PseudonymKey,
    PseudonymKeyInvalid,
    PseudonymKeyMissing,
    date_shift_days,
    keyed_hash,
    load_key,
    pseudonym,
    shift_dates,
)

KEY = b"0123456789abcdef-test-key"
MESSAGES = ["", "a", "patient-123", "박아픔", "Zoë 🙂", "x" * 100]


def python_hmac(key: bytes, message: str) -> str:
    return hmac.new(key, message.encode("utf-8"), hashlib.sha256).hexdigest()


def python_shift(key: bytes, person: str, max_days: int) -> int:
    digest = python_hmac(key, DATE_SHIFT_LABEL + person)
    return int(digest[:15], 16) % (2 * max_days + 1) - max_days


def strings(spark: Any, values: Sequence[str | None]) -> Any:
    schema = StructType([StructField("value", StringType())])
    return spark.createDataFrame([(value,) for value in values], schema)


# --- keyed_hash and pseudonym -------------------------------------------------------------


@pytest.mark.parametrize(
    "key",
    [b"k" * 16, bytes(range(64)), bytes(range(65)), "긴 열쇠 long key ".encode() * 10],
    ids=["16-bytes", "64-bytes-one-block", "65-bytes-hashed-first", "170-bytes"],
)
def test_keyed_hash_equals_python_hmac(spark: Any, key: bytes) -> None:
    rows = strings(spark, MESSAGES).select("value", keyed_hash(F.col("value"), key).alias("h"))
    assert {row.value: row.h for row in rows.collect()} == {
        message: python_hmac(key, message) for message in MESSAGES
    }


def test_null_source_value_gives_null_hash(spark: Any) -> None:
    row = strings(spark, [None]).select(keyed_hash(F.col("value"), KEY).alias("h")).first()
    assert row is not None
    assert row.h is None


def test_numbers_are_hashed_as_their_text(spark: Any) -> None:
    row = spark.range(1).select(keyed_hash(F.lit(42), KEY).alias("h")).first()
    assert row is not None
    assert row.h == python_hmac(KEY, "42")


def test_pseudonym_is_a_prefix_that_fits_a_cdm_source_value(spark: Any) -> None:
    row = (
        strings(spark, ["patient-123"])
        .select(pseudonym(F.col("value"), KEY).alias("short"), pseudonym(F.col("value"), KEY, 64))
        .first()
    )
    assert row is not None
    assert row.short == python_hmac(KEY, "patient-123")[:32]
    assert row[1] == python_hmac(KEY, "patient-123")


@pytest.mark.parametrize("length", [0, 65])
def test_pseudonym_length_out_of_range_is_refused(length: int) -> None:
    with pytest.raises(ValueError, match="length"):
        pseudonym(F.col("value"), KEY, length)


def test_keyed_hash_refuses_a_short_key() -> None:
    with pytest.raises(ValueError, match="at least 16"):
        keyed_hash(F.col("value"), b"short")


def inner_pad_hex(key: bytes) -> str:
    return bytes(byte ^ 0x36 for byte in key.ljust(64, b"\x00")).hex()


def test_result_columns_are_named_without_the_key(spark: Any) -> None:
    value = F.col("value")
    named = strings(spark, ["a"]).select(
        keyed_hash(value, KEY), pseudonym(value, KEY), date_shift_days(value, KEY, 10)
    )
    assert named.columns == ["keyed_hash", "pseudonym", "date_shift_days"]


def test_plan_redaction_hides_the_padded_key(spark: Any) -> None:
    # Unnamed on purpose: the generated column name holds the literal too.
    wrapped = F.upper(keyed_hash(F.col("value"), KEY))
    hashed = strings(spark, ["a"]).select(wrapped)
    spark.conf.set("spark.sql.redaction.string.regex", PLAN_REDACTION_REGEX)
    try:
        plan = hashed._jdf.queryExecution().toString().lower()
    finally:
        spark.conf.unset("spark.sql.redaction.string.regex")
    assert "redacted" in plan
    assert inner_pad_hex(KEY) not in plan


# --- load_key and PseudonymKey ------------------------------------------------------------


def test_load_key_reads_raw_text_as_utf8() -> None:
    assert load_key({KEY_VARIABLE: "  열쇠-sixteen-bytes!\n"}) == "열쇠-sixteen-bytes!".encode()


def test_load_key_reads_hex_and_base64() -> None:
    secret = bytes(range(32))
    assert load_key({KEY_VARIABLE: "hex:" + secret.hex()}) == secret
    assert load_key({KEY_VARIABLE: "base64:" + base64.b64encode(secret).decode()}) == secret


@pytest.mark.parametrize("env", [{}, {KEY_VARIABLE: ""}, {KEY_VARIABLE: "  \n"}])
def test_missing_key_names_the_variable(env: dict[str, str]) -> None:
    with pytest.raises(PseudonymKeyMissing, match=KEY_VARIABLE):
        load_key(env)


def test_short_key_is_refused() -> None:
    with pytest.raises(PseudonymKeyInvalid, match="too short: 15 bytes"):
        load_key({KEY_VARIABLE: "fifteen-bytes!!"})
    with pytest.raises(PseudonymKeyInvalid, match="too short: 8 bytes"):
        load_key({KEY_VARIABLE: "hex:" + "ab" * 8})


@pytest.mark.parametrize("value", ["hex:not-hex-at-all-0123456789", "base64:***not base64***"])
def test_undecodable_key_is_refused_without_echoing_it(value: str) -> None:
    with pytest.raises(PseudonymKeyInvalid, match=KEY_VARIABLE) as refused:
        load_key({KEY_VARIABLE: value})
    assert value.split(":")[1] not in str(refused.value)


def test_key_errors_are_usage_errors_for_the_cli() -> None:
    assert issubclass(PseudonymKeyMissing, UsageError)
    assert issubclass(PseudonymKeyInvalid, UsageError)


def test_key_never_shows_itself(caplog: pytest.LogCaptureFixture) -> None:
    key = load_key({KEY_VARIABLE: "super-secret-value-123"})
    assert isinstance(key, PseudonymKey)
    with caplog.at_level(logging.INFO):
        logging.getLogger("omopflow.test").info("key %s %r", key, key)
    shown = [repr(key), str(key), f"{key}", caplog.text, repr([key])]
    assert not [text for text in shown if "secret" in text]
    assert "22 bytes" in repr(key)


def test_demo_key_is_a_valid_hidden_key() -> None:
    assert isinstance(DEMO_KEY, PseudonymKey)
    assert len(DEMO_KEY) >= 16
    assert "demo" not in repr(DEMO_KEY)


# --- date shifting ------------------------------------------------------------------------


def test_date_shift_is_the_labelled_hmac_within_bounds(spark: Any) -> None:
    people = spark.range(200).select(F.col("id").cast("string").alias("person"))
    shifts = people.select("person", date_shift_days(F.col("person"), KEY, 30).alias("days"))
    by_person = {row.person: row.days for row in shifts.collect()}
    assert by_person == {person: python_shift(KEY, person, 30) for person in by_person}
    assert min(by_person.values()) >= -30
    assert max(by_person.values()) <= 30
    assert len(set(by_person.values())) > 40  # spread over the range, not one constant


def test_date_shift_is_not_derivable_from_the_published_pseudonym(spark: Any) -> None:
    row = spark.range(1).select(date_shift_days(F.lit("p1"), KEY, 365).alias("days")).first()
    unlabelled = int(python_hmac(KEY, "p1")[:15], 16) % 731 - 365
    assert row is not None
    assert row.days == python_shift(KEY, "p1", 365)
    assert row.days != unlabelled


def test_zero_max_days_means_no_shift(spark: Any) -> None:
    row = spark.range(1).select(date_shift_days(F.lit("p1"), KEY, 0).alias("days")).first()
    assert row is not None
    assert row.days == 0


def test_negative_max_days_is_refused() -> None:
    with pytest.raises(ValueError, match="max_days"):
        date_shift_days(F.col("person"), KEY, -1)


def dated(spark: Any) -> Any:
    schema = StructType(
        [
            StructField("person", StringType()),
            StructField("shift", StringType()),
            StructField("day", DateType()),
            StructField("moment", TimestampType()),
            StructField("note", StringType()),
        ]
    )
    rows = [
        ("p1", "-3", dt.date(2020, 3, 1), dt.datetime(2020, 3, 1, 12, 30), "2020-03-01"),
        ("p2", None, dt.date(2020, 3, 1), dt.datetime(2020, 3, 1, 12, 30), "2020-03-01"),
    ]
    frame = spark.createDataFrame(rows, schema)
    return frame.withColumn("shift", F.col("shift").cast("int"))


def test_shift_dates_moves_dates_and_timestamps_by_the_same_days(spark: Any) -> None:
    shifted = shift_dates(dated(spark), ["day", "moment"], "shift")
    rows = {row.person: row for row in shifted.collect()}
    assert rows["p1"].day == dt.date(2020, 2, 27)
    assert rows["p1"].moment == dt.datetime(2020, 2, 27, 12, 30)
    assert rows["p1"].note == "2020-03-01"  # columns not named are left alone
    assert (rows["p2"].day, rows["p2"].moment) == (None, None)  # no shift, no date


def test_shift_dates_refuses_text_dates(spark: Any) -> None:
    with pytest.raises(TypeError, match="'note' is string"):
        shift_dates(dated(spark), ["day", "note"], F.col("shift"))


def test_shift_dates_refuses_unknown_columns(spark: Any) -> None:
    with pytest.raises(KeyError, match="birth_date"):
        shift_dates(dated(spark), ["birth_date"], "shift")
