"""Land one bulk export atomically in `landing/<site>/<export id>/`.

Layout of a landed export:

    landing/<site>/_state.json            last landed transactionTime (the next `_since`),
                                          and the export in flight, if any (`pending`)
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

A killed run is resumed, not restarted: the status URL is recorded in `_state.json` right
after the kick-off, so the next run polls it instead of asking the server for a new export,
and the partial folder's name is recorded before the downloads start, with a journal of the
files fully downloaded into it. The next run reuses a journalled file only if its size and
sha256 still match; anything else in the folder is downloaded again or deleted.
"""

from __future__ import annotations

import hashlib
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
JOURNAL_NAME = "_downloads.ndjson"  # in a partial folder only; never landed
PARTIAL_PREFIX = ".partial-"
ERROR_FOLDER = "error"
DELETED_FOLDER = "deleted"
SAFE_TYPE = re.compile(r"^[A-Za-z]{1,64}$")


def land_export(
    client: BulkClient, site: Site, landing_root: str | Path, max_restarts: int = 2
) -> Path:
    """Run the site's export (incremental from the last one) and land it; return its folder.

    An export that a killed run left pending in `_state.json` is resumed (its status URL
    polled again) rather than kicked off anew; if the server no longer knows it or answers
    an error, it is forgotten and a new export starts. A file that expired (410) starts the
    whole export again, at most `max_restarts` times.
    """
    if site.kind != KIND_BULK or site.level is None:
        raise BulkExportError(f"site '{site.id}' is not a bulk site (kind {site.kind!r})")
    site_dir = Path(landing_root) / site.id
    site_dir.mkdir(parents=True, exist_ok=True)
    state = read_state(site_dir)
    since = state.get("transactionTime")
    request = {"export_url": client.export_url(site.level, site.group_id), "types": [*site.types]}
    pending = _pending_to_resume(client, site_dir, state, request)
    for attempt in range(max_restarts + 1):
        result = _resume(client, site_dir, since, pending) if pending is not None else None
        if result is None or pending is None:
            status_url = client.kick_off(
                site.level, site.group_id, site.types or None, since, site.method
            )
            # Recorded before the first poll: a run killed from here on is resumed.
            pending = {"status_url": status_url, "since": since, "kicked_off_at": _utc_now()}
            pending.update(request)
            _write_state(site_dir, since, pending)
            result = _wait(client, site_dir, since, status_url)
        try:
            export_dir = _land(client, result, site_dir, since, pending)
        except FileExpiredError as exc:
            log.warning("site %s: %s; restarting the export (%d)", site.id, exc, attempt + 1)
            _forget(site_dir, since, pending)
            pending = None
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

    Only old ones: a younger folder may belong to a landing still running. The folder of
    the site's pending export is kept whatever its age: the next landing resumes into it.
    """
    site_dir = Path(landing_site_dir)
    if not site_dir.is_dir():
        return 0
    cutoff = time.time() - older_than_s
    in_use = _pending_partial(read_state(site_dir).get("pending"))
    stale = [
        child
        for child in site_dir.iterdir()
        if child.is_dir()
        and child.name.startswith(PARTIAL_PREFIX)
        and child.name != in_use
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


def _pending_to_resume(
    client: BulkClient, site_dir: Path, state: dict[str, Any], request: dict[str, Any]
) -> dict[str, Any] | None:
    """The pending export of `state` if it may be resumed for this request, else None."""
    pending = state.get("pending")
    if pending is None:
        return None
    since = state.get("transactionTime")
    if not isinstance(pending, dict) or not isinstance(pending.get("status_url"), str):
        log.warning("%s: unreadable pending export %r; forgetting it", site_dir, pending)
        _forget(site_dir, since, None)
        return None
    asked = {"since": pending.get("since"), **{key: pending.get(key) for key in request}}
    if asked != {"since": since, **request}:
        # The site's types or URL changed, or the state was edited: its files would not
        # be the ones this run asks for.
        log.warning(
            "%s: the pending export asked for %s, not %s; forgetting it",
            site_dir,
            asked,
            {"since": since, **request},
        )
        _release_server_files(client, pending["status_url"])
        _forget(site_dir, since, pending)
        return None
    return pending


def _resume(
    client: BulkClient, site_dir: Path, since: str | None, pending: dict[str, Any]
) -> ExportResult | None:
    """Poll the pending export; None (and forgotten) if the server cannot finish it."""
    status_url = pending["status_url"]
    log.info(
        "%s: resuming the export kicked off at %s: %s",
        site_dir,
        pending.get("kicked_off_at"),
        status_url,
    )
    try:
        return client.wait(status_url)
    except BulkExportError as exc:
        log.warning(
            "%s: cannot resume %s (%s); kicking off a new export", site_dir, status_url, exc
        )
        _forget(site_dir, since, pending)
        return None


def _wait(client: BulkClient, site_dir: Path, since: str | None, status_url: str) -> ExportResult:
    try:
        return client.wait(status_url)
    except BulkExportError:
        # The client has cancelled it (or the server lost it): nothing left to resume.
        _write_state(site_dir, since)
        raise


def _forget(site_dir: Path, since: str | None, pending: dict[str, Any] | None) -> None:
    """Drop a pending export: its partial folder, and its entry in the state file."""
    partial = _pending_partial(pending)
    if partial is not None:
        shutil.rmtree(site_dir / partial, ignore_errors=True)
    _write_state(site_dir, since)


def _pending_partial(pending: object) -> str | None:
    """The name of the pending export's partial folder, if it is a safe one."""
    name = pending.get("partial") if isinstance(pending, dict) else None
    # The state file is data, not code: accept only a plain `.partial-*` folder name.
    if isinstance(name, str) and name.startswith(PARTIAL_PREFIX) and Path(name).name == name:
        return name
    return None


