"""Leakage scan: search every published file for identifier-like values of the input.

*Needles* are read from the input with plain JSON parsing, by FHIR structure, not by
guessing: resource ids (and the ids inside references and `urn:uuid:` fullUrls),
`identifier.value`, `telecom.value` (also as bare digits), HumanName parts and text,
`address.line` and `address.text`, the display of a reference to a person, the
mother's maiden name extension, and free text (`note.text`, narrative `text.div`).
The pseudonym key, when given, is a needle too (as text, hex and base64).

Every published value is then searched: each string column of each Parquet table (through
DuckDB, which reads local Parquet without starting a Spark job), every other file of the
release as text, and the DuckDB catalog's view definitions. A needle is found when its
normalised text (lower case, whitespace collapsed) is contained in a normalised value and
its longest token is one of that value's tokens, so the search is an equality join on
tokens and a needle is matched only at word boundaries: the short hex id `ab12` is not
"found" inside the pseudonym `77ab12f0...`.

Short needles are dropped (under `MIN_NEEDLE_CHARS`, or digits only and under
`MIN_NUMERIC_DIGITS`): they would match years and codes, and cannot identify anyone alone.
The report names the kind and FHIR path of each needle found and where, never its value, so
it may be shown and stored like any run report.

The input is read by worker processes in work units of about `CHUNK_BYTES` (small files
together, a large NDJSON file in byte ranges cut at line ends); each writes its unit's needles
to a Parquet file, and DuckDB keeps the first kind and path seen for each text, in unit and
sequence order, as one reader going through the files in order would. The search, DuckDB's
part, runs in one more worker. The calling process (a PySpark driver, in a run) never holds
the needles nor DuckDB's memory, so its memory does not grow with the input.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import functools
import gzip
import itertools
import json
import os
import re
import sys
import tempfile
import zlib
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import orjson

from omopflow import workers
from omopflow.errors import OmopflowError, UsageError

if TYPE_CHECKING:
    import duckdb

# Needle kinds, as the report names them.
RESOURCE_ID = "resource id"
IDENTIFIER = "identifier"
TELECOM = "telecom"
NAME = "name"
ADDRESS = "address line"
FREE_TEXT = "free text"
SECRET = "pseudonym key"

MIN_NEEDLE_CHARS = 4
MIN_NUMERIC_DIGITS = 6
MIN_PHONE_DIGITS = 7
# Longer texts (narratives) are cut at a token boundary: a verbatim copy still contains
# the start, and the needle table stays small.
MAX_NEEDLE_CHARS = 1000
PERSON_TYPES = ("Patient", "Practitioner", "RelatedPerson", "Person")
MAIDEN_NAME_EXTENSION = "patient-mothersMaidenName"
# DuckDB runs in the pipeline's driver process: a small, fixed budget (it spills to the
# scratch folder beyond it) keeps the driver's memory flat as releases grow. Measured at
# 10,000 patients: 2GB -> 1,024 MB peak, 73 s; 256MB -> 416 MB, 84 s.
DUCKDB_MEMORY = "256MB"
INPUT_SUFFIXES = (".ndjson", ".ndjson.gz", ".json", ".json.gz")
# Folders that belong in restricted/ and must never appear in a release or the catalog.
RESTRICTED_NAMES = ("restricted", "crosswalk", "quarantine", "date_shift")
# Plain NDJSON files larger than this are read in byte ranges of about this size, cut at line
# ends: both cores share one big file, and a worker holds about this much text at a time.
CHUNK_BYTES = 64 * 1024 * 1024
WORKER_NICENESS = 10  # added to the readers' nice value: below Spark, above nothing

_TOKEN_SPLIT = re.compile(r"[\W_]+")
# Same rule in DuckDB (RE2): anything that is not a letter or a digit separates tokens.
_SQL_TOKEN_SPLIT = r"[^\pL\pN]+"
_REFERENCE = re.compile(r"^(?:.*/)?(?P<type>[A-Z][A-Za-z]+)/(?P<id>[^/?]+)(?:/_history/.*)?$")
# A value is normalised once per unit: the ids in references repeat in every resource.
# Longer values (narratives) seldom repeat and would only take memory.
_MEMO_MAX_CHARS = 200
# orjson reads an integer beyond 64 bits as a float, where json keeps an int (which a telecom
# value shows as its digits). Such an integer has at least this many digits.
_LONG_INTEGER_DIGITS = 19
_DIGITS_TO_ZERO = bytes.maketrans(b"0123456789", b"0" * 10)
_SCAN_BYTES = 64 * 1024  # read size when looking for a line end


class LeakFound(OmopflowError):
    """The leakage scan found input identifiers in published files."""

    exit_code = 7


@dataclass(frozen=True)
class Needle:
    text: str  # normalised: lower case, whitespace collapsed
    kind: str
    fhir_path: str  # where it came from, e.g. "Patient.name.family"
    token: str  # its longest token: the join key


@dataclass(frozen=True)
class Finding:
    kind: str
    fhir_path: str
    location: str  # "<table>.<column>", a file relative to the release, or "catalog"
    values: int  # how many distinct published values contain such a needle


@dataclass
class LeakReport:
    input_dir: str
    release_dir: str
    needles_by_kind: dict[str, int]
    tables_scanned: int
    files_scanned: int
    unreadable_input_items: int
    findings: list[Finding] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # restricted data in the release

    @property
    def clean(self) -> bool:
        return not self.findings and not self.problems

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "clean": self.clean}

    def summary(self) -> str:
        needles = sum(self.needles_by_kind.values())
        head = (
            f"leakscan: {needles} input values searched in {self.tables_scanned} tables and "
            f"{self.files_scanned} other files of {self.release_dir}"
        )
        lines = [head]
        lines += [f"  restricted data: {p}" for p in self.problems]
        lines += [
            f"  {f.kind} ({f.fhir_path}) found in {f.location}: {f.values} values"
            for f in self.findings
        ]
        lines.append("  clean" if self.clean else "  LEAKS FOUND")
        return "\n".join(lines)


# --- needles from the input -------------------------------------------------------------


def normalise(text: str) -> str:
    """Lower case, whitespace collapsed; a lone surrogate (a JSON escape like `\\ud800`,
    which no UTF-8 file can hold) becomes `?`, as Java writes it."""
    text = " ".join(text.lower().split())
    if not text.isascii():
        text = text.encode("utf-8", "replace").decode("utf-8")
    return text


def tokens(text: str) -> list[str]:
    return [t for t in _TOKEN_SPLIT.split(text) if t]


def make_needle(value: object, kind: str, fhir_path: str) -> Needle | None:
    """A needle for `value`, or None when it is not text or too short to mean anything."""
    if not isinstance(value, str):
        return None
    text = normalise(value)
    if len(text) > MAX_NEEDLE_CHARS:
        # Cut at a token boundary so that the last token is a whole one.
        text = text[:MAX_NEEDLE_CHARS]
        cut = _TOKEN_SPLIT.split(text)[-1]
        text = text[: len(text) - len(cut)].rstrip()
    words = tokens(text)
    if len(text) < MIN_NEEDLE_CHARS or not words:
        return None
    if all(map(str.isdigit, words)) and sum(map(len, words)) < MIN_NUMERIC_DIGITS:
        return None
    if kind == RESOURCE_ID and text.isalpha():
        # An id that is one plain word ("referral", "example") names a specimen resource,
        # not a person, and would "match" every text using that word.
        return None
    return Needle(text, kind, fhir_path, max(words, key=len))


class _Needles:
    """Needles by text; the first kind and path seen for a text is kept."""

    def __init__(self) -> None:
        self.by_text: dict[str, Needle] = {}
        # (value, kind) pairs already made into a needle or refused. The same pair makes the
        # same text whatever its path, and a text seen before keeps its first needle, so
        # such a pair has nothing to add.
        self._tried: set[tuple[str, str]] = set()

    def add(self, value: object, kind: str, fhir_path: str) -> None:
        if not isinstance(value, str) or (value, kind) in self._tried:
            return
        if len(value) <= _MEMO_MAX_CHARS:
            self._tried.add((value, kind))
        needle = make_needle(value, kind, fhir_path)
        if needle is not None:
            self.by_text.setdefault(needle.text, needle)


def _dicts(value: object) -> Iterator[dict[str, Any]]:
    items = value if isinstance(value, list) else [value]
    yield from (item for item in items if isinstance(item, dict))


def _strings(value: object) -> Iterator[str]:
    items = value if isinstance(value, list) else [value]
    yield from (item for item in items if isinstance(item, str))


@functools.lru_cache(maxsize=1 << 16)
def _reference_target(reference: str) -> tuple[str | None, str, str]:
    """The needle a reference holds (or None), its kind, and the type it points to.

    Cached: the same references (a patient, an encounter) repeat in most resources."""
    if "?" in reference:  # conditional: Practitioner?identifier=system|value
        value = reference.rsplit("|", 1)[-1].rsplit("=", 1)[-1]
        return value, IDENTIFIER, reference.split("?", 1)[0].rsplit("/", 1)[-1]
    if reference.startswith("urn:uuid:"):
        return reference.removeprefix("urn:uuid:"), RESOURCE_ID, ""
    match = _REFERENCE.match(reference)
    return (match["id"], RESOURCE_ID, match["type"]) if match else (None, RESOURCE_ID, "")


def _reference_needles(node: dict[str, Any], path: str, add: Callable[..., None]) -> None:
    reference = node.get("reference")
    if type(reference) is not str:
        return
    value, kind, target_type = _reference_target(reference)
    if value is not None:
        add(value, kind, f"{path}.reference")
    if target_type in PERSON_TYPES:
        add(node.get("display"), NAME, f"{path}.display")


# The element names `_element_needles` looks at: the walk calls it for these only.
_NEEDLE_ELEMENTS = frozenset(
    ("identifier", "telecom", "address", "name", "note", "text", "fullUrl", "extension")
)


def _element_needles(key: str, value: object, path: str, add: Callable[..., None]) -> None:
    """Needles held by one element, by its FHIR name and shape (see `_NEEDLE_ELEMENTS`)."""
    if key == "identifier":
        for ident in _dicts(value):
            add(ident.get("value"), IDENTIFIER, f"{path}.value")
    elif key == "telecom":
        for contact in _dicts(value):
            add(contact.get("value"), TELECOM, f"{path}.value")
            digits = re.sub(r"\D", "", str(contact.get("value", "")))
            if len(digits) >= MIN_PHONE_DIGITS:
                add(digits, TELECOM, f"{path}.value")
    elif key == "address":
        for address in _dicts(value):
            for line in _strings(address.get("line")):
                add(line, ADDRESS, f"{path}.line")
            add(address.get("text"), ADDRESS, f"{path}.text")
    elif key == "name":  # HumanName only: a string name (Organization.name) is not personal
        for name in _dicts(value):
            for part in ("family", "given", "text"):
                for text in _strings(name.get(part)):
                    add(text, NAME, f"{path}.{part}")
    elif key == "note":
        for note in _dicts(value):
            add(note.get("text"), FREE_TEXT, f"{path}.text")
    elif key == "text" and isinstance(value, dict):
        add(value.get("div"), FREE_TEXT, f"{path}.div")
    elif key == "fullUrl" and isinstance(value, str) and value.startswith("urn:uuid:"):
        add(value.removeprefix("urn:uuid:"), RESOURCE_ID, path)
    elif key == "extension":
        for extension in _dicts(value):
            if str(extension.get("url", "")).endswith(MAIDEN_NAME_EXTENSION):
                add(extension.get("valueString"), NAME, f"{path}.valueString")


def resource_needles(node: object, path: str, add: Callable[..., None]) -> None:
    """Walk a resource (or Bundle, or any element) and add every needle it holds.

    This runs for every element of the input, so it does as little as it can per element: a
    child's path is built, and a call made, only for a dict or list to walk into (most
    elements are plain strings and numbers, which hold nothing by themselves, except a
    `fullUrl`); lists are walked in the loop of the dict that holds them."""
    if type(node) is list:
        for item in node:
            if type(item) is dict or type(item) is list:
                resource_needles(item, path, add)
        return
    if type(node) is not dict:
        return
    resource_type = node.get("resourceType")
    if type(resource_type) is str:
        path = resource_type
        add(node.get("id"), RESOURCE_ID, f"{path}.id")
    if "reference" in node:
        _reference_needles(node, path, add)
    for key, value in node.items():
        kind = type(value)
        if kind is dict:
            child = f"{path}.{key}"
            if key in _NEEDLE_ELEMENTS:
                _element_needles(key, value, child, add)
            resource_needles(value, child, add)
        elif kind is list:
            child = f"{path}.{key}"
            if key in _NEEDLE_ELEMENTS:
                _element_needles(key, value, child, add)
            for item in value:
                if type(item) is dict or type(item) is list:
                    resource_needles(item, child, add)
        elif key == "fullUrl":
            _element_needles(key, value, f"{path}.{key}", add)


def _input_files(input_dir: Path) -> list[Path]:
    return sorted(
        p
        for p in input_dir.rglob("*")
        if p.is_file() and p.name.endswith(INPUT_SUFFIXES) and p.name != "manifest.json"
    )


@dataclass(frozen=True)
class _Part:
    """A whole file, or a byte range of a plain NDJSON file that starts at a line start and
    ends just past a newline (or at the end of the file)."""

    path: Path
    start: int = 0
    end: int | None = None  # None: to the end of the file


@dataclass(frozen=True)
class _Unit:
    """One worker's share of the input: parts next to each other in reading order."""

    index: int  # its place in the reading order: files sorted, ranges in file order
    parts: tuple[_Part, ...]
    size: int  # bytes on disk, to hand out the largest units first


