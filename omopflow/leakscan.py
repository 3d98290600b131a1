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
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import gzip
import json
import re
import sys
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

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
DUCKDB_MEMORY = "2GB"
INPUT_SUFFIXES = (".ndjson", ".ndjson.gz", ".json", ".json.gz")
# Folders that belong in restricted/ and must never appear in a release or the catalog.
RESTRICTED_NAMES = ("restricted", "crosswalk", "quarantine", "date_shift")

_TOKEN_SPLIT = re.compile(r"[\W_]+")
# Same rule in DuckDB (RE2): anything that is not a letter or a digit separates tokens.
_SQL_TOKEN_SPLIT = r"[^\pL\pN]+"
_REFERENCE = re.compile(r"^(?:.*/)?(?P<type>[A-Z][A-Za-z]+)/(?P<id>[^/?]+)(?:/_history/.*)?$")


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
    return " ".join(text.lower().split())


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
    if all(w.isdigit() for w in words) and sum(map(len, words)) < MIN_NUMERIC_DIGITS:
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

    def add(self, value: object, kind: str, fhir_path: str) -> None:
        needle = make_needle(value, kind, fhir_path)
        if needle is not None:
            self.by_text.setdefault(needle.text, needle)


def _dicts(value: object) -> Iterator[dict[str, Any]]:
    items = value if isinstance(value, list) else [value]
    yield from (item for item in items if isinstance(item, dict))


def _strings(value: object) -> Iterator[str]:
    items = value if isinstance(value, list) else [value]
    yield from (item for item in items if isinstance(item, str))


def _reference_needles(node: dict[str, Any], path: str, add: Callable[..., None]) -> None:
    reference = node.get("reference")
    if not isinstance(reference, str):
        return
    if "?" in reference:  # conditional: Practitioner?identifier=system|value
        add(reference.rsplit("|", 1)[-1].rsplit("=", 1)[-1], IDENTIFIER, f"{path}.reference")
        target_type = reference.split("?", 1)[0].rsplit("/", 1)[-1]
    elif reference.startswith("urn:uuid:"):
        add(reference.removeprefix("urn:uuid:"), RESOURCE_ID, f"{path}.reference")
        target_type = ""
    else:
        match = _REFERENCE.match(reference)
        target_type = match["type"] if match else ""
        if match:
            add(match["id"], RESOURCE_ID, f"{path}.reference")
    if target_type in PERSON_TYPES:
        add(node.get("display"), NAME, f"{path}.display")


def _element_needles(key: str, value: object, path: str, add: Callable[..., None]) -> None:
    """Needles held by one element, by its FHIR name and shape."""
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
    """Walk a resource (or Bundle, or any element) and add every needle it holds."""
    if isinstance(node, list):
        for item in node:
            resource_needles(item, path, add)
        return
    if not isinstance(node, dict):
        return
    resource_type = node.get("resourceType")
    if isinstance(resource_type, str):
        path = resource_type
        add(node.get("id"), RESOURCE_ID, f"{path}.id")
    _reference_needles(node, path, add)
    for key, value in node.items():
        _element_needles(key, value, f"{path}.{key}", add)
        resource_needles(value, f"{path}.{key}", add)


def _input_files(input_dir: Path) -> list[Path]:
    return sorted(
        p
        for p in input_dir.rglob("*")
        if p.is_file() and p.name.endswith(INPUT_SUFFIXES) and p.name != "manifest.json"
    )


def _input_texts(path: Path) -> Iterator[str | None]:
    """Each item's JSON text (a line, or the whole file); None for what cannot be read."""
    try:
        raw = gzip.decompress(path.read_bytes()) if path.name.endswith(".gz") else path.read_bytes()
    except (OSError, EOFError, zlib.error):
        yield None  # truncated or not gzip: staging quarantines it; nothing to search for
        return
    text = raw.decode("utf-8", errors="replace").removeprefix("\ufeff")
    if path.name.endswith((".json", ".json.gz")):
        yield text
    else:
        yield from (line for line in text.splitlines() if line.strip())


def input_needles(input_dir: Path) -> tuple[list[Needle], int]:
    """Every needle of the input folder, and how many items could not be parsed."""
    needles = _Needles()
    unreadable = 0
    for path in _input_files(input_dir):
        for text in _input_texts(path):
            try:
                item = json.loads(text) if text is not None else None
                if item is not None:
                    resource_needles(item, "", needles.add)
            except (ValueError, RecursionError):
                # Malformed or nested deeper than Python recurses: staging quarantines it.
                item = None
            if item is None:
                unreadable += 1
    return sorted(needles.by_text.values(), key=lambda n: n.text), unreadable


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
    con.execute("CREATE TABLE published (loc VARCHAR, v VARCHAR)")
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


def _match(con: duckdb.DuckDBPyConnection, needles: Sequence[Needle]) -> list[Finding]:
    import pyarrow as pa

    table = pa.table(
        {
            "text": [n.text for n in needles],
            "kind": [n.kind for n in needles],
            "fhir_path": [n.fhir_path for n in needles],
            "token": [n.token for n in needles],
        }
    )
    con.register("needle_source", table)
    # Tokens carry a value id, not the value: a file's text is one value of megabytes.
    con.execute(
        "CREATE TABLE vals AS SELECT row_number() OVER () AS vid, loc, "
        "trim(regexp_replace(lower(v), '\\s+', ' ', 'g')) AS v FROM published"
    )
    con.execute(
        "CREATE TABLE toks AS SELECT DISTINCT vid, "
        f"unnest(regexp_split_to_array(v, '{_SQL_TOKEN_SPLIT}')) AS token FROM vals"
    )
    rows = con.execute(
        """
        SELECT n.kind, n.fhir_path, vals.loc, count(DISTINCT vals.vid) AS n
        FROM toks JOIN needle_source n USING (token) JOIN vals USING (vid)
        WHERE contains(vals.v, n.text)
        GROUP BY ALL ORDER BY ALL
        """
    ).fetchall()
    return [Finding(kind, path, loc, int(n)) for kind, path, loc, n in rows]


def scan_release(
    spark: object | None,
    input_dir: Path,
    release_dir: Path,
    catalog: Path | None = None,
    secrets: Sequence[bytes] = (),
) -> LeakReport:
    """Search a release (and its catalog) for every identifier-like value of the input.

    `spark` is accepted so the validation gate can pass its session; the scan itself runs in
    DuckDB on the local Parquet files. `secrets` (the pseudonym key) are searched for too.
    """
    del spark  # see the docstring
    import duckdb

    if not input_dir.is_dir():
        raise UsageError(f"leakscan: input folder not found: {input_dir}")
    if not release_dir.is_dir():
        raise UsageError(f"leakscan: release folder not found: {release_dir}")
    needles, unreadable = input_needles(input_dir)
    needles += secret_needles(secrets)
    with duckdb.connect() as con:
        # A good neighbour on a shared machine: spill to disk rather than grow.
        con.execute(f"SET memory_limit = '{DUCKDB_MEMORY}'")
        tables = _load_string_values(con, release_dir)
        files = _load_file_texts(con, release_dir)
        problems = _restricted_folders(release_dir)
        if catalog is not None and catalog.is_file():
            problems += _load_catalog(con, catalog)
            files += 1
        findings = _match(con, needles) if needles else []
    by_kind: dict[str, int] = {}
    for needle in needles:
        by_kind[needle.kind] = by_kind.get(needle.kind, 0) + 1
    return LeakReport(
        str(input_dir),
        str(release_dir),
        dict(sorted(by_kind.items())),
        tables,
        files,
        unreadable,
        findings,
        problems,
    )


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