def _land(
    client: BulkClient,
    result: ExportResult,
    site_dir: Path,
    since: str | None,
    pending: dict[str, Any],
) -> Path:
    export_dir = site_dir / export_id(result.transaction_time)
    if (export_dir / COMPLETE_MARKER).is_file():
        # E.g. a run killed between the rename and the state update.
        log.info("%s already landed: nothing to download", export_dir)
        if (recorded := _pending_partial(pending)) is not None:
            shutil.rmtree(site_dir / recorded, ignore_errors=True)
        return export_dir
    partial = _partial_folder(site_dir, export_dir.name, since, pending)
    try:
        manifest, files = _download_all(client, result, partial)
        _write_json(partial / MANIFEST_NAME, manifest)
        _write_json(partial / COMPLETE_MARKER, _complete_record(result, export_dir.name, files))
        _move_into_place(partial, export_dir)
    except FileExpiredError:
        # The server's files are gone: the next attempt is a new export, with new files.
        shutil.rmtree(partial, ignore_errors=True)
        raise
    # Any other failure keeps the partial folder and the pending export: the next run
    # polls the same status URL and reuses the files that check out.
    log.info("landed %s (%d files)", export_dir, len(files))
    return export_dir


def _partial_folder(site_dir: Path, name: str, since: str | None, pending: dict[str, Any]) -> Path:
    """The pending export's partial folder if a killed run left it, else a new one."""
    recorded = _pending_partial(pending)
    if recorded is not None:
        if recorded.startswith(f"{PARTIAL_PREFIX}{name}-") and (site_dir / recorded).is_dir():
            log.info("%s: resuming the downloads in %s", site_dir, recorded)
            return site_dir / recorded
        shutil.rmtree(site_dir / recorded, ignore_errors=True)
    partial = site_dir / f"{PARTIAL_PREFIX}{name}-{uuid.uuid4().hex[:8]}"
    # Recorded first, so that no partial folder exists that the state does not name.
    pending["partial"] = partial.name
    _write_state(site_dir, since, pending)
    partial.mkdir()
    return partial


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
    journal = _Journal(folder)
    for key, subfolder in (("output", ""), ("deleted", DELETED_FOLDER), ("error", ERROR_FOLDER)):
        local[key] = []
        target = folder / subfolder
        used: dict[str, int] = {}
        for entry in getattr(result, key):
            target.mkdir(exist_ok=True)
            name = (Path(subfolder) / _local_name(entry, used)).as_posix()
            saved = journal.reuse(name, entry.url)
            if saved is None:
                saved = client.download(entry.url, folder / name, result.requires_access_token)
                journal.record(name, entry.url, saved)
            relative = saved.path.relative_to(folder).as_posix()
            files[relative] = saved
            local[key].append(_local_entry(entry, relative, saved))
    _remove_strays(folder, set(files))
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


