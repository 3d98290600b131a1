"""Find what an input folder holds: NDJSON files, Bundle/resource JSON files, manifests.

Problems with whole files (a manifest naming a missing file, a URL escaping the folder, an
empty file, a `.gz` that does not decompress to its end) are returned as `FileProblem`s,
which staging turns into quarantine entries: nothing is dropped without a reason. Whole-file
checks happen here, before Spark reads anything, because one unreadable gzip member fails
Spark's read of every file in the job.
"""

from __future__ import annotations

import json
import os
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from urllib.parse import urlparse

from omopflow.errors import UsageError

NDJSON_SUFFIXES = (".ndjson", ".ndjson.gz")
JSON_SUFFIXES = (".json", ".json.gz")
MANIFEST_NAMES = ("manifest.json",)
# Files of the exporter's own, not FHIR data: recorded in the ledger as skipped.
EXPORT_LOG_NAMES = ("log.ndjson", "log.ndjson.gz")
EMPTY_FILE = "empty file"
UNREADABLE_GZIP = "unreadable gzip file"
GZIP_CHUNK = 1 << 20


@dataclass(frozen=True)
class InputFile:
    path: Path
    kind: str  # "ndjson" (one resource per line) or "json" (a Bundle or one resource)
    export_id: str
    declared_type: str | None  # from the manifest or the file name; checked against each line

    @property
    def gzipped(self) -> bool:
        return self.path.name.endswith(".gz")


@dataclass(frozen=True)
class FileProblem:
    path: str
    export_id: str
    reason: str
    detail: str


@dataclass(frozen=True)
class Discovery:
    files: tuple[InputFile, ...]
    problems: tuple[FileProblem, ...]
    skipped: tuple[str, ...]  # exporter logs and manifests themselves
    error_files: tuple[str, ...] = ()  # the manifest's `error` OperationOutcome files


def type_from_file_name(name: str) -> str | None:
    """`Patient.000.ndjson` and `Patient.ndjson` declare Patient; other names declare nothing."""
    stem = name.split(".")[0]
    return stem if stem[:1].isupper() and stem.isalpha() else None


def discover(input_dir: Path) -> Discovery:
    if not input_dir.is_dir():
        raise UsageError(f"input folder not found or not a folder: {input_dir}")
    files: list[InputFile] = []
    problems: list[FileProblem] = []
    skipped: list[str] = []
    manifests = sorted(p for name in MANIFEST_NAMES for p in input_dir.rglob(name))
    covered: set[Path] = set()
    errors: list[str] = []
    for manifest in manifests:
        listed, bad, error_files = _read_manifest(manifest, input_dir)
        files.extend(listed)
        problems.extend(bad)
        errors.extend(str(p) for p in error_files)
        covered.update(f.path for f in listed)
        covered.update(error_files)
        skipped.append(str(manifest))
    for path in sorted(p for p in input_dir.rglob("*") if p.is_file()):
        if path in covered or path.name in MANIFEST_NAMES or _hidden(path, input_dir):
            # Hidden: `.partial-*` landings in progress, `_COMPLETE`, `_state.json`.
            continue
        if path.name in EXPORT_LOG_NAMES:
            skipped.append(str(path))
            continue
        kind = _kind(path.name)
        if kind is None:
            skipped.append(str(path))
            continue
        export_id = _export_id(path, input_dir)
        declared = type_from_file_name(path.name) if kind == "ndjson" else None
        files.append(InputFile(path, kind, export_id, declared))
    readable, unreadable = _check_contents(files)
    problems.extend(unreadable)
    return Discovery(tuple(readable), tuple(problems), tuple(skipped), tuple(errors))


def _check_contents(files: list[InputFile]) -> tuple[list[InputFile], list[FileProblem]]:
    """Split files into readable ones and file problems (empty, broken gzip).

    zlib releases the GIL, so checking gzip files in threads uses every core.
    """
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        verdicts = list(pool.map(file_problem, files))
    readable = [f for f, problem in zip(files, verdicts, strict=True) if problem is None]
    return readable, [problem for problem in verdicts if problem is not None]


