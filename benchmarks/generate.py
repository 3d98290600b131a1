"""Scale a small FHIR export up to N patients, written as one Bulk Data export per site.

    python -m benchmarks.generate --input DIR --patients N --out DIR [--gzip] [--sites K] [--seed S]

How a clone is made (benchmarks/README.md says why):
- Clone c copies source patient c mod P (source patients ordered by id) with everything in the
  patient's compartment, i.e. every resource that refers to the patient. Each of those
  resources gets a fresh id, uuid5(seed, c, old id), and every string that names one of them
  (references, `urn:uuid:` values, identifiers equal to the id) is rewritten to match.
- All dates of a clone move back by the same number of days (0..MAX_SHIFT_DAYS, from seed and
  c), birthDate included: intervals and ages are kept, and nothing lands after the source's
  latest date. `meta` is kept as is: it says when a server stored the resource, not when care
  happened. Free text (narrative, attachments) is copied unchanged.
- Reference data (SHARED_TYPES) is written once per site, unchanged, so conditional references
  such as `Practitioner?identifier=...|123` and literal ones keep resolving in every site.
- Bundles as input: their `urn:uuid:` references become `Type/id`, as in a Bulk Data export.

Speed: each source resource is parsed once and cut into a template around the values a clone
changes; a clone is then bytes joined around fresh ids and shifted dates, without any JSON
parsing. Batches of clones are rendered in a process pool and written in clone order, so the
output is byte-identical for a seed whatever the number of workers.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import os
import re
import sys
import time
import uuid
from collections import Counter, deque
from collections.abc import Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from multiprocessing import get_context
from pathlib import Path
from typing import IO, Any

import orjson

from omopflow.errors import InputError, OmopflowError, UsageError

# Reference data a site's patients share: written once per site, never cloned.
SHARED_TYPES = frozenset(
    {
        "Organization",
        "Location",
        "Practitioner",
        "PractitionerRole",
        "Medication",
        "HealthcareService",
        "Endpoint",
    }
)
# Clones move back up to ten years, never forward: no date passes the source's latest one.
MAX_SHIFT_DAYS = 3652
# Clones per worker task. Fixed, not derived from --workers: gzip members and file splits fall
# on batch boundaries, and the output must not depend on the number of workers.
CLONES_PER_BATCH = 8
DEFAULT_MAX_FILE_BYTES = 256 * 2**20
GZIP_LEVEL = 6
# Strings under these keys are codes, identifiers or text: never dates, even if they look so.
NOT_DATE_KEYS = frozenset(
    {
        "value",
        "code",
        "display",
        "text",
        "div",
        "data",
        "valueString",
        "valueCode",
        "id",
        "reference",
        "url",
        "system",
        "version",
    }
)
# FHIR date, dateTime and instant with a day: partial dates (YYYY, YYYY-MM) are left alone.
FHIR_DATE = re.compile(r"\d{4}-\d{2}-\d{2}(T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2}))?")
# Placeholders marking a slot inside a template's JSON: private-use characters that orjson
# writes verbatim and that real data does not contain (checked when a template is built).
SLOT_OPEN, SLOT_CLOSE = "\ue000", "\ue001"
SLOT_MARK = re.compile(f"{SLOT_OPEN}(\\d+){SLOT_CLOSE}".encode())
ID_SLOT, DATE_SLOT = 0, 1
BULK_LOG_PREFIX = "log."  # the SMART bulk exporter's event log, not FHIR data
MANIFEST = "manifest.json"

Slot = tuple[int, str]  # (ID_SLOT, source id) or (DATE_SLOT, source date)


@dataclass(frozen=True)
class Template:
    """A source resource as compact JSON with a %s for each value that differs per clone."""

    pattern: bytes  # filled with `pattern % values`, so a literal % is written %%
    slots: tuple[Slot, ...]


@dataclass
class Compartment:
    """One source patient's resources, and the distinct values its clones change."""

    values: list[Slot] = field(default_factory=list)
    # resource type -> (pattern, positions in `values` of the pattern's %s, in order)
    resources: dict[str, list[tuple[bytes, tuple[int, ...]]]] = field(default_factory=dict)
    _positions: dict[Slot, int] = field(default_factory=dict)

    def add(self, resource_type: str, template: Template) -> None:
        positions = tuple(self._position(slot) for slot in template.slots)
        self.resources.setdefault(resource_type, []).append((template.pattern, positions))

    def _position(self, slot: Slot) -> int:
        if slot not in self._positions:
            self._positions[slot] = len(self.values)
            self.values.append(slot)
        return self._positions[slot]