class _Journal:
    """The files fully downloaded into a partial folder, one JSON line each, appended.

    A killed run leaves it behind; the next one reuses a file only if it is on disk with
    the size and sha256 the client measured while downloading it.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.path = folder / JOURNAL_NAME
        self._records: dict[str, dict[str, Any]] = {}
        if self.path.is_file():
            for line in self.path.read_text(encoding="utf-8").splitlines():
                try:
                    record = json.loads(line)
                except ValueError:
                    continue  # the line a killed run was writing
                if isinstance(record, dict) and isinstance(record.get("name"), str):
                    self._records[record["name"]] = record

    def reuse(self, name: str, source_url: str) -> DownloadedFile | None:
        """The file saved as `name` from `source_url`, if it checks out; else None."""
        record = self._records.get(name)
        if record is None or record.get("source_url") != source_url:
            return None
        path_name, size, sha256, lines = (record.get(key) for key in _JOURNAL_FACTS)
        # The client saves `name`, or `name.gz` for a gzipped body; nothing else is ours.
        if path_name not in (name, f"{name}.gz") or not isinstance(lines, int):
            return None
        path = self.folder / str(path_name)
        if not path.is_file() or path.stat().st_size != size or _sha256(path) != sha256:
            log.info("%s does not match what was downloaded; downloading it again", path)
            return None
        log.info("%s was downloaded by an earlier run and checks out", path)
        gzipped = str(path_name).endswith(".gz")
        return DownloadedFile(path, int(size), str(sha256), lines, gzipped)

    def record(self, name: str, source_url: str, saved: DownloadedFile) -> None:
        facts = {
            "name": name,
            "source_url": source_url,
            "path": saved.path.relative_to(self.folder).as_posix(),
            "bytes": saved.bytes,
            "sha256": saved.sha256,
            "lines": saved.lines,
        }
        # One short append per file; a line torn by a kill is skipped when read back.
        with self.path.open("a", encoding="utf-8") as out:
            out.write(json.dumps(facts, sort_keys=True) + "\n")


_JOURNAL_FACTS = ("path", "bytes", "sha256", "lines")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as data:
        while chunk := data.read(1024 * 1024):
            digest.update(chunk)
    return digest.hexdigest()


def _remove_strays(folder: Path, keep: set[str]) -> None:
    """Delete every file of the partial folder but the manifest's (`keep`, relative).

    A reused folder may hold the file a killed run was writing, or the journal: only what
    the manifest lists may land.
    """
    for path in [child for child in folder.rglob("*") if child.is_file()]:
        if path.relative_to(folder).as_posix() not in keep:
            path.unlink()


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


def _write_state(
    site_dir: Path, transaction_time: str | None, pending: dict[str, Any] | None = None
) -> None:
    """The last landed transactionTime (if any) and the export in flight (if any)."""
    state: dict[str, Any] = {}
    if transaction_time is not None:
        state = {"transactionTime": transaction_time, "exportId": export_id(transaction_time)}
    if pending is not None:
        state["pending"] = pending
    if state:
        _write_json(site_dir / STATE_NAME, state)
    else:
        # Nothing landed yet and nothing in flight: as if the site had never run.
        (site_dir / STATE_NAME).unlink(missing_ok=True)


def _utc_now() -> str:
    # For people reading the state file only: nothing decides on it.
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


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
    # The spec lets a client DELETE a finished export to say it has its files (and a
    # running one to cancel it).
    try:
        client.cancel(status_url)
    except BulkExportError as exc:
        log.info("the server did not accept the clean-up DELETE: %s", exc)
