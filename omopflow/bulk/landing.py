"""Land one bulk export atomically in `landing/<site>/<export id>/`.

Layout of a landed export:

    landing/<site>/_state.json            last landed transactionTime (the next `_since`)
    landing/<site>/<export id>/
        Patient.000.ndjson[.gz] ...       the manifest's `output` files
        deleted/Bundle.000.ndjson         the manifest's `deleted` files (transaction Bundles)
        error/OperationOutcome.000.ndjson the manifest's `error` files
        manifest.json                     the server's manifest, urls made local, plus counts
        _COMPLETE                         written last: transactionTime, counts, sha256s

Files are downloaded into a hidden sibling folder (`.partial-...`); only when everything is
on disk and `_COMPLETE` is written is the folder renamed into place, in one `rename`. So a
folder named like an export is always complete, and `completed_exports` also checks for
`_COMPLETE` so a hand-made folder is never staged half-written.

The export id is the transactionTime in compact UTC form, so folders sort by time and a
replay of the same export lands in the same place (and is not downloaded twice).
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from omopflow.bulk.auth import ConnectionGetter, auth_for_site
from omopflow.bulk.client import BulkClient, DownloadedFile, ExportResult, ManifestFile
from omopflow.bulk.errors import BulkExportError, FileExpiredError
from omopflow.sites import KIND_BULK, Site

log = logging.getLogger(__name__)

COMPLETE_MARKER = "_COMPLETE"
MANIFEST_NAME = "manifest.json"
STATE_NAME = "_state.json"
PARTIAL_PREFIX = ".partial-"
ERROR_FOLDER = "error"
DELETED_FOLDER = "deleted"
SAFE_TYPE = re.compile(r"^[A-Za-z]{1,64}$")


def land_export(
    client: BulkClient, site: Site, landing_root: str | Path, max_restarts: int = 2
) -> Path:
    """Run the site's export (incremental from the last one) and land it; return its folder.

    A file that expired (410) starts the whole export again, at most `max_restarts` times.
    """
    if site.kind != KIND_BULK or site.level is None:
        raise BulkExportError(f"site '{site.id}' is not a bulk site (kind {site.kind!r})")
    site_dir = Path(landing_root) / site.id
    site_dir.mkdir(parents=True, exist_ok=True)
    since = read_state(site_dir).get("transactionTime")
    for attempt in range(max_restarts + 1):
        result = client.export(site.level, site.group_id, site.types or None, since, site.method)
        try:
            export_dir = _land(client, result, site_dir)
        except FileExpiredError as exc:
            log.warning("site %s: %s; restarting the export (%d)", site.id, exc, attempt + 1)
            continue
        _write_state(site_dir, result.transaction_time)
        _release_server_files(client, result.status_url)
        return export_dir
    raise BulkExportError(
        f"site '{site.id}': export files expired {max_restarts + 1} times in a row; gave up"
    )


def client_for_site(
    site: Site, connection_getter: ConnectionGetter | None = None, **options: Any
) -> BulkClient:
    """A client for a bulk site, authorised as the site's config says."""
    if site.kind != KIND_BULK or site.base_url is None:
        raise BulkExportError(f"site '{site.id}' is not a bulk site (kind {site.kind!r})")
    return BulkClient(site.base_url, auth=auth_for_site(site, connection_getter), **options)


def remove_stale_partials(landing_site_dir: str | Path, older_than_s: float = 24 * 3600) -> int:
    """Delete `.partial-*` folders that a killed landing left behind; return how many.

    Only old ones: a younger folder may belong to a landing still running.
    """
    site_dir = Path(landing_site_dir)
    if not site_dir.is_dir():
        return 0
    cutoff = time.time() - older_than_s
    stale = [
        child
        for child in site_dir.iterdir()
        if child.is_dir()
        and child.name.startswith(PARTIAL_PREFIX)
        and child.stat().st_mtime < cutoff
    ]
    for folder in stale:
        log.info("removing %s, left by an interrupted landing", folder)
        shutil.rmtree(folder, ignore_errors=True)
    return len(stale)


def completed_exports(landing_site_dir: str | Path) -> list[Path]:
    """The site's landed exports that carry `_COMPLETE`, oldest first."""
    site_dir = Path(landing_site_dir)
    if not site_dir.is_dir():
        return []
    return sorted(
        child
        for child in site_dir.iterdir()
        if child.is_dir()
        and not child.name.startswith((".", "_"))
        and (child / COMPLETE_MARKER).is_file()
    )


def export_id(transaction_time: str) -> str:
    """`2024-08-06T14:12:57-04:00` -> `20240806T181257Z` (UTC, sortable, path-safe).

    Fractions of a second are kept as `_ffffff`, which sorts after the whole second.
    """
    try:
        instant = datetime.fromisoformat(transaction_time)
    except ValueError as exc:
        raise BulkExportError(f"transactionTime is not an instant: {transaction_time!r}") from exc
    if instant.tzinfo is None:
        raise BulkExportError(f"transactionTime has no time zone: {transaction_time!r}")
    instant = instant.astimezone(UTC)
    fraction = f"_{instant.microsecond:06d}" if instant.microsecond else ""
    return instant.strftime("%Y%m%dT%H%M%S") + fraction + "Z"


def read_state(site_dir: Path) -> dict[str, Any]:
    path = site_dir / STATE_NAME
    if not path.is_file():
        return {}
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise BulkExportError(f"{path} is not valid JSON ({exc}); fix or delete it") from exc
    return state if isinstance(state, dict) else {}