@dataclass
class Source:
    """The input, ready to clone: one compartment per patient plus the shared reference data."""

    patients: list[Compartment]
    shared: dict[str, list[bytes]]  # resource type -> compact NDJSON lines
    transaction_time: str
    skipped: Counter[str] = field(default_factory=Counter)


# ---------------------------------------------------------------------------------------------
# Reading the source


def _parse(data: bytes, origin: str) -> Any:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as error:
        raise InputError(f"{origin}: not valid JSON ({error})") from None


def _ndjson_files(input_dir: Path) -> list[Path]:
    return sorted(
        path
        for path in input_dir.iterdir()
        if path.name.endswith((".ndjson", ".ndjson.gz"))
        and not path.name.startswith(BULK_LOG_PREFIX)
    )


def _bundle_files(input_dir: Path) -> list[Path]:
    return sorted(
        path for path in input_dir.iterdir() if path.suffix == ".json" and path.name != MANIFEST
    )


def _read_resources(input_dir: Path) -> Iterator[tuple[str, Any]]:
    """Every resource of the input (NDJSON lines, then Bundle entries) with its origin."""
    for path in _ndjson_files(input_dir):
        with gzip.open(path, "rb") if path.suffix == ".gz" else path.open("rb") as lines:
            for number, line in enumerate(lines, 1):
                if line.strip():
                    origin = f"{path.name}:{number}"
                    yield origin, _parse(line, origin)
    for path in _bundle_files(input_dir):
        bundle = _parse(path.read_bytes(), path.name)
        if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
            raise InputError(f"{path.name}: a .json input must be a FHIR Bundle")
        for number, entry in enumerate(bundle.get("entry") or [], 1):
            resource = entry.get("resource") if isinstance(entry, dict) else None
            yield f"{path.name}#entry{number}", resource


def _unusable(resource: Any) -> str | None:
    """Why a resource cannot be cloned, or None when it can."""
    if not isinstance(resource, dict):
        return "not a resource (e.g. a Bundle entry without one)"
    if not isinstance(resource.get("resourceType"), str):
        return "resource without resourceType"
    if not isinstance(resource.get("id"), str) or not resource["id"]:
        return f"{resource['resourceType']} without id"
    return None


@dataclass
class _SourceIndex:
    """First pass over the input: which ids exist, which are patients, which get cloned."""

    id_types: dict[str, str] = field(default_factory=dict)
    patient_ids: set[str] = field(default_factory=set)
    cloned_ids: set[str] = field(default_factory=set)


def _index(input_dir: Path) -> _SourceIndex:
    index = _SourceIndex()
    for _origin, resource in _read_resources(input_dir):
        if _unusable(resource) is None:
            resource_type, resource_id = resource["resourceType"], resource["id"]
            index.id_types[resource_id] = resource_type
            if resource_type == "Patient":
                index.patient_ids.add(resource_id)
            if resource_type not in SHARED_TYPES:
                index.cloned_ids.add(resource_id)
    return index


def _as_utc(text: str) -> datetime | None:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