def _line_end(file: BinaryIO, offset: int) -> int:
    """The offset just past the first newline at or after `offset`; the file's end if none."""
    file.seek(offset)
    while block := file.read(_SCAN_BYTES):
        newline = block.find(b"\n")
        if newline >= 0:
            return offset + newline + 1
        offset += len(block)
    return offset


def _file_parts(path: Path, chunk_bytes: int) -> list[tuple[_Part, int]]:
    """A file as parts, with their sizes: byte ranges of at least `chunk_bytes` ending at line
    ends for a large NDJSON file. A compressed file cannot be entered in the middle, and a
    .json file is one document: those are one part."""
    try:
        size = path.stat().st_size
        if not path.name.endswith(".ndjson") or size <= chunk_bytes:
            return [(_Part(path), size)]
        parts = []
        with path.open("rb") as file:
            start = 0
            while start < size:
                end = min(_line_end(file, start + chunk_bytes - 1), size)
                parts.append((_Part(path, start, end), end - start))
                start = end
        return parts
    except OSError:
        return [(_Part(path), 0)]  # the worker finds it unreadable and counts it


def _work_units(files: Sequence[Path], chunk_bytes: int) -> list[_Unit]:
    """The input's parts in reading order, packed into units of about `chunk_bytes`: each
    unit costs a task and a Parquet file, and a folder of Bundles has a file per patient."""
    units: list[_Unit] = []
    parts: list[_Part] = []
    size = 0
    for part, part_size in (pair for path in files for pair in _file_parts(path, chunk_bytes)):
        if parts and size + part_size > chunk_bytes:
            units.append(_Unit(len(units), tuple(parts), size))
            parts, size = [], 0
        parts.append(part)
        size += part_size
    if parts:
        units.append(_Unit(len(units), tuple(parts), size))
    return units