def read_complete(export_dir: Path) -> dict[str, Any]:
    result: dict[str, Any] = json.loads((export_dir / COMPLETE_MARKER).read_text("utf-8"))
    return result


def _land(client: BulkClient, result: ExportResult, site_dir: Path) -> Path:
    export_dir = site_dir / export_id(result.transaction_time)
    if (export_dir / COMPLETE_MARKER).is_file():
        log.info("%s already landed: nothing to download", export_dir)
        return export_dir
    partial = site_dir / f"{PARTIAL_PREFIX}{export_dir.name}-{uuid.uuid4().hex[:8]}"
    partial.mkdir()
    try:
        manifest, files = _download_all(client, result, partial)
        _write_json(partial / MANIFEST_NAME, manifest)
        _write_json(partial / COMPLETE_MARKER, _complete_record(result, export_dir.name, files))
        _move_into_place(partial, export_dir)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    log.info("landed %s (%d files)", export_dir, len(files))
    return export_dir


def _move_into_place(partial: Path, export_dir: Path) -> None:
    if export_dir.exists() and not (export_dir / COMPLETE_MARKER).is_file():
        # Only a person can have made it (our rename is atomic): it is not ours to keep.
        log.warning("replacing %s, which has no %s", export_dir, COMPLETE_MARKER)
        shutil.rmtree(export_dir)
    try:
        partial.rename(export_dir)
    except OSError:
        # A concurrent landing of the same export won the race: its copy is as good as ours.
        if not (export_dir / COMPLETE_MARKER).is_file():
            raise
        shutil.rmtree(partial, ignore_errors=True)


def _download_all(
    client: BulkClient, result: ExportResult, folder: Path
) -> tuple[dict[str, Any], dict[str, DownloadedFile]]:
    """Download every manifest file; return the local manifest and the files by name."""
    files: dict[str, DownloadedFile] = {}
    local: dict[str, list[dict[str, Any]]] = {}
    for key, subfolder in (("output", ""), ("deleted", DELETED_FOLDER), ("error", ERROR_FOLDER)):
        local[key] = []
        target = folder / subfolder
        used: dict[str, int] = {}
        for entry in getattr(result, key):
            target.mkdir(exist_ok=True)
            name = _local_name(entry, used)
            saved = client.download(entry.url, target / name, result.requires_access_token)
            relative = saved.path.relative_to(folder).as_posix()
            files[relative] = saved
            local[key].append(_local_entry(entry, relative, saved))
    error_lines = sum(item["count"] for item in local["error"])
    if error_lines:
        log.warning("the server reported %d OperationOutcome issue lines", error_lines)
    manifest = {
        "transactionTime": result.transaction_time,
        "request": result.request,
        "requiresAccessToken": result.requires_access_token,
        **local,
        "counts": _counts(local),
    }
    return manifest, files


def _local_name(entry: ManifestFile, used: dict[str, int]) -> str:
    resource_type = entry.type if SAFE_TYPE.match(entry.type) else "Unknown"
    number = used.get(resource_type, 0)
    used[resource_type] = number + 1
    return f"{resource_type}.{number:03d}.ndjson"


def _local_entry(entry: ManifestFile, relative: str, saved: DownloadedFile) -> dict[str, Any]:
    if entry.count is not None and entry.count != saved.lines:
        log.warning("%s: manifest count %d, file has %d lines", entry.url, entry.count, saved.lines)
    return {"type": entry.type, "url": relative, "count": saved.lines, "source_url": entry.url}


def _counts(local: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    per_type: dict[str, int] = {}
    for item in local["output"]:
        per_type[item["type"]] = per_type.get(item["type"], 0) + item["count"]
    return {
        "output": dict(sorted(per_type.items())),
        "output_lines": sum(per_type.values()),
        "deleted_lines": sum(item["count"] for item in local["deleted"]),
        "error_lines": sum(item["count"] for item in local["error"]),
        "files": sum(len(items) for items in local.values()),
    }


def _complete_record(
    result: ExportResult, name: str, files: dict[str, DownloadedFile]
) -> dict[str, Any]:
    return {
        "exportId": name,
        "transactionTime": result.transaction_time,
        "files": {
            relative: {"sha256": saved.sha256, "bytes": saved.bytes, "lines": saved.lines}
            for relative, saved in sorted(files.items())
        },
        "counts": {
            "files": len(files),
            "lines": sum(saved.lines for saved in files.values()),
            "bytes": sum(saved.bytes for saved in files.values()),
        },
    }


def _write_state(site_dir: Path, transaction_time: str) -> None:
    state = {"transactionTime": transaction_time, "exportId": export_id(transaction_time)}
    _write_json(site_dir / STATE_NAME, state)


def _write_json(path: Path, content: dict[str, Any]) -> None:
    """Write via a temporary file and rename, so a reader never sees half a file."""
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}")
    with temporary.open("w", encoding="utf-8") as out:
        json.dump(content, out, indent=2, sort_keys=True)
        out.write("\n")
        out.flush()
        os.fsync(out.fileno())
    os.replace(temporary, path)


def _release_server_files(client: BulkClient, status_url: str) -> None:
    # The spec lets a client DELETE a finished export to say it has its files.
    try:
        client.cancel(status_url)
    except BulkExportError as exc:
        log.info("the server did not accept the clean-up DELETE: %s", exc)