class _TemplateBuilder:
    """Cuts resources into templates; notes each resource's patient and the latest date."""

    def __init__(self, index: _SourceIndex) -> None:
        self._index = index
        self._slots: list[Slot] = []
        self._owner: str | None = None
        self.latest: datetime | None = None

    def build(self, resource: dict[str, Any]) -> tuple[Template, str | None]:
        """The resource's template and the patient it belongs to (None: no patient)."""
        self._slots = []
        self._owner = resource["id"] if resource["resourceType"] == "Patient" else None
        body = {
            key: value if key == "meta" else self._visit(value, key)
            for key, value in resource.items()
        }
        parts = SLOT_MARK.split(orjson.dumps(body))
        numbers = parts[1::2]
        if len(numbers) != len(self._slots):
            raise InputError(
                f"{resource['resourceType']}/{resource['id']} contains U+E000/U+E001, "
                "which the generator uses as placeholders"
            )
        slots = tuple(self._slots[int(number)] for number in numbers)
        pattern = b"%s".join(segment.replace(b"%", b"%%") for segment in parts[0::2])
        return Template(pattern, slots), self._owner

    def _visit(self, node: Any, key: str) -> Any:
        if isinstance(node, dict):
            return {child_key: self._visit(child, child_key) for child_key, child in node.items()}
        if isinstance(node, list):
            return [self._visit(item, key) for item in node]
        if isinstance(node, str):
            return self._rewrite(node, key)
        return node

    def _slot(self, kind: int, text: str) -> str:
        self._slots.append((kind, text))
        return f"{SLOT_OPEN}{len(self._slots) - 1}{SLOT_CLOSE}"

    def _rewrite(self, text: str, key: str) -> str:
        cloned = self._index.cloned_ids
        if key == "reference":
            return self._rewrite_reference(text)
        if text in cloned:  # e.g. an identifier whose value is the resource id
            return self._slot(ID_SLOT, text)
        if text.startswith("urn:uuid:") and text[9:] in cloned:
            return "urn:uuid:" + self._slot(ID_SLOT, text[9:])
        if key not in NOT_DATE_KEYS and FHIR_DATE.fullmatch(text):
            self._note_date(text)
            return self._slot(DATE_SLOT, text)
        return text

    def _rewrite_reference(self, reference: str) -> str:
        # Outside a Bundle, urn:uuid: means nothing: a Bulk Data export refers by Type/id.
        target = reference.removeprefix("urn:uuid:")
        if target != reference and target in self._index.id_types:
            reference = f"{self._index.id_types[target]}/{target}"
        segments = reference.split("/")  # Type/id, Type/id/_history/v or an absolute URL
        for position, segment in enumerate(segments):
            if self._owner is None and segment in self._index.patient_ids:
                self._owner = segment
            if segment in self._index.cloned_ids:
                segments[position] = self._slot(ID_SLOT, segment)
        return "/".join(segments)

    def _note_date(self, text: str) -> None:
        moment = _as_utc(text)
        if moment is not None and (self.latest is None or moment > self.latest):
            self.latest = moment