def _part_bytes(part: _Part) -> bytes | None:
    """The part's bytes (decompressed); None when it cannot be read."""
    try:
        if part.path.name.endswith(".gz"):
            return gzip.decompress(part.path.read_bytes())
        with part.path.open("rb") as file:
            file.seek(part.start)
            return file.read() if part.end is None else file.read(part.end - part.start)
    except (OSError, EOFError, zlib.error):
        return None  # truncated or not gzip: staging quarantines it; nothing to search for


def _orjson_loads(text: str) -> Any:
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        # orjson refuses what json reads (NaN, lone surrogates, huge exponents): json decides,
        # so that what is readable, and what it holds, stays as it always was.
        return json.loads(text)


def _part_texts(part: _Part) -> tuple[list[str], Callable[[str], Any]] | None:
    """Each item's JSON text (a line, or the whole file) and the parser for them; None when
    the part cannot be read."""
    raw = _part_bytes(part)
    if raw is None:
        return None
    # A run of digits anywhere is rare (a narrative's seed): the part is then parsed by json.
    long_integer = b"0" * _LONG_INTEGER_DIGITS in raw.translate(_DIGITS_TO_ZERO)
    loads = json.loads if long_integer else _orjson_loads
    # A range ends just past a newline, so it decodes and splits as its share of the file would.
    text = raw.decode("utf-8", errors="replace")
    del raw
    if part.start == 0:
        text = text.removeprefix("\ufeff")
    if part.path.name.endswith((".json", ".json.gz")):
        return [text], loads
    return [line for line in text.splitlines() if line.strip()], loads


