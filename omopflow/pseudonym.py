"""Pseudonymisation: keyed hashes of source identifiers and per-person date shifts.

Source ids (FHIR ids, MRNs) reach the warehouse only as HMAC-SHA256 pseudonyms, computed
with Spark built-ins (no UDF): HMAC(K, m) = H((K0 xor opad) || H((K0 xor ipad) || m)),
where K0 is the key zero-padded to SHA-256's 64-byte block (hashed first if longer). The two
padded keys are computed once in Python and enter the plan as binary literals.

The key comes from $OMOPFLOW_PSEUDONYM_KEY (see `load_key`) and is never printed:
`PseudonymKey` hides itself in repr and str. Spark prints literals in query plans
(`explain`, the UI, some error messages) and in the names it makes up for unnamed
expressions. So every Column returned here is named (`keyed_hash`, `pseudonym`,
`date_shift_days`): wrap one in another expression only with an `.alias`. The padded
keys are 64-byte literals that `PLAN_REDACTION_REGEX` matches; set
`spark.sql.redaction.string.regex` to it wherever plans may be shown.

Date shifting moves all dates of one person by the same secret number of days, so
intervals between a person's events survive while calendar dates do not. The shift is an
HMAC of the person key under a separate label, so it cannot be computed from the person's
published pseudonym.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

from omopflow.errors import UsageError

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame

KEY_VARIABLE = "OMOPFLOW_PSEUDONYM_KEY"
MIN_KEY_BYTES = 16
HEX_PREFIX = "hex:"
BASE64_PREFIX = "base64:"

SHA256_BLOCK_BYTES = 64
SHA256_HEX_CHARS = 64
INNER_PAD = 0x36
OUTER_PAD = 0x5C
# CDM *_source_value columns are varchar(50); 32 hex chars keep 128 bits.
DEFAULT_PSEUDONYM_CHARS = 32
# Messages for the date shift are labelled so they never equal a pseudonym's message.
DATE_SHIFT_LABEL = "omopflow-date-shift\x00"
# 15 hex chars = 60 bits: fits a signed 64-bit integer; the modulo bias is negligible.
DATE_SHIFT_HEX_CHARS = 15

# Matches the 64-byte binary literals (the padded keys) as Spark prints them in plans
# (0x...) and in generated column names (X'...').
PLAN_REDACTION_REGEX = "(?i)(0x|x')[0-9a-f]{128}"


class PseudonymKey(bytes):
    """The key's bytes, usable wherever bytes are, that never show themselves when printed."""

    def __repr__(self) -> str:
        return f"PseudonymKey(<hidden, {len(self)} bytes>)"

    def __str__(self) -> str:
        return repr(self)


# For `omopflow demo` on the shipped synthetic sample only: it is public, so pseudonyms
# made with it are not secret. Real runs must set OMOPFLOW_PSEUDONYM_KEY.
DEMO_KEY = PseudonymKey(b"omopflow-demo-key:public,not-secret,synthetic-data-only")


class PseudonymKeyMissing(UsageError):
    """$OMOPFLOW_PSEUDONYM_KEY is not set (or empty)."""


class PseudonymKeyInvalid(UsageError):
    """$OMOPFLOW_PSEUDONYM_KEY cannot be decoded or is too short."""


def load_key(env: Mapping[str, str] = os.environ) -> PseudonymKey:
    """Read the key from $OMOPFLOW_PSEUDONYM_KEY.

    The value is `hex:<hex digits>`, `base64:<standard base64>`, or else the raw text
    itself (its UTF-8 bytes); surrounding whitespace is ignored. At least 16 bytes
    (128 bits) after decoding. Errors name the variable, never the value.
    """
    text = env.get(KEY_VARIABLE, "").strip()
    if not text:
        raise PseudonymKeyMissing(
            f"{KEY_VARIABLE} is not set: pseudonymisation needs a secret key"
            f" (at least {MIN_KEY_BYTES} bytes; `omopflow demo` uses a public demo key)"
        )
    key = PseudonymKey(_decode_key(text))
    _check_length(key)
    return key