def _transaction_time(input_dir: Path, latest: datetime | None) -> str:
    """The source export's transactionTime (manifest, then exporter log), else its latest date."""
    manifest = input_dir / MANIFEST
    if manifest.is_file():
        found = _parse(manifest.read_bytes(), manifest.name).get("transactionTime")
        if isinstance(found, str):
            return found
    log = input_dir / "log.ndjson"
    if log.is_file():
        for number, line in enumerate(log.read_bytes().splitlines(), 1):
            event = _parse(line, f"{log.name}:{number}") if line.strip() else {}
            if event.get("eventId") == "status_complete":
                return str(event["eventDetail"]["transactionTime"])
    moment = latest or datetime(1970, 1, 1, tzinfo=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _unchanged(template: Template) -> bytes:
    """A template filled with its source values (reference data is not cloned)."""
    return template.pattern % tuple(text.encode() for _kind, text in template.slots)


def load_source(input_dir: Path) -> Source:
    """Read a Bulk Data NDJSON folder and/or a folder of Bundles, ready to clone."""
    if not input_dir.is_dir():
        raise UsageError(f"--input {input_dir}: not a folder")
    index = _index(input_dir)
    if not index.patient_ids:
        raise InputError(f"{input_dir}: no Patient resources to clone")
    builder = _TemplateBuilder(index)
    compartments = {patient: Compartment() for patient in sorted(index.patient_ids)}
    shared: dict[str, list[bytes]] = {}
    seen: set[tuple[str, str]] = set()
    skipped: Counter[str] = Counter()
    for _origin, resource in _read_resources(input_dir):
        reason = _unusable(resource)
        key = (resource["resourceType"], resource["id"]) if reason is None else None
        if key in seen:
            # Bundles repeat their reference data; a repeated clinical resource is a duplicate.
            reason = f"repeated {key[0]} (first one kept)" if key else reason
        if reason is not None:
            skipped[reason] += 1
            continue
        assert key is not None
        seen.add(key)
        template, owner = builder.build(resource)
        if key[0] in SHARED_TYPES:
            shared.setdefault(key[0], []).append(_unchanged(template))
        elif owner is None:
            skipped[f"{key[0]} without a Patient reference"] += 1
        else:
            compartments[owner].add(key[0], template)
    transaction_time = _transaction_time(input_dir, builder.latest)
    return Source(list(compartments.values()), shared, transaction_time, skipped)


# ---------------------------------------------------------------------------------------------
# Making clones


def _namespace(seed: int) -> bytes:
    return uuid.uuid5(
        uuid.NAMESPACE_URL, f"https://omopflow.invalid/benchmarks/generate/{seed}"
    ).bytes


def _uuid5(namespace: bytes, name: str) -> str:
    # uuid.uuid5 without building a UUID object: a clone needs hundreds of ids.
    digest = bytearray(hashlib.sha1(namespace + name.encode()).digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x50  # version 5
    digest[8] = (digest[8] & 0x3F) | 0x80  # RFC 4122 variant
    text = digest.hex()
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"


def clone_id(seed: int, clone: int, source_id: str) -> str:
    """The id that clone `clone` gives to the copy of resource `source_id`: a uuid5."""
    return _uuid5(_namespace(seed), f"{clone}:{source_id}")


def shift_days(seed: int, clone: int) -> int:
    """Days (<= 0) added to every date of clone `clone`."""
    digest = hashlib.sha256(f"{seed}:{clone}".encode()).digest()
    return -(int.from_bytes(digest[:8], "big") % (MAX_SHIFT_DAYS + 1))


def shift_date(text: str, days: int) -> str:
    """A FHIR date, dateTime or instant moved by whole days: time and UTC offset are kept."""
    return (date.fromisoformat(text[:10]) + timedelta(days=days)).isoformat() + text[10:]


def _render_clone(compartment: Compartment, clone: int, seed: int) -> dict[str, list[bytes]]:
    """Clone `clone` of a patient as NDJSON lines by resource type."""
    namespace, days, prefix = _namespace(seed), shift_days(seed, clone), f"{clone}:"
    values = [
        (_uuid5(namespace, prefix + text) if kind == ID_SLOT else shift_date(text, days)).encode()
        for kind, text in compartment.values
    ]
    value = values.__getitem__
    return {
        resource_type: [pattern % tuple(map(value, positions)) for pattern, positions in lines]
        for resource_type, lines in compartment.resources.items()
    }


def _encoded(lines: list[bytes], compress: bool) -> bytes:
    data = b"\n".join(lines) + b"\n"
    # mtime=0: a gzip header with the current time would break byte-identical output.
    return gzip.compress(data, GZIP_LEVEL, mtime=0) if compress else data


# A worker's copy of the source patients and the seed, set once by _start_worker.
_WORKER_STATE: dict[str, Any] = {}


def _start_worker(patients: list[Compartment], seed: int) -> None:
    _WORKER_STATE.update(patients=patients, seed=seed)


def _render_batch(first: int, stop: int, compress: bool) -> list[tuple[str, bytes, int]]:
    """Clones first..stop-1 as (resource type, NDJSON bytes, line count), by type."""
    patients, seed = _WORKER_STATE["patients"], _WORKER_STATE["seed"]
    by_type: dict[str, list[bytes]] = {}
    for clone in range(first, stop):
        for resource_type, lines in _render_clone(
            patients[clone % len(patients)], clone, seed
        ).items():
            by_type.setdefault(resource_type, []).extend(lines)
    return [
        (name, _encoded(lines, compress), len(lines)) for name, lines in sorted(by_type.items())
    ]


Batch = tuple[int, int, int]  # (site number, first clone, clone after the last)


def _batches(patients: int, sites: int) -> list[Batch]:
    """Contiguous runs of clones per site, each site getting patients/sites of them."""
    batches = []
    for site in range(sites):
        first, stop = site * patients // sites, (site + 1) * patients // sites
        for start in range(first, stop, CLONES_PER_BATCH):
            batches.append((site, start, min(start + CLONES_PER_BATCH, stop)))
    return batches


def _rendered(
    source: Source, batches: list[Batch], seed: int, compress: bool, workers: int
) -> Iterator[tuple[int, list[tuple[str, bytes, int]]]]:
    """Rendered batches in batch order, from this process or a pool of worker processes."""
    if workers == 1:
        _start_worker(source.patients, seed)
        for site, first, stop in batches:
            yield site, _render_batch(first, stop, compress)
        return
    # spawn, not fork: the caller may hold threads (Spark's py4j, pytest) that fork would copy.
    with ProcessPoolExecutor(
        workers,
        mp_context=get_context("spawn"),
        initializer=_start_worker,
        initargs=(source.patients, seed),
    ) as pool:
        pending: deque[tuple[int, Future[list[tuple[str, bytes, int]]]]] = deque()
        for site, first, stop in batches:
            pending.append((site, pool.submit(_render_batch, first, stop, compress)))
            # A bounded window of batches in flight keeps memory flat however large N is.
            if len(pending) > 2 * workers:
                done_site, future = pending.popleft()
                yield done_site, future.result()
        while pending:
            done_site, future = pending.popleft()
            yield done_site, future.result()


# ---------------------------------------------------------------------------------------------
# Writing a site


@dataclass
class _OpenFile:
    name: str
    handle: IO[bytes]
    size: int = 0
    count: int = 0


class _SiteWriter:
    """One site's NDJSON files: one per resource type, a next one past max_file_bytes."""

    def __init__(self, folder: Path, compress: bool, max_file_bytes: int) -> None:
        folder.mkdir(parents=True)
        self.folder = folder
        self._suffix = ".ndjson.gz" if compress else ".ndjson"
        self._max_file_bytes = max_file_bytes
        self._open: dict[str, _OpenFile] = {}
        self._numbers: Counter[str] = Counter()
        self.outputs: list[dict[str, Any]] = []

    def write(self, resource_type: str, data: bytes, count: int) -> None:
        current = self._open.get(resource_type)
        if current is not None and current.size + len(data) > self._max_file_bytes:
            self._close(resource_type)
            current = None
        if current is None:
            name = f"{resource_type}.{self._numbers[resource_type]:03d}{self._suffix}"
            self._numbers[resource_type] += 1
            current = _OpenFile(name, (self.folder / name).open("wb"))
            self._open[resource_type] = current
        current.handle.write(data)
        current.size += len(data)
        current.count += count

    def _close(self, resource_type: str) -> None:
        done = self._open.pop(resource_type)
        done.handle.close()
        self.outputs.append({"type": resource_type, "url": done.name, "count": done.count})

    def close(self) -> list[dict[str, Any]]:
        """Close every file; the manifest's output list, ordered by file name."""
        for resource_type in list(self._open):
            self._close(resource_type)
        return sorted(self.outputs, key=lambda output: str(output["url"]))


def _write_manifest(
    writer: _SiteWriter, source: Source, site: str, seed: int, clones: range
) -> None:
    manifest = {
        "transactionTime": source.transaction_time,
        "request": f"https://{site}.benchmark.invalid/fhir/$export",
        "requiresAccessToken": False,
        # Relative file names: the export is a folder to drop or copy, not a server to call.
        "output": writer.close(),
        "error": [],
        "extension": {"omopflow-benchmark": {"seed": seed, "clones": [clones.start, clones.stop]}},
    }
    (writer.folder / MANIFEST).write_bytes(orjson.dumps(manifest, option=orjson.OPT_INDENT_2))


def site_name(site: int) -> str:
    """Folder name of site number `site` (0-based)."""
    return f"site-{site + 1:02d}"


def _check_options(
    out_dir: Path, patients: int, sites: int, workers: int, max_file_bytes: int
) -> None:
    if patients < 1:
        raise UsageError("--patients must be at least 1")
    if not 1 <= sites <= patients:
        raise UsageError("--sites must be between 1 and --patients")
    if workers < 1:
        raise UsageError("--workers must be at least 1")
    if max_file_bytes < 1:
        raise UsageError("--max-file-mb must be positive")
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise UsageError(f"--out {out_dir}: exists and is not an empty folder")


def generate(
    input_dir: Path,
    out_dir: Path,
    patients: int,
    *,
    sites: int = 1,
    seed: int = 0,
    compress: bool = False,
    workers: int = 1,
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
) -> dict[str, Any]:
    """Write `patients` clones of the input as `sites` Bulk Data exports under out_dir/site-NN.

    Returns a summary: resources written per type, bytes on disk, seconds, skipped inputs.
    """
    _check_options(out_dir, patients, sites, workers, max_file_bytes)
    started = time.perf_counter()
    source = load_source(input_dir)
    writers = [
        _SiteWriter(out_dir / site_name(site), compress, max_file_bytes) for site in range(sites)
    ]
    for writer in writers:
        for resource_type, lines in sorted(source.shared.items()):
            writer.write(resource_type, _encoded(lines, compress), len(lines))
    for site, rendered in _rendered(source, _batches(patients, sites), seed, compress, workers):
        for resource_type, data, count in rendered:
            writers[site].write(resource_type, data, count)
    resources: Counter[str] = Counter()
    for site, writer in enumerate(writers):
        clones = range(site * patients // sites, (site + 1) * patients // sites)
        _write_manifest(writer, source, site_name(site), seed, clones)
        for output in writer.outputs:
            resources[output["type"]] += output["count"]
    return {
        "out": str(out_dir),
        "patients": patients,
        "sites": sites,
        "seed": seed,
        "gzip": compress,
        "workers": workers,
        "seconds": round(time.perf_counter() - started, 3),
        "bytes": sum(path.stat().st_size for path in out_dir.rglob("*") if path.is_file()),
        "resources": dict(sorted(resources.items())),
        "skipped": dict(sorted(source.skipped.items())),
    }


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.generate", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--input", type=Path, required=True, help="Bulk Data NDJSON or Bundles")
    parser.add_argument("--patients", type=int, required=True, help="patients to write in all")
    parser.add_argument("--out", type=Path, required=True, help="new or empty output folder")
    parser.add_argument("--gzip", action="store_true", help="write .ndjson.gz files")
    parser.add_argument("--sites", type=int, default=1, help="exports to split patients into")
    parser.add_argument("--seed", type=int, default=0, help="ids and date shifts follow it")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--max-file-mb", type=float, default=DEFAULT_MAX_FILE_BYTES / 2**20)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """CLI entry point: prints the summary as JSON; a one-line reason and non-zero on error."""
    args = _arguments(argv)
    try:
        summary = generate(
            args.input,
            args.out,
            args.patients,
            sites=args.sites,
            seed=args.seed,
            compress=args.gzip,
            workers=args.workers,
            max_file_bytes=int(args.max_file_mb * 2**20),
        )
    except OmopflowError as error:
        print(f"benchmarks.generate: {error}", file=sys.stderr)
        return error.exit_code
    sys.stdout.write(orjson.dumps(summary, option=orjson.OPT_INDENT_2).decode() + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