def file_problem(file: InputFile) -> FileProblem | None:
    """Why a whole file cannot be staged, or None: empty, or a gzip that does not read."""
    if file.gzipped:
        try:
            size = _gunzipped_size(file.path)
        except (OSError, EOFError, zlib.error) as exc:
            return FileProblem(str(file.path), file.export_id, UNREADABLE_GZIP, str(exc)[:500])
    else:
        size = file.path.stat().st_size
    if size == 0:
        return FileProblem(str(file.path), file.export_id, EMPTY_FILE, "0 bytes")
    return None


def _gunzipped_size(path: Path) -> int:
    """Decompress every member to its end without keeping the output; raise if it breaks."""
    size = 0
    with open(path, "rb") as handle:
        data = handle.read(GZIP_CHUNK)
        if data[:2] != b"\x1f\x8b":
            raise EOFError("not gzip data (no gzip magic bytes)")
        inflater = zlib.decompressobj(wbits=31)
        while data:
            size += len(inflater.decompress(data))
            while inflater.eof and inflater.unused_data:  # concatenated gzip members
                rest = inflater.unused_data
                inflater = zlib.decompressobj(wbits=31)
                size += len(inflater.decompress(rest))
            data = handle.read(GZIP_CHUNK)
        if not inflater.eof:
            raise EOFError("truncated gzip file: the stream ends before its trailer")
    return size


def _hidden(path: Path, root: Path) -> bool:
    return any(part.startswith((".", "_")) for part in path.relative_to(root).parts)


def _kind(name: str) -> str | None:
    if name.endswith(NDJSON_SUFFIXES):
        return "ndjson"
    if name.endswith(JSON_SUFFIXES):
        return "json"
    return None


def _export_id(path: Path, input_dir: Path) -> str:
    parent = path.parent.relative_to(input_dir)
    return input_dir.name if str(parent) == "." else str(parent)


def _read_manifest(
    manifest: Path, input_dir: Path
) -> tuple[list[InputFile], list[FileProblem], list[Path]]:
    """Bulk Data manifest: `output` and `deleted` entries name files to stage (deleted ones
    hold Bundles of DELETE entries); `error` entries name the server's OperationOutcomes."""
    export_id = _export_id(manifest, input_dir)
    folder = manifest.parent.resolve()
    try:
        body = json.loads(manifest.read_text(encoding="utf-8"))
        lists = {name: body.get(name) or [] for name in ("output", "deleted", "error")}
        if not all(isinstance(v, list) for v in lists.values()):
            raise ValueError("'output', 'deleted' and 'error' must be lists")
    except (OSError, ValueError, AttributeError) as exc:
        problem = FileProblem(str(manifest), export_id, "unreadable manifest", str(exc)[:500])
        return [], [problem], []
    files: list[InputFile] = []
    problems: list[FileProblem] = []
    errors: list[Path] = []
    for name, entries in lists.items():
        for entry in entries:
            url = str(entry.get("url", "")) if isinstance(entry, dict) else ""
            local = _local_path(url, folder)
            if local is None:
                problems.append(
                    FileProblem(url, export_id, "manifest url outside the export folder", url[:500])
                )
            elif not local.is_file():
                problems.append(
                    FileProblem(str(local), export_id, "manifest names a missing file", url)
                )
            elif name == "error":
                errors.append(local)
            else:
                declared = "Bundle" if name == "deleted" else entry.get("type")
                declared = declared or type_from_file_name(local.name)
                files.append(InputFile(local, _kind(local.name) or "ndjson", export_id, declared))
    return files, problems, errors


def _local_path(url: str, folder: Path) -> Path | None:
    """Map a manifest URL to a file in `folder`; None if it would escape the folder.

    Remote URLs (a server's manifest copied with its files) resolve by their last segment;
    relative paths must stay inside the folder (no `..`, no absolute paths elsewhere).
    """
    parsed = urlparse(url)
    if parsed.scheme in ("http", "https"):
        name = PurePosixPath(parsed.path).name
        return folder / name if name else None
    raw = parsed.path if parsed.scheme == "file" else url
    if not raw:
        return None
    candidate = (folder / raw).resolve()
    return candidate if candidate.is_relative_to(folder) else None