def _decode_key(text: str) -> bytes:
    try:
        if text.startswith(HEX_PREFIX):
            return bytes.fromhex(text.removeprefix(HEX_PREFIX))
        if text.startswith(BASE64_PREFIX):
            return base64.b64decode(text.removeprefix(BASE64_PREFIX), validate=True)
    except (ValueError, binascii.Error):
        kind = "hex" if text.startswith(HEX_PREFIX) else "base64"
        raise PseudonymKeyInvalid(f"{KEY_VARIABLE} is not valid {kind}") from None
    return text.encode("utf-8")


def _check_length(key: bytes) -> None:
    if len(key) < MIN_KEY_BYTES:
        raise PseudonymKeyInvalid(
            f"{KEY_VARIABLE} is too short: {len(key)} bytes, at least {MIN_KEY_BYTES} needed"
        )


def hmac_pads(key: bytes) -> tuple[bytes, bytes]:
    """(K0 xor ipad, K0 xor opad) for HMAC-SHA256 (RFC 2104); refuses keys under 16 bytes."""
    if len(key) < MIN_KEY_BYTES:
        raise ValueError(f"pseudonym key has {len(key)} bytes, at least {MIN_KEY_BYTES} needed")
    if len(key) > SHA256_BLOCK_BYTES:
        key = hashlib.sha256(key).digest()
    block = key.ljust(SHA256_BLOCK_BYTES, b"\x00")
    inner = bytes(byte ^ INNER_PAD for byte in block)
    outer = bytes(byte ^ OUTER_PAD for byte in block)
    return inner, outer


def keyed_hash(col: Column, key: bytes) -> Column:
    """HMAC-SHA256 of the column's UTF-8 text as 64 lowercase hex chars; null stays null."""
    from pyspark.sql import functions as F

    inner_pad, outer_pad = hmac_pads(key)
    message = col.cast("string").cast("binary")
    inner = F.unhex(F.sha2(F.concat(F.lit(inner_pad), message), 256))
    return F.sha2(F.concat(F.lit(outer_pad), inner), 256).alias("keyed_hash")


def pseudonym(col: Column, key: bytes, length: int = DEFAULT_PSEUDONYM_CHARS) -> Column:
    """The first `length` hex chars of `keyed_hash`: a source value that fits varchar(50)."""
    from pyspark.sql import functions as F

    if not 1 <= length <= SHA256_HEX_CHARS:
        raise ValueError(f"pseudonym length must be 1..{SHA256_HEX_CHARS}, got {length}")
    return F.substring(keyed_hash(col, key), 1, length).alias("pseudonym")


def date_shift_days(person_key_col: Column, key: bytes, max_days: int) -> Column:
    """A secret, stable shift in [-max_days, max_days] days per person (int; null key -> null)."""
    from pyspark.sql import functions as F

    if max_days < 0:
        raise ValueError(f"max_days must be 0 or more, got {max_days}")
    labelled = F.concat(F.lit(DATE_SHIFT_LABEL), person_key_col.cast("string"))
    prefix = F.substring(keyed_hash(labelled, key), 1, DATE_SHIFT_HEX_CHARS)
    number = F.conv(prefix, 16, 10).cast("long")
    shift = F.pmod(number, F.lit(2 * max_days + 1)) - max_days
    return shift.cast("int").alias("date_shift_days")


def shift_dates(df: DataFrame, columns: Iterable[str], shift_col: Column | str) -> DataFrame:
    """Move each named date or timestamp column by `shift_col` days (a null shift gives null).

    Raises KeyError for a column that is not in `df` and TypeError for one that is neither
    a date nor a timestamp, so a date kept as text is never published unshifted by mistake.
    """
    from pyspark.sql import functions as F
    from pyspark.sql.types import DateType, TimestampNTZType, TimestampType

    shift = F.col(shift_col) if isinstance(shift_col, str) else shift_col
    types = dict(df.dtypes)
    for name in columns:
        if name not in types:
            raise KeyError(f"shift_dates: no column {name!r}")
        data_type = df.schema[name].dataType
        if isinstance(data_type, DateType):
            df = df.withColumn(name, F.date_add(F.col(name), shift))
        elif isinstance(data_type, TimestampType | TimestampNTZType):
            df = df.withColumn(name, F.timestamp_add("DAY", shift, F.col(name)))
        else:
            raise TypeError(f"shift_dates: column {name!r} is {types[name]}, not a date")
    return df