def _add_item(text: str, loads: Callable[[str], Any], needles: _Needles) -> bool:
    """Add the needles of one item; False when it cannot be read."""
    try:
        item = loads(text)
        if item is not None:
            resource_needles(item, "", needles.add)
    except (ValueError, RecursionError):
        # Malformed or nested deeper than Python recurses: staging quarantines it.
        return False
    return item is not None


def _part_needles(part: _Part, needles: _Needles) -> int:
    """Add the needles of one part; how many of its items could not be read."""
    read = _part_texts(part)
    if read is None:
        return 1
    texts, loads = read
    return sum(not _add_item(text, loads, needles) for text in texts)


def _write_needles(path: Path, unit: int, needles: Collection[Needle]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema(
        [(name, pa.string()) for name in ("text", "kind", "fhir_path", "token")]
        + [("unit", pa.int32()), ("seq", pa.int64())]
    )
    columns = {
        "text": [n.text for n in needles],
        "kind": [n.kind for n in needles],
        "fhir_path": [n.fhir_path for n in needles],
        "token": [n.token for n in needles],
        "unit": [unit] * len(needles),
        "seq": range(len(needles)),
    }
    pq.write_table(pa.table(columns, schema=schema), path)


def _unit_needles(unit: _Unit, folder: Path) -> tuple[Path | None, int]:
    """In a worker: the unit's needles, first seen first, into a Parquet file in `folder`.
    Only that file's path and how many items could not be read go back to the caller.

    No path when `folder` is gone: the scan was closed before its reading ended (a run that
    failed meanwhile), and the units not yet begun then end at once."""
    if not folder.is_dir():
        return None, 0
    needles = _Needles()
    unreadable = sum(_part_needles(part, needles) for part in unit.parts)
    path = folder / f"needles-{unit.index:06d}.parquet"
    try:
        _write_needles(path, unit.index, needles.by_text.values())
    except OSError:
        if folder.is_dir():
            raise
        return None, 0
    return path, unreadable


def _lower_priority() -> None:
    """In a worker: yield the cores to Spark. A run reads the input's needles while it
    stages and maps; the readers should take what Spark leaves, not slow it down."""
    os.nice(WORKER_NICENESS)


def _extract_needles(input_dir: Path, folder: Path, chunk_bytes: int) -> tuple[list[Path], int]:
    """One Parquet file of needles per work unit of the input, by `os.cpu_count()` worker
    processes, and how many items could not be read."""
    units = _work_units(_input_files(input_dir), chunk_bytes)
    if not units:
        return [], 0
    # Largest first, so no worker is left with a big unit at the end; the order the needles
    # were seen in is kept by each unit's index, not by when it was done.
    units.sort(key=lambda unit: unit.size, reverse=True)
    processes = min(os.cpu_count() or 1, len(units))
    with ProcessPoolExecutor(
        processes, mp_context=workers.context(), initializer=_lower_priority
    ) as pool:
        done = list(pool.map(_unit_needles, units, itertools.repeat(folder)))
    return [path for path, _ in done if path], sum(unreadable for _, unreadable in done)


def _load_input_needles(con: duckdb.DuckDBPyConnection, files: Sequence[Path]) -> None:
    """The needles of the workers' `files` into `needle_source`, one row per text: the first
    one in (unit, sequence) order, the kind and path one reader going through the files in
    order would have kept."""
    con.execute(
        "CREATE TABLE needle_source (text VARCHAR, kind VARCHAR, fhir_path VARCHAR, token VARCHAR)"
    )
    if files:
        sources = ", ".join(_sql_text(str(path)) for path in files)
        con.execute(
            "INSERT INTO needle_source SELECT text, kind, fhir_path, token "
            f"FROM read_parquet([{sources}]) "
            "QUALIFY row_number() OVER (PARTITION BY text ORDER BY unit, seq) = 1"
        )


def input_needles(input_dir: Path, *, chunk_bytes: int = CHUNK_BYTES) -> tuple[list[Needle], int]:
    """Every needle of the input folder, by text, and how many items could not be parsed.

    For tests and small inputs: the needles come back as a list in this process, which
    `scan_release` avoids (it keeps them in DuckDB)."""
    with InputNeedles(input_dir, chunk_bytes=chunk_bytes) as needles:
        needles.read()
        rows = needles.rows()
        unreadable = needles.unreadable
    return sorted((Needle(*row) for row in rows), key=lambda n: n.text), unreadable


def secret_needles(secrets: Iterable[bytes]) -> list[Needle]:
    """The key as its text (when it is text), hex and base64: the forms a log might print."""
    found: list[Needle] = []
    for secret in secrets:
        forms = [secret.hex(), base64.b64encode(secret).decode("ascii")]
        with contextlib.suppress(UnicodeDecodeError):
            forms.append(secret.decode("utf-8"))
        found += [n for f in forms if (n := make_needle(f, SECRET, "pseudonym key")) is not None]
    return found


# --- the published side ------------------------------------------------------------------


def _hidden(path: Path, root: Path) -> bool:
    """Spark's and our scratch files (`_work`, `_SUCCESS`, `.crc`) are not published."""
    return any(part.startswith((".", "_")) for part in path.relative_to(root).parts)


def _table_dirs(release: Path) -> list[Path]:
    """The release's tables built from the input. The vocabulary tables are OHDSI's public
    reference data: a patient called Brown would "match" hundreds of concept names."""
    from vocabularies.athena import VOCABULARY_TABLES

    return sorted(
        d
        for d in release.iterdir()
        if d.is_dir()
        and d.name not in VOCABULARY_TABLES
        and not _hidden(d, release)
        and any(d.rglob("*.parquet"))
    )


def _sql_text(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _load_string_values(con: duckdb.DuckDBPyConnection, release: Path) -> int:
    """Distinct values of every string column of every table into `published(loc, v)`."""
    con.execute("CREATE OR REPLACE TABLE published (loc VARCHAR, v VARCHAR)")
    tables = _table_dirs(release)
    for table in tables:
        glob = _sql_text(str(table / "**" / "*.parquet"))
        source = f"read_parquet({glob}, hive_partitioning = true, union_by_name = true)"
        columns = con.execute(f"DESCRIBE SELECT * FROM {source}").fetchall()
        for name, data_type, *_ in columns:
            if data_type != "VARCHAR":
                continue
            location = _sql_text(f"{table.name}.{name}")
            con.execute(
                f"INSERT INTO published SELECT DISTINCT {location}, {_quote(name)} "
                f"FROM {source} WHERE {_quote(name)} IS NOT NULL"
            )
    return len(tables)


def _other_files(release: Path) -> list[Path]:
    return sorted(
        p
        for p in release.rglob("*")
        if p.is_file() and not p.name.endswith(".parquet") and not _hidden(p, release)
    )


def _load_file_texts(con: duckdb.DuckDBPyConnection, release: Path) -> int:
    files = _other_files(release)
    for path in files:
        text = path.read_bytes().decode("utf-8", errors="replace")
        location = str(path.relative_to(release))
        con.execute("INSERT INTO published VALUES (?, ?)", [location, text])
    return len(files)


def _load_catalog(con: duckdb.DuckDBPyConnection, catalog: Path) -> list[str]:
    """The catalog's view definitions, to search; and any sign of restricted data."""
    import duckdb

    problems = []
    with duckdb.connect(str(catalog), read_only=True) as source:
        views = source.execute(
            "SELECT view_name, sql FROM duckdb_views() WHERE NOT internal"
        ).fetchall()
        tables = source.execute("SELECT table_name FROM duckdb_tables()").fetchall()
    for name, sql in views:
        con.execute("INSERT INTO published VALUES (?, ?)", [f"catalog view {name}", sql])
        problems += [
            f"catalog view {name} reads a {word} folder"
            for word in RESTRICTED_NAMES
            if re.search(rf"[/\\]{word}[/\\]", sql or "")
        ]
    problems += [f"catalog holds a table ({name}), not only views" for (name,) in tables]
    return problems


def _restricted_folders(release: Path) -> list[str]:
    return [
        f"{p.relative_to(release)} is a restricted folder inside the release"
        for p in sorted(release.rglob("*"))
        if p.is_dir() and p.name in RESTRICTED_NAMES
    ]


def _add_secret_needles(con: duckdb.DuckDBPyConnection, secrets: Iterable[bytes]) -> None:
    """The key's forms join the input's needles (as their own rows, even for a text the input
    also holds: each is reported under its own kind)."""
    rows = [(n.text, n.kind, n.fhir_path, n.token) for n in secret_needles(secrets)]
    if rows:
        con.executemany("INSERT INTO needle_source VALUES (?, ?, ?, ?)", rows)


def _needles_by_kind(con: duckdb.DuckDBPyConnection) -> dict[str, int]:
    rows = con.execute("SELECT kind, count(*) FROM needle_source GROUP BY kind").fetchall()
    return dict(sorted((kind, int(n)) for kind, n in rows))


def _match(con: duckdb.DuckDBPyConnection) -> list[Finding]:
    """Findings of the needles in `needle_source` among the published values."""
    # Tokens carry a value id, not the value: a file's text is one value of megabytes.
    con.execute(
        "CREATE OR REPLACE TABLE vals AS SELECT row_number() OVER () AS vid, loc, "
        "trim(regexp_replace(lower(v), '\\s+', ' ', 'g')) AS v FROM published"
    )
    con.execute(
        "CREATE OR REPLACE TABLE toks AS SELECT DISTINCT vid, "
        f"unnest(regexp_split_to_array(v, '{_SQL_TOKEN_SPLIT}')) AS token FROM vals"
    )
    # Token hits first, as their own table: joined the other way round, a file's megabytes
    # of text would be copied once per token of it (seen: out of memory at 1,000 patients).
    con.execute(
        "CREATE OR REPLACE TABLE hits AS SELECT toks.vid, n.kind, n.fhir_path, n.text "
        "FROM toks JOIN needle_source n USING (token)"
    )
    rows = con.execute(
        """
        SELECT hits.kind, hits.fhir_path, vals.loc, count(DISTINCT vals.vid) AS n
        FROM hits JOIN vals USING (vid)
        WHERE contains(vals.v, hits.text)
        GROUP BY ALL ORDER BY ALL
        """
    ).fetchall()
    return [Finding(kind, path, loc, int(n)) for kind, path, loc, n in rows]


def _connect(scratch: Path) -> duckdb.DuckDBPyConnection:
    """The scan's database in its scratch folder, within its memory budget.

    A database file, not an in-memory one: its tables (millions of needles, tokens and values
    at scale) can then leave memory, and the scan stays within DUCKDB_MEMORY, spilling to the
    scratch folder (which goes away with the scan) rather than growing."""
    import duckdb

    con = duckdb.connect(str(scratch / "scan.duckdb"))
    con.execute(f"SET memory_limit = '{DUCKDB_MEMORY}'")
    con.execute(f"SET temp_directory = {_sql_text(str(scratch / 'spill'))}")
    con.execute("SET preserve_insertion_order = false")
    return con


def _load_needles_once(
    con: duckdb.DuckDBPyConnection, files: Sequence[Path], secrets: Sequence[bytes]
) -> None:
    """The needles in `needle_source`, loaded by the first call on this database."""
    tables = "SELECT count(*) FROM duckdb_tables() WHERE table_name = 'needle_source'"
    if not con.execute(tables).fetchall()[0][0]:
        _load_input_needles(con, files)
        _add_secret_needles(con, secrets)


def _needle_rows(
    scratch: Path, files: Sequence[Path], secrets: Sequence[bytes]
) -> list[tuple[str, str, str, str]]:
    """In a worker: the needles as (text, kind, fhir_path, token)."""
    with contextlib.closing(_connect(scratch)) as con:
        _load_needles_once(con, files, secrets)
        query = "SELECT text, kind, fhir_path, token FROM needle_source"
        return [tuple(row) for row in con.execute(query).fetchall()]


@dataclass(frozen=True)
class _Search:
    """What the search of one release found, as a worker returns it."""

    by_kind: dict[str, int]
    tables: int
    files: int
    findings: list[Finding]
    problems: list[str]


def _search(
    scratch: Path,
    files: Sequence[Path],
    secrets: Sequence[bytes],
    release_dir: Path,
    catalog: Path | None,
) -> _Search:
    """In a worker: every needle found in the release (and the catalog's views)."""
    with contextlib.closing(_connect(scratch)) as con:
        _load_needles_once(con, files, secrets)
        by_kind = _needles_by_kind(con)
        tables = _load_string_values(con, release_dir)
        texts = _load_file_texts(con, release_dir)
        problems = _restricted_folders(release_dir)
        if catalog is not None and catalog.is_file():
            problems += _load_catalog(con, catalog)
            texts += 1
        findings = _match(con) if by_kind else []
    return _Search(by_kind, tables, texts, findings, problems)


class InputNeedles:
    """The needles of an input folder (and of `secrets`) in a DuckDB database of a scratch
    folder: `read` reads them, `search` looks for them in a release. Reading the input is
    most of a scan's work and needs no release, so a run reads while the release is still
    being validated and reported on (`omopflow.pipeline`). Close it, or use it in a `with`,
    to delete the scratch folder.

    DuckDB works in a worker process, never in this one: the caller is a pipeline's driver,
    whose memory then stays what the driver itself needs (with DuckDB in it, the driver's
    peak grew by DuckDB's budget at scale: docs/performance.md).
    """

    def __init__(
        self, input_dir: Path, secrets: Sequence[bytes] = (), *, chunk_bytes: int = CHUNK_BYTES
    ) -> None:
        if not input_dir.is_dir():
            raise UsageError(f"leakscan: input folder not found: {input_dir}")
        self.input_dir = input_dir
        self.secrets = list(secrets)
        self.chunk_bytes = chunk_bytes
        self.unreadable = 0
        self._files: list[Path] | None = None  # the workers' needle files, set by `read`
        self._scratch = tempfile.TemporaryDirectory(prefix="omopflow-leakscan-")

    def read(self) -> None:
        """Read the input's needles, by worker processes, into Parquet files of the scratch
        folder. The database loads them at the first search or `rows`."""
        scratch = Path(self._scratch.name)
        self._files, self.unreadable = _extract_needles(self.input_dir, scratch, self.chunk_bytes)

    def _read_files(self) -> list[Path]:
        if self._files is None:
            raise ValueError("InputNeedles searched before read")
        return self._files

    def rows(self) -> list[tuple[str, str, str, str]]:
        """The needles read, as (text, kind, fhir_path, token): for tests and small inputs."""
        scratch = Path(self._scratch.name)
        rows: list[tuple[str, str, str, str]] = workers.run(
            _needle_rows, scratch, self._read_files(), self.secrets
        )
        return rows

    def search(self, release_dir: Path, catalog: Path | None = None) -> LeakReport:
        """Every needle found in the release (and the catalog's views), by kind and place."""
        files = self._read_files()
        if not release_dir.is_dir():
            raise UsageError(f"leakscan: release folder not found: {release_dir}")
        scratch = Path(self._scratch.name)
        found: _Search = workers.run(_search, scratch, files, self.secrets, release_dir, catalog)
        return LeakReport(
            str(self.input_dir),
            str(release_dir),
            found.by_kind,
            found.tables,
            found.files,
            self.unreadable,
            found.findings,
            found.problems,
        )

    def close(self) -> None:
        self._scratch.cleanup()  # cleaning up twice is harmless

    def __enter__(self) -> InputNeedles:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def scan_release(
    spark: object | None,
    input_dir: Path,
    release_dir: Path,
    catalog: Path | None = None,
    secrets: Sequence[bytes] = (),
    *,
    chunk_bytes: int = CHUNK_BYTES,
) -> LeakReport:
    """Search a release (and its catalog) for every identifier-like value of the input.

    `spark` is accepted so the validation gate can pass its session; the scan itself runs in
    DuckDB on the local Parquet files. `secrets` (the pseudonym key) are searched for too.
    The input's needles are read, and searched for, by worker processes, not by this one.
    """
    del spark  # see the docstring
    if not release_dir.is_dir():
        raise UsageError(f"leakscan: release folder not found: {release_dir}")
    with InputNeedles(input_dir, secrets, chunk_bytes=chunk_bytes) as needles:
        needles.read()
        return needles.search(release_dir, catalog)


# --- command line ------------------------------------------------------------------------


def add_arguments(command: argparse.ArgumentParser) -> None:
    command.add_argument("--input", required=True, type=Path, help="the input folder of a run")
    command.add_argument("--out", required=True, type=Path, help="warehouse folder")
    command.add_argument(
        "--release", type=Path, help="release folder to scan (default: <out>/current)"
    )
    command.add_argument("--report", type=Path, help="also write the report as JSON here")


def command(args: argparse.Namespace) -> int:
    """`omopflow leakscan`: 0 when clean; LeakFound (exit 7) when anything leaked."""
    import os

    from omopflow.pseudonym import KEY_VARIABLE, load_key

    release = args.release or args.out / "current"
    # The key is searched for when it is set; the scan needs no key otherwise.
    secrets = [load_key(os.environ)] if os.environ.get(KEY_VARIABLE, "").strip() else []
    report = scan_release(None, args.input, release, args.out / "omop.duckdb", secrets)
    if args.report:
        args.report.parent.mkdir(parents=True, exist_ok=True)
        args.report.write_text(json.dumps(report.to_json(), indent=2, sort_keys=True) + "\n")
    print(report.summary())
    if not report.clean:
        raise LeakFound(f"{len(report.findings) + len(report.problems)} leaks in {release}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry (`python -m omopflow.leakscan`), same as `omopflow leakscan`."""
    parser = argparse.ArgumentParser(prog="omopflow leakscan", description=__doc__.splitlines()[0])
    add_arguments(parser)
    try:
        return command(parser.parse_args(argv))
    except OmopflowError as exc:
        print(f"omopflow: {exc}", file=sys.stderr)
        return exc.exit_code


if __name__ == "__main__":
    sys.exit(main())
